use lambda_runtime::{LambdaEvent, run, service_fn};
use runner_adapters::{Wiring, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let executor = executor::build(&Wiring::from_env().await).await?;
    run(service_fn(|event: LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| {
        let executor = &executor;
        async move { Ok::<_, lambda_runtime::Error>(executor::handle(executor, event.payload).await) }
    }))
    .await
}
