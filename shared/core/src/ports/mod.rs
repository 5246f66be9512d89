//! The ports: what the use cases need from the outside world, as small traits, grouped by
//! concern. `runner-adapters` implements them on AWS, Postgres, git, the CLI and the file
//! system; nothing here names a type of those.

mod epics;
mod execution;
mod keys;
mod limits;
mod memory;
mod metrics;
mod objects;
mod replies;
mod runs;
mod sessions;
mod streaming;

pub use epics::{BranchMover, EpicEngine, EpicStore, TaskAnswer};
pub use execution::{Cli, CliProcess, ModelUsage, OutputLine, PublishedChanges, Transcripts, Workspace, Workspaces};
pub use keys::{ApiKeyStore, KeyGrant};
pub use limits::{BucketStore, StoredBucket};
pub use memory::{MemoryChange, MemoryEntry, MemoryQuery, MemorySource, MemoryStore};
pub use metrics::{Measurement, MetricEvent, MetricKind, Metrics, NoMetrics};
pub use objects::ObjectStore;
pub use replies::ReplyQueue;
pub use runs::{Heartbeat, IdempotencyRecord, RunFilter, RunMessage, RunProjection, RunQueue, RunStore};
pub use sessions::SessionStore;
pub use streaming::{
    Connection, ConnectionGateway, ConnectionStore, FrameHistory, FrameLog, FrameLogs, FrameSink, PostOutcome,
    Subscriber, Subscription,
};

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items of this page, in the listing's order.
    pub items: Vec<T>,
    /// Opaque; pass back to get the next page. `None` on the last page.
    pub next_cursor: Option<String>,
}
