use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::adapters::{PgRunProjection, postgres};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // One connection: a stream shard is processed by one invocation at a time.
    let pool = postgres::connect(&shared::config::database_url()?, 1).await?;
    let projection = PgRunProjection::new(pool);
    run(service_fn(|event: LambdaEvent<aws_lambda_events::dynamodb::Event>| {
        let projection = &projection;
        async move { Ok::<_, lambda_runtime::Error>(projector::handle(projection, event.payload).await?.0) }
    }))
    .await
}
