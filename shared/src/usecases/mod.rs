//! Use cases, written against `crate::ports` only.

mod execute;
mod frames;
mod runs;

pub use execute::{Delivery, ExecutorSettings, RunExecutor};
pub use frames::{FrameRecorder, RecorderReport};
pub use runs::{DEFAULT_PAGE_SIZE, IDEMPOTENCY_TTL_HOURS, ListQuery, MAX_PAGE_SIZE, RunService, Submitted};
