//! Streaming: where frames go, where they are replayed from, and the WebSocket connections
//! that follow runs.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Result;
use crate::domain::{Frame, Owner, RunId, RunStatus};

/// Where frames go as they are produced (Postgres, WebSocket fan-out, …). Called in `seq`
/// order; must tolerate a frame delivered twice. A live sink gets each frame as soon as it is
/// read, one at a time and before persistence (so it must not wait on I/O); the others get
/// batches.
#[async_trait]
pub trait FrameSink: Send + Sync {
    /// Names the sink in logs.
    fn name(&self) -> &'static str;
    /// Takes frames, in `seq` order.
    async fn publish(&self, frames: &[Frame]) -> Result<()>;
    /// Whether this sink gets frames live, ahead of persistence.
    fn is_live(&self) -> bool {
        false
    }
    /// Persistence has every frame of the run through `through_seq` (told to live sinks).
    async fn stored(&self, _run_id: RunId, _through_seq: u64) {}
    /// The run has ended with `status` (its record is already saved).
    async fn finish(&self, _run_id: RunId, _status: RunStatus) {}
    /// This executor stopped working on the run without ending it (its lease was lost).
    async fn abandon(&self, _run_id: RunId) {}
}

/// The run's own complete copy of its frames, one JSON line each, written as they come and
/// uploaded to the artifact store when the run ends.
#[async_trait]
pub trait FrameLog: Send {
    /// Appends the frames (in `seq` order) and flushes them.
    async fn append(&mut self, frames: &[Frame]) -> Result<()>;
    /// Where the log is, for the upload.
    fn path(&self) -> &Path;
    /// The frames it holds from `first` to `last` (seqs, inclusive), to back-fill a sink that
    /// could not take them when they were read.
    async fn read_back(&self, first: u64, last: u64) -> Result<Vec<Frame>>;
}

/// Opens a run's frame log in its workspace.
#[async_trait]
pub trait FrameLogs: Send + Sync {
    /// A new, empty log for the run of `workspace`.
    async fn open(&self, workspace: &crate::ports::Workspace) -> Result<Box<dyn FrameLog>>;
}

/// Stored frames, for replay.
#[async_trait]
pub trait FrameHistory: Send + Sync {
    /// Up to `limit` frames with `seq > after_seq`, in order.
    async fn frames_after(&self, run_id: RunId, after_seq: u64, limit: usize) -> Result<Vec<Frame>>;
    /// The highest stored `seq` of the run (0 if none).
    async fn last_seq(&self, run_id: RunId) -> Result<u64>;
}

/// A WebSocket connection: whose it is, what it may and does follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// API Gateway's id for the connection.
    pub connection_id: String,
    /// Who connected (by key, or the owner a stream token names).
    pub owner: Owner,
    /// Set for `?token=` connections: the only run they may follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoped_run: Option<RunId>,
    /// The run the connection follows, once it subscribed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// The current subscription to `run_id`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    /// When the client connected.
    pub connected_at: DateTime<Utc>,
    /// When API Gateway will have closed it (the record's TTL).
    pub expires_at: DateTime<Utc>,
    /// The key it was opened with (directly, or through a stream token the key's request got):
    /// revoking the key closes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<crate::domain::KeyHash>,
}

/// A connection's one `subscribe`: the subscriber has everything up to `after_seq`. Whoever holds
/// it (`adopted`) is its only writer, so frames never arrive twice or out of order: the subscribe
/// handler while it replays, then — after it hands over — the run's executor, or the handler
/// again when the run ended first, whoever `adopt`s it first. A hold is a lease: its writer
/// renews it while it writes, and once it lapses (the writer crashed) another may adopt it, so a
/// subscriber still gets the rest of the run and its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Changes with every hand-over, so a stale writer's conditional write fails.
    pub id: Uuid,
    /// The last seq the subscriber has.
    pub after_seq: u64,
    /// Someone is writing to it.
    #[serde(default)]
    pub adopted: bool,
    /// Who holds it: a fresh id per adoption, so only that writer may renew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Uuid>,
    /// Until when (epoch seconds) the hold lasts unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<i64>,
}

impl Subscription {
    /// A subscription nobody holds, for the run's executor to adopt.
    pub fn open(after_seq: u64) -> Self {
        Self { id: Uuid::new_v4(), after_seq, adopted: false, holder: None, held_until: None }
    }

    /// A subscription held by `holder` until `until`.
    pub fn held(after_seq: u64, holder: Uuid, until: DateTime<Utc>) -> Self {
        Self { id: Uuid::new_v4(), after_seq, adopted: true, holder: Some(holder), held_until: Some(until.timestamp()) }
    }

    /// Held, by a writer that stopped renewing.
    pub fn lapsed(&self, now: DateTime<Utc>) -> bool {
        self.adopted && self.held_until.is_some_and(|until| until < now.timestamp())
    }
}

/// A connection following a run, as the fan-out sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// The connection to post to.
    pub connection_id: String,
    /// Its current subscription.
    pub subscription: Subscription,
}

/// The connections table, with an index by followed run.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Records a new connection.
    async fn put(&self, connection: &Connection) -> Result<()>;
    /// Connections opened with a key (at most `limit`), for the revocation sweep.
    async fn keyed(&self, limit: usize) -> Result<Vec<Connection>>;
    /// The connection, if it is still there.
    async fn get(&self, connection_id: &str) -> Result<Option<Connection>>;
    /// How many connections `owner` has open, counted no further than `cap`.
    async fn count_open(&self, owner: &Owner, cap: usize) -> Result<usize>;
    /// Forgets the connection.
    async fn delete(&self, connection_id: &str) -> Result<()>;
    /// Records the connection's one subscription; false if it already has one (or is gone).
    async fn subscribe(&self, connection_id: &str, run_id: RunId, subscription: &Subscription) -> Result<bool>;
    /// Replaces the subscription `held` with `next` (a hand-over); false if `held` is no longer
    /// the connection's subscription.
    async fn release(&self, connection_id: &str, held: Uuid, next: &Subscription) -> Result<bool>;
    /// The connections subscribed to `run_id`.
    async fn subscribers(&self, run_id: RunId) -> Result<Vec<Subscriber>>;
    /// Takes over delivery to a subscription for `holder` until `until`: true for exactly one
    /// caller; false if another holds it (and its hold had not lapsed at `now`), or the
    /// connection has since subscribed anew or gone.
    async fn adopt(
        &self,
        connection_id: &str,
        subscription: Uuid,
        holder: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Extends `holder`'s hold on a subscription to `until`; false if it is no longer theirs.
    async fn renew(&self, connection_id: &str, subscription: Uuid, holder: Uuid, until: DateTime<Utc>) -> Result<bool>;
}

/// What became of one posted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostOutcome {
    /// The gateway took it.
    Delivered,
    /// The connection is gone (410): forget it.
    Gone,
    /// Slow down and try again.
    Throttled,
    /// Any other failure, described.
    Failed(String),
}

/// Sends a message down a WebSocket connection (API Gateway's `PostToConnection`).
#[async_trait]
pub trait ConnectionGateway: Send + Sync {
    /// Posts one message (at most 32 KB).
    async fn post(&self, connection_id: &str, message: &str) -> PostOutcome;
    /// Disconnects the client (best effort): it reconnects and replays from its last seq.
    async fn close(&self, connection_id: &str);
}
