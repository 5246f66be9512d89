use lambda_runtime::{LambdaEvent, run, service_fn};
use runner_adapters::{Wiring, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    runner_adapters::harden_executor();
    let wiring = Wiring::from_env().await?;
    let executor = executor::build(&wiring).await?;
    // The same image on ECS: a long-running worker on the long-runs queue.
    if std::env::args().nth(1).as_deref() == Some("executor-worker") {
        return Ok(executor::work(executor, &wiring).await?);
    }
    run(service_fn(|event: LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| {
        let executor = &executor;
        async move { Ok::<_, lambda_runtime::Error>(executor::handle(executor, event.payload).await) }
    }))
    .await
}
