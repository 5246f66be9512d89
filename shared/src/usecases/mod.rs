//! Use cases, written against `crate::ports` only.

mod execute;
mod fanout;
mod frames;
mod janitor;
mod runs;
mod sessions;
mod stream;

pub use execute::{Delivery, ExecutorPorts, ExecutorSettings, RunExecutor};
pub use fanout::WebSocketFanout;
pub use frames::{FrameRecorder, RecorderReport};
pub use janitor::{Janitor, JanitorReport};
pub use runs::{DEFAULT_PAGE_SIZE, IDEMPOTENCY_TTL_HOURS, ListQuery, MAX_PAGE_SIZE, RunService, Submitted};
pub use sessions::{HistoryMessage, ReserveSession, SessionService};
pub use stream::{Credentials, StreamService};
