use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{LambdaEvent, run, service_fn};
use runner_adapters::{Wiring, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let handler = websocket::build(&Wiring::from_env().await?).await?;
    run(service_fn(|event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
        let handler = &handler;
        async move { Ok::<_, lambda_runtime::Error>(websocket::handle(handler, event.payload).await) }
    }))
    .await
}
