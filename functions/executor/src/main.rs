use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::adapters::aws;
use shared::config::{ExecutorConfig, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let sdk = aws::load_config().await;
    let executor = executor::build(&sdk, &Settings::from_env()?, &ExecutorConfig::from_env()?).await?;
    run(service_fn(|event: LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| {
        let executor = &executor;
        async move { Ok::<_, lambda_runtime::Error>(executor::handle(executor, event.payload).await) }
    }))
    .await
}
