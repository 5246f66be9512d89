use runner_adapters::{Wiring, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let state = api::build(&Wiring::from_env().await?).await?;
    lambda_http::run(api::router(state)).await
}
