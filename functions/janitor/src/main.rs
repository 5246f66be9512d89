use lambda_runtime::{LambdaEvent, run, service_fn};
use runner_adapters::{Wiring, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let janitor = janitor::build(&Wiring::from_env().await).await?;
    run(service_fn(|_: LambdaEvent<serde_json::Value>| {
        let janitor = &janitor;
        async move { Ok::<_, lambda_runtime::Error>(serde_json::to_value(janitor::handle(janitor).await?)?) }
    }))
    .await
}
