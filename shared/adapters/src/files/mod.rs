//! The local file system: each run's frame log, session transcripts as the CLI keeps them, and
//! workflow folders a deployment brings.

mod frame_log;
mod transcripts;
mod workflows;

pub use frame_log::NdjsonFrameLogs;
pub use transcripts::StoredTranscripts;
pub use workflows::load_workflows;
