use lambda_runtime::{LambdaEvent, run, service_fn};
use runner_adapters::{Wiring, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let janitor = janitor::build(&Wiring::from_env().await?).await?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let janitor = &janitor;
        async move {
            let report = janitor::handle_event(janitor, &event.payload).await?;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}
