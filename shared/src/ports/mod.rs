//! The ports: what use cases need from the outside world, as small traits. Adapters for AWS and
//! Postgres live in `crate::adapters`; use cases only ever see these.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

use crate::Result;
use crate::claude::CliInvocation;
use crate::domain::{DiffStats, Frame, KeyHash, Owner, Run, RunId, RunStatus, Session, Workflow};

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
    /// Forgets a claimed key (its run could not be queued, so a retry must start afresh).
    async fn release_idempotency_key(&self, owner: &Owner, key: &str) -> Result<()>;
    /// Writes a new run, never overwriting one. `false` if the run id already exists.
    async fn create(&self, run: &Run) -> Result<bool>;
    async fn get(&self, run_id: RunId) -> Result<Option<Run>>;
    /// Replaces the run if its stored version is still `expected_version`; `Error::Conflict` if not.
    async fn update(&self, run: &Run, expected_version: u64) -> Result<()>;
    /// The owner's runs, newest first.
    async fn list(&self, owner: &Owner, filter: &RunFilter, limit: usize, cursor: Option<&str>) -> Result<Page<Run>>;
    /// Extends the lease of `executor` (without bumping the version, so a concurrent cancel is
    /// never lost) and reports whether a cancel was requested. `None` if the lease is no longer
    /// this executor's or the run is no longer live.
    async fn heartbeat(&self, run_id: RunId, executor: &str, lease_until: DateTime<Utc>) -> Result<Option<Heartbeat>>;
    /// Up to `limit` live runs (preparing, running) whose lease expired before `now`.
    async fn stale_leases(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Run>>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub cancel_requested: bool,
}

/// What goes on the runs queue: just enough to find the run. FIFO group = session lineage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMessage {
    pub run_id: RunId,
    pub message_group: String,
    /// The run and its version: a retried send of one state is dropped by a FIFO queue, a send
    /// for a later state (the janitor re-queueing a run) is not.
    #[serde(default)]
    pub deduplication_id: String,
}

impl RunMessage {
    /// A run of a session queues behind the session's other runs; any other run is alone.
    pub fn for_run(run: &Run) -> Self {
        let group = run.session_id.map_or_else(|| run.run_id.to_string(), |s| s.to_string());
        Self { run_id: run.run_id, message_group: group, deduplication_id: format!("{}.{}", run.run_id, run.version) }
    }
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
    /// Uploads a file without reading it into memory.
    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<()>;
    /// Downloads to a file without holding it in memory; `false` if there is no such object.
    async fn get_file(&self, key: &str, path: &Path) -> Result<bool>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    async fn delete(&self, key: &str) -> Result<()>;
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// At most `max` keys under `prefix`, in key order.
    async fn list_up_to(&self, prefix: &str, max: usize) -> Result<Vec<String>>;
}

/// Postgres' read model of runs and sessions, fed by the projector.
#[async_trait]
pub trait RunProjection: Send + Sync {
    /// Applies this version of the run unless a newer (or the same) one is already there.
    /// Returns whether anything changed.
    async fn apply(&self, run: &Run) -> Result<bool>;
    /// The same for a session.
    async fn apply_session(&self, session: &Session) -> Result<bool>;
    /// A session removed from the store (deleted or expired).
    async fn remove_session(&self, session_id: uuid::Uuid) -> Result<bool>;
}

/// Where frames go as they are produced (Postgres, WebSocket fan-out, …). Called with batches in
/// `seq` order; must tolerate a batch delivered twice.
#[async_trait]
pub trait FrameSink: Send + Sync {
    fn name(&self) -> &'static str;
    async fn publish(&self, frames: &[Frame]) -> Result<()>;
    /// The run has ended with `status` (its record is already saved).
    async fn finish(&self, _run_id: RunId, _status: RunStatus) {}
    /// This executor stopped working on the run without ending it (its lease was lost).
    async fn abandon(&self, _run_id: RunId) {}
}

/// Stored frames, for replay.
#[async_trait]
pub trait FrameHistory: Send + Sync {
    /// Up to `limit` frames with `seq > after_seq`, in order.
    async fn frames_after(&self, run_id: RunId, after_seq: u64, limit: usize) -> Result<Vec<Frame>>;
    async fn last_seq(&self, run_id: RunId) -> Result<u64>;
}

/// A WebSocket connection: whose it is, what it may and does follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: String,
    pub owner: Owner,
    /// Set for `?token=` connections: the only run they may follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoped_run: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// The current subscription to `run_id`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    pub connected_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A connection's one `subscribe`: the subscriber has everything up to `after_seq`. Whoever holds
/// it (`adopted`) is its only writer, so frames never arrive twice or out of order: the subscribe
/// handler while it replays, then — after it hands over — the run's executor, or the handler
/// again when the run ended first, whoever `adopt`s it first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: Uuid,
    pub after_seq: u64,
    #[serde(default)]
    pub adopted: bool,
}

/// A connection following a run, as the fan-out sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    pub connection_id: String,
    pub subscription: Subscription,
}

#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn put(&self, connection: &Connection) -> Result<()>;
    async fn get(&self, connection_id: &str) -> Result<Option<Connection>>;
    async fn delete(&self, connection_id: &str) -> Result<()>;
    /// Records the connection's one subscription; false if it already has one (or is gone).
    async fn subscribe(&self, connection_id: &str, run_id: RunId, subscription: &Subscription) -> Result<bool>;
    /// Replaces the subscription `held` with `next` (a hand-over); false if `held` is no longer
    /// the connection's subscription.
    async fn release(&self, connection_id: &str, held: Uuid, next: &Subscription) -> Result<bool>;
    /// The connections subscribed to `run_id`.
    async fn subscribers(&self, run_id: RunId) -> Result<Vec<Subscriber>>;
    /// Takes over delivery to a subscription: true for exactly one caller, false if it was
    /// adopted already or the connection has since subscribed anew or gone.
    async fn adopt(&self, connection_id: &str, subscription: Uuid) -> Result<bool>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostOutcome {
    Delivered,
    /// The connection is gone (410): forget it.
    Gone,
    /// Slow down and try again.
    Throttled,
    Failed(String),
}

/// Sends a message down a WebSocket connection (API Gateway's `PostToConnection`).
#[async_trait]
pub trait ConnectionGateway: Send + Sync {
    async fn post(&self, connection_id: &str, message: &str) -> PostOutcome;
    /// Disconnects the client (best effort): it reconnects and replays from its last seq.
    async fn close(&self, connection_id: &str);
}

/// A prepared, isolated workspace for one run.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The run's private directory (mode 0700); everything below is removed by cleanup.
    pub root: PathBuf,
    /// The checkout the CLI works in.
    pub work_dir: PathBuf,
    /// The CLI's own `CLAUDE_CONFIG_DIR` (transcripts land here).
    pub config_dir: PathBuf,
    pub home_dir: PathBuf,
    pub tmp_dir: PathBuf,
    pub mcp_config: Option<PathBuf>,
    /// HEAD right after the clone: the base for the commits and diff stats of the run.
    pub base_commit: String,
    /// Secret values installed into the workspace; never to appear in a frame or a log.
    pub secrets: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishedChanges {
    pub commits: Vec<String>,
    pub diff_stats: Option<DiffStats>,
}

/// Creates, publishes, archives and removes workspaces. Failures a caller should see come back
/// as `Error::RunFailed` with their code (`branch_not_found`, `repository_unavailable`,
/// `push_rejected`).
#[async_trait]
pub trait Workspaces: Send + Sync {
    async fn prepare(&self, run: &Run, workflow: &Workflow) -> Result<Workspace>;
    /// Commits anything the CLI left uncommitted and pushes the branch, when there is anything.
    async fn publish_changes(&self, workspace: &Workspace, run: &Run, commit: bool) -> Result<PublishedChanges>;
    /// The checkout as tar + zstd, written to a file inside the workspace root.
    async fn archive(&self, workspace: &Workspace) -> Result<PathBuf>;
    /// Removes the workspace (bounded retries; a failure is logged, not returned).
    async fn cleanup(&self, workspace: &Workspace, run_id: RunId);
}

/// One line of CLI output. `total_bytes` above `bytes.len()` means the line was cut at the cap.
#[derive(Clone, Debug)]
pub struct OutputLine {
    pub bytes: Vec<u8>,
    pub total_bytes: usize,
}

#[async_trait]
pub trait AgentCli: Send + Sync {
    async fn start(&self, workspace: &Workspace, invocation: &CliInvocation) -> Result<Box<dyn AgentProcess>>;
}

/// A started CLI process (and its process group).
#[async_trait]
pub trait AgentProcess: Send {
    /// The next stdout line; `None` at end of output.
    async fn next_line(&mut self) -> Result<Option<OutputLine>>;
    /// SIGTERM to the whole group, SIGKILL after `grace`; returns once nothing is left.
    async fn stop(&mut self, grace: Duration);
    /// Waits for the exit; `None` when killed by a signal.
    async fn wait(&mut self) -> Option<i32>;
    fn stderr_tail(&self) -> String;
    fn process_group(&self) -> Option<i32>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// `false` if the id is taken.
    async fn create(&self, session: &Session) -> Result<bool>;
    async fn get(&self, session_id: uuid::Uuid) -> Result<Option<Session>>;
    /// Replaces the session if its stored version is still `expected_version`.
    async fn update(&self, session: &Session, expected_version: u64) -> Result<()>;
    async fn delete(&self, session_id: uuid::Uuid) -> Result<()>;
    /// The owner's sessions, most recently created first.
    async fn list(&self, owner: &Owner, limit: usize, cursor: Option<&str>) -> Result<Page<Session>>;
    /// Up to `limit` sessions that expired before `now` (DynamoDB's TTL is only a backstop).
    async fn expired(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Session>>;
}

#[cfg(test)]
mod tests {
    use super::RunMessage;
    use crate::domain::RunStatus;
    use crate::domain::run::tests::run_in;

    #[test]
    fn a_later_state_of_a_run_is_a_new_message_and_the_same_state_is_not() {
        let mut run = run_in(RunStatus::Preparing);
        let first = RunMessage::for_run(&run);
        assert_eq!(first.deduplication_id, RunMessage::for_run(&run).deduplication_id);
        run.transition(RunStatus::Queued, chrono::Utc::now()).unwrap();
        let requeued = RunMessage::for_run(&run);
        assert_eq!((requeued.run_id, &requeued.message_group), (first.run_id, &first.message_group));
        assert_ne!(requeued.deduplication_id, first.deduplication_id, "a FIFO queue would drop the re-queue");
    }
}
