use lambda_runtime::{LambdaEvent, run, service_fn};
use runner_adapters::{Wiring, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let handler = genie::build(&Wiring::from_env().await?).await?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let handler = &handler;
        async move { Ok::<_, lambda_runtime::Error>(genie::dispatch(handler, event.payload).await?) }
    }))
    .await
}
