//! The ports: what use cases need from the outside world, as small traits. Adapters for AWS and
//! Postgres live in `crate::adapters`; use cases only ever see these.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::domain::{KeyHash, Owner, Run, RunId, RunStatus};

/// The remembered answer to an `Idempotency-Key`: which run it created, and a fingerprint of
/// the request so a different request under the same key is refused instead of replayed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub owner: Owner,
    pub key: String,
    pub run_id: RunId,
    pub request_fingerprint: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque; pass back to get the next page. `None` on the last page.
    pub next_cursor: Option<String>,
}

#[async_trait]
pub trait RunStore: Send + Sync {
    /// Records `record` unless its key is already taken (and unexpired); then returns the record
    /// that holds it.
    async fn claim_idempotency_key(&self, record: &IdempotencyRecord) -> Result<Option<IdempotencyRecord>>;
    /// Writes a new run, never overwriting one. `false` if the run id already exists.
    async fn create(&self, run: &Run) -> Result<bool>;
    async fn get(&self, run_id: RunId) -> Result<Option<Run>>;
    /// Replaces the run if its stored version is still `expected_version`; `Error::Conflict` if not.
    async fn update(&self, run: &Run, expected_version: u64) -> Result<()>;
    /// The owner's runs, newest first.
    async fn list(&self, owner: &Owner, filter: &RunFilter, limit: usize, cursor: Option<&str>) -> Result<Page<Run>>;
}

/// What goes on the runs queue: just enough to find the run. FIFO group = session lineage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMessage {
    pub run_id: RunId,
    pub message_group: String,
}

#[async_trait]
pub trait RunQueue: Send + Sync {
    async fn enqueue(&self, message: &RunMessage) -> Result<()>;
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// The owner of a key, if it exists and is not revoked.
    async fn owner_of(&self, key: &KeyHash) -> Result<Option<Owner>>;
    async fn register(&self, key: &KeyHash, owner: &Owner, label: &str) -> Result<()>;
}

#[async_trait]
pub trait ObjectStore: Send + Sync {
    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    async fn delete(&self, key: &str) -> Result<()>;
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
}

/// Postgres' read model of runs, fed by the projector.
#[async_trait]
pub trait RunProjection: Send + Sync {
    /// Applies this version of the run unless a newer (or the same) one is already there.
    /// Returns whether anything changed.
    async fn apply(&self, run: &Run) -> Result<bool>;
}
