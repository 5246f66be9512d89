//! Memory: what earlier runs of a repository taught, kept per owner and repository.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Result;
use crate::domain::Owner;
use crate::domain::memory::{MemoryHint, MemoryKind, MemoryStatus, NewMemory};

/// Where an entry came from: whose, which repository, and the run, epic and session behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemorySource {
    /// The owner; to anyone else the entry does not exist.
    pub owner: Owner,
    /// The repository it is about.
    pub repository_url: String,
    /// The workflow of the run it came from.
    pub workflow: Option<String>,
    /// The epic it came from.
    pub epic_id: Option<Uuid>,
    /// The run it came from.
    pub run_id: Option<Uuid>,
    /// The session of that run.
    pub session_id: Option<Uuid>,
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// Its id.
    pub memory_id: Uuid,
    /// The repository it is about.
    pub repository_url: String,
    /// What it records.
    pub kind: MemoryKind,
    /// Proposed, accepted or retired.
    pub status: MemoryStatus,
    /// The memory, for a later run.
    pub text: String,
    /// Its structured form.
    pub fields: serde_json::Value,
    /// The workflow, epic, run and session it came from.
    pub workflow: Option<String>,
    /// The epic it came from.
    pub epic_id: Option<Uuid>,
    /// The (first) run it came from.
    pub run_id: Option<Uuid>,
    /// The session of that run.
    pub session_id: Option<Uuid>,
    /// How many times it was seen (a failure's recurrences).
    pub occurrences: u32,
    /// When it was first seen.
    pub first_seen: DateTime<Utc>,
    /// When it was last seen.
    pub last_seen: DateTime<Utc>,
}

/// What a memory listing narrows to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryQuery {
    /// One repository.
    pub repository_url: Option<String>,
    /// One kind.
    pub kind: Option<MemoryKind>,
    /// One status.
    pub status: Option<MemoryStatus>,
    /// Similar to this text first.
    pub text: Option<String>,
    /// Only what runs of this session produced.
    pub session_id: Option<Uuid>,
    /// The most entries.
    pub limit: usize,
}

/// A change to an entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryChange {
    /// Accept, retire (or propose again).
    #[serde(default)]
    pub status: Option<MemoryStatus>,
    /// New text.
    #[serde(default)]
    pub text: Option<String>,
}

/// The memory store (Postgres, with trigram and full-text search).
#[async_trait]
pub trait MemoryStore: Send + Sync {
    /// Stores `entry` as `status`, or, for an entry whose fingerprint the owner's repository
    /// already has, counts one more occurrence of that one. Returns the entry's id.
    async fn record(&self, source: &MemorySource, entry: &NewMemory, status: MemoryStatus) -> Result<Uuid>;
    /// The accepted entries of the owner's repository most relevant to `text` (similarity, then
    /// recency and occurrences), at most `limit`.
    async fn relevant(&self, owner: &Owner, repository_url: &str, text: &str, limit: usize) -> Result<Vec<MemoryHint>>;
    /// The owner's entries, as `query` narrows them (retired ones only when asked for by
    /// status); similar first when it has text, else newest.
    async fn search(&self, owner: &Owner, query: &MemoryQuery) -> Result<Vec<MemoryEntry>>;
    /// One of the owner's entries.
    async fn get(&self, owner: &Owner, memory_id: Uuid) -> Result<Option<MemoryEntry>>;
    /// Changes one of the owner's entries; `None` if there is no such entry.
    async fn update(&self, owner: &Owner, memory_id: Uuid, change: &MemoryChange) -> Result<Option<MemoryEntry>>;
    /// Deletes one of the owner's entries; false if there was none.
    async fn delete(&self, owner: &Owner, memory_id: Uuid) -> Result<bool>;
    /// Removes retired entries not changed since `retired_before` and proposed ones not seen
    /// since `proposed_before`, at most `limit`; returns how many.
    async fn remove_stale(
        &self,
        retired_before: DateTime<Utc>,
        proposed_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64>;
}
