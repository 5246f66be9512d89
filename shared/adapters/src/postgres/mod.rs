//! Postgres: the history and query side. Connections are few (a Lambda keeps one or two).

mod frames;
pub mod iam;
mod memory;
mod projection;

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use runner_core::{Error, Result};

pub use frames::PgFrameStore;
pub use memory::PgMemoryStore;
pub use projection::PgRunProjection;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// A pool of at most `max_connections`, each acquired within 10 s or not at all.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(database_url)
        .await
        .map_err(|e| Error::dependency("postgres connect", e))
}

/// `connect`, except that a URL without a password that points at RDS (the stack's RDS Proxy)
/// authenticates with IAM: a token signed with the function's credentials, renewed in the
/// background for as long as the pool lives.
pub async fn connect_with_iam(database_url: &str, max_connections: u32, aws: &SdkConfig) -> Result<PgPool> {
    let options: PgConnectOptions =
        database_url.parse().map_err(|e| Error::Config(format!("DATABASE_URL is not a Postgres URL: {e}")))?;
    if !iam::uses_iam(&options, database_url) {
        return connect(database_url, max_connections).await;
    }
    let signed = iam_options(&options, aws).await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(signed)
        .await
        .map_err(|e| Error::dependency("postgres connect (IAM)", e))?;
    let (renewing, aws) = (pool.clone(), aws.clone());
    tokio::spawn(async move {
        while !renewing.is_closed() {
            tokio::time::sleep(iam::TOKEN_RENEWAL).await;
            match iam_options(&options, &aws).await {
                Ok(signed) => renewing.set_connect_options(signed),
                Err(err) => tracing::warn!(error = %err, "could not renew the database token; retrying"),
            }
        }
    });
    Ok(pool)
}

/// The options with a fresh IAM token as the password.
async fn iam_options(options: &PgConnectOptions, aws: &SdkConfig) -> Result<PgConnectOptions> {
    let provider = aws.credentials_provider().ok_or_else(|| Error::Config("no AWS credentials to sign with".into()))?;
    let credentials = provider.provide_credentials().await.map_err(|e| Error::dependency("AWS credentials", e))?;
    let region = aws.region().map(|r| r.as_ref().to_owned()).unwrap_or_else(|| "us-east-1".into());
    let token = iam::auth_token(
        options.get_host(),
        options.get_port(),
        options.get_username(),
        &region,
        &credentials,
        std::time::SystemTime::now(),
    )?;
    Ok(options.clone().password(&token))
}

/// Applies every migration not yet applied.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await.map_err(|e| Error::dependency("postgres migrate", e))
}
