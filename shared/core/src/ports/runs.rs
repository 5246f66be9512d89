//! Runs: the runs table, the runs queue, and the read model the projector keeps.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Page;
use crate::Result;
use crate::domain::{Lane, Owner, Run, RunId, RunStatus, Session};

/// The remembered answer to an `Idempotency-Key`: which run it created, and a fingerprint of
/// the request so a different request under the same key is refused instead of replayed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Keys are per owner: two owners may use the same key.
    pub owner: Owner,
    /// The `Idempotency-Key` as the caller sent it.
    pub key: String,
    /// The run the key created.
    pub run_id: RunId,
    /// A digest of the request, to tell a replay from a different request under the same key.
    pub request_fingerprint: String,
    /// When the key may be used for a new request.
    pub expires_at: DateTime<Utc>,
}

/// What `GET /runs` narrows the listing to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFilter {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
}

/// The runs table (and its idempotency keys): the operational truth, written conditionally on
/// each run's version.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Records `record` unless its key is already taken (and unexpired); then returns the record
    /// that holds it.
    async fn claim_idempotency_key(&self, record: &IdempotencyRecord) -> Result<Option<IdempotencyRecord>>;
    /// Forgets a claimed key (its run could not be queued, so a retry must start afresh).
    async fn release_idempotency_key(&self, owner: &Owner, key: &str) -> Result<()>;
    /// Writes a new run, never overwriting one. `false` if the run id already exists.
    async fn create(&self, run: &Run) -> Result<bool>;
    /// The run, if it exists.
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
    /// Runs still queued whose last change is older than `before` (at most `limit`).
    async fn queued_since(&self, before: DateTime<Utc>, limit: usize) -> Result<Vec<Run>>;
    /// How many of the owner's runs are queued, preparing or running, counting at most `up_to`.
    async fn count_active(&self, owner: &Owner, up_to: usize) -> Result<usize>;
}

/// What a lease renewal found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Someone asked to cancel the run.
    pub cancel_requested: bool,
}

/// What goes on the runs queue: just enough to find the run. FIFO group = session lineage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMessage {
    /// The run to execute (or to end, for its subscribers).
    pub run_id: RunId,
    /// The FIFO message group: runs of one group never overlap.
    pub message_group: String,
    /// The run and its version: a retried send of one state is dropped by a FIFO queue, a send
    /// for a later state (the janitor re-queueing a run) is not.
    #[serde(default)]
    pub deduplication_id: String,
    /// Which queue, and so which executors: Lambda's, or the long-running workers.
    #[serde(default)]
    pub lane: Lane,
    /// The run's trace, also sent as the message's `traceparent` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<crate::domain::TraceId>,
}

impl RunMessage {
    /// A run of a session queues behind the session's other runs; any other run is alone.
    pub fn for_run(run: &Run) -> Self {
        let group = run.session_id.map_or_else(|| run.run_id.to_string(), |s| s.to_string());
        Self {
            run_id: run.run_id,
            message_group: group,
            deduplication_id: format!("{}.{}", run.run_id, run.version),
            lane: Lane::for_time_limit(run.time_limit_seconds),
            trace_id: run.trace_id.clone(),
        }
    }
}

/// The runs queue (SQS FIFO).
#[async_trait]
pub trait RunQueue: Send + Sync {
    /// Sends the message; a retried send of the same run state is dropped by the queue.
    async fn enqueue(&self, message: &RunMessage) -> Result<()>;
}

/// Postgres' read model of runs, sessions and epics, fed by the projector.
#[async_trait]
pub trait RunProjection: Send + Sync {
    /// Applies this version of the run unless a newer (or the same) one is already there.
    /// Returns whether anything changed.
    async fn apply(&self, run: &Run) -> Result<bool>;
    /// The same for a session.
    async fn apply_session(&self, session: &Session) -> Result<bool>;
    /// A session removed from the store (deleted or expired).
    async fn remove_session(&self, session_id: uuid::Uuid) -> Result<bool>;
    /// The same for an epic.
    async fn apply_epic(&self, epic: &crate::domain::epic::Epic) -> Result<bool>;
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
