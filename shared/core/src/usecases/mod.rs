//! The use cases, written against `crate::ports` only:
//!
//! - intake and queries: `RunService` (runs), `SessionService` (sessions), `Authenticator` (keys);
//! - execution: `RunExecutor` (claim, lease, workspace, CLI, outcome), `FrameRecorder`
//!   (batching frames to the log and the sinks), `WebSocketFanout` (the live sink);
//! - streaming: `StreamService` (connect, subscribe, replay, hand over to the executor);
//! - orchestrators: `GenieService` (CloudEvent requests in, replies out), `EpicService`
//!   (epics: started and decided through the API, carried by the engine's tasks);
//! - upkeep: `Janitor` (expired sessions, lost executors, orphaned objects).

mod auth;
mod courier;
mod epics;
mod execute;
mod fanout;
mod frames;
#[cfg(test)]
mod fuzz_tests;
mod genie;
mod janitor;
mod limits;
mod measure;
mod memory;
mod optimistic;
mod runs;
mod sessions;
mod stream;

pub use auth::Authenticator;
pub use epics::{DecisionRequest, EpicService, EpicSettings, MAX_COMMENT_BYTES, StartedEpic};
pub use execute::{Disposition, ExecutorPorts, ExecutorSettings, MemorySettings, RunExecutor};
pub use fanout::{FanoutLimits, WebSocketFanout};
pub use frames::{FrameRecorder, RecorderReport};
pub use genie::{GenieService, StreamAccess};
pub use janitor::{Janitor, JanitorReport, OpenConnections};
pub use limits::Limiter;
pub use measure::run_ended;
pub use memory::{MemoryNote, MemorySearch, MemoryService};
pub use runs::{DEFAULT_PAGE_SIZE, IDEMPOTENCY_TTL_HOURS, ListQuery, MAX_PAGE_SIZE, RunOrigin, RunService, Submitted};
pub use sessions::{HistoryMessage, ReserveSession, SessionService};
pub use stream::{Credentials, StreamService};
