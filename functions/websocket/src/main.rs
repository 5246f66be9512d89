use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::adapters::aws;
use shared::config::{Settings, StreamSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let sdk = aws::load_config().await;
    let handler = websocket::build(&sdk, &Settings::from_env()?, &StreamSettings::from_env()?).await?;
    run(service_fn(|event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
        let handler = &handler;
        async move { Ok::<_, lambda_runtime::Error>(websocket::handle(handler, event.payload).await) }
    }))
    .await
}
