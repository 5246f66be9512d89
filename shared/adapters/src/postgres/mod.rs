//! Postgres: the history and query side. Connections are few (a Lambda keeps one or two).

mod frames;
mod projection;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use runner_core::{Error, Result};

pub use frames::PgFrameStore;
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

/// Applies every migration not yet applied.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await.map_err(|e| Error::dependency("postgres migrate", e))
}
