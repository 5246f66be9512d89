//! Where a run's time went, phase by phase.

use serde::{Deserialize, Serialize};

/// Where a run's time went, in milliseconds; a phase the run did not reach is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimings {
    /// Submitted → claimed by an executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_wait_ms: Option<u64>,
    /// The workspace: clone, the workflow's files, the session's transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_ms: Option<u64>,
    /// The CLI started → its first line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_frame_ms: Option<u64>,
    /// The CLI started → it exited (or was stopped), its frames stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_ms: Option<u64>,
    /// Committing and pushing what it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_ms: Option<u64>,
    /// The frame log, the workspace archive and the transcript to the artifact store, and the
    /// session's totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_ms: Option<u64>,
}

/// Milliseconds of a duration, as timings record them.
pub fn millis(duration: std::time::Duration) -> Option<u64> {
    Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}
