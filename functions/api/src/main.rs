use shared::adapters::aws;
use shared::config::Settings;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let settings = Settings::from_env()?;
    let state = api::AppState::from_settings(&aws::load_config().await, &settings).await?;
    lambda_http::run(api::router(state)).await
}
