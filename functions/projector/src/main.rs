use lambda_runtime::{LambdaEvent, run, service_fn};
use runner_adapters::{Wiring, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let projector = projector::build(&Wiring::from_env().await?).await?;
    run(service_fn(|event: LambdaEvent<aws_lambda_events::dynamodb::Event>| {
        let projector = &projector;
        async move { Ok::<_, lambda_runtime::Error>(projector::handle(projector, event.payload).await?.0) }
    }))
    .await
}
