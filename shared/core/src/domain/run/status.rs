//! Run ids and the run state machine's states.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A run id: a UUID v7, so ids sort by creation time (newest-first listing needs no extra index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Uuid);

impl RunId {
    /// A fresh id, ordered by creation time.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
    /// The plain UUID, for stores and APIs that take one.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

impl From<Uuid> for RunId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

/// Where a run is in its life; [`RunStatus::can_become`] says which moves are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted and waiting for an executor to claim it.
    Queued,
    /// Claimed by an executor, which is setting up the workspace; the CLI has not started yet.
    Preparing,
    /// The CLI is running.
    Running,
    /// The CLI finished and reported success.
    Completed,
    /// Ended in error; the run's `error` says why.
    Failed,
    /// Stopped because someone asked to cancel it.
    Cancelled,
    /// Stopped by a watchdog: the run went idle or exceeded its time limit.
    TimedOut,
}

impl RunStatus {
    /// Every status, in lifecycle order; for parsing and for listing the valid names.
    pub const ALL: [RunStatus; 7] =
        [Self::Queued, Self::Preparing, Self::Running, Self::Completed, Self::Failed, Self::Cancelled, Self::TimedOut];

    /// The snake_case name used in the API and the stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Preparing => "preparing",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Whether the run has ended for good; no transition leads out of these.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled | Self::TimedOut)
    }

    /// The whole state machine in one table.
    ///
    /// `preparing → queued` is the janitor handing a run whose executor died before the CLI started
    /// back to the queue; once the CLI has run, a lost executor can only end the run.
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, next),
            (Queued, Preparing | Cancelled | Failed)
                | (Preparing, Running | Queued | Failed | Cancelled | TimedOut)
                | (Running, Completed | Failed | Cancelled | TimedOut)
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or(())
    }
}
