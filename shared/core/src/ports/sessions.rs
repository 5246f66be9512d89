//! Sessions: conversations that later runs continue.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Page;
use crate::Result;
use crate::domain::{Owner, Session};

/// The sessions table, written conditionally on each session's version.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Writes a new session; `false` if the id is taken.
    async fn create(&self, session: &Session) -> Result<bool>;
    /// The session with this id (or alias), if any.
    async fn get(&self, session_id: Uuid) -> Result<Option<Session>>;
    /// Replaces the session if its stored version is still `expected_version`;
    /// `Error::Conflict` if not.
    async fn update(&self, session: &Session, expected_version: u64) -> Result<()>;
    /// Removes the session record.
    async fn delete(&self, session_id: Uuid) -> Result<()>;
    /// The owner's sessions, most recently created first.
    async fn list(&self, owner: &Owner, limit: usize, cursor: Option<&str>) -> Result<Page<Session>>;
    /// Up to `limit` sessions that expired before `now` (DynamoDB's TTL is only a backstop).
    async fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Session>>;
}
