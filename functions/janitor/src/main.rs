use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::adapters::aws;
use shared::config::Settings;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let janitor = janitor::build(&aws::load_config().await, &Settings::from_env()?);
    run(service_fn(|_: LambdaEvent<serde_json::Value>| {
        let janitor = &janitor;
        async move { Ok::<_, lambda_runtime::Error>(serde_json::to_value(janitor::handle(janitor).await?)?) }
    }))
    .await
}
