use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, run, service_fn};
use runner_adapters::{Wiring, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let epics = epics::build(&Wiring::from_env().await?).await?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let epics = &epics;
        async move { Ok::<_, lambda_runtime::Error>(epics::handle(epics, event.payload).await) }
    }))
    .await
}
