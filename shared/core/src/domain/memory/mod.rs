//! Memory: what earlier runs of a repository taught, given to later runs of it.
//!
//! A memory is a decision, a failure, a pattern or a learning. Writers produce a [`NewMemory`]:
//! a failed run yields a failure ([`failure_from_run`], keyed by a [`failure_fingerprint`] so the
//! same failure seen again counts as a recurrence rather than a new memory), and a run's final
//! answer may end with a fenced `memory` block of patterns and learnings ([`parse_memory_block`]).
//! Storage adds ids, owner, repository and timestamps; the best of what it holds comes back as
//! [`MemoryHint`]s, which [`prompt_section`] turns into a bounded section of a later run's prompt.
//!
//! Everything here is pure: no storage, no clock, no model.

mod block;
mod fingerprint;
mod prompt;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use block::{MAX_MEMORY_BLOCK_ENTRIES, MemoryBlockError, parse_memory_block};
pub use fingerprint::{
    FAILURE_MESSAGE_CHARS, FINGERPRINT_ERROR_CHARS, failure_fingerprint, failure_from_run, normalise_error_text,
};
pub use prompt::{DEFAULT_MEMORY_HINTS, DEFAULT_MEMORY_PROMPT_BYTES, MemoryHint, prompt_section};

/// The most bytes a memory's text may have.
pub const MAX_MEMORY_TEXT_BYTES: usize = 4_000;

/// What a memory records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// A choice made for the repository, and why.
    Decision,
    /// A way a run failed; recurrences share a fingerprint.
    Failure,
    /// A problem and the solution that worked for it.
    Pattern,
    /// An insight, its impact and how to prevent the trouble it explains.
    Learning,
}

impl MemoryKind {
    /// Every kind; for parsing and for listing the valid names.
    pub const ALL: [MemoryKind; 4] = [Self::Decision, Self::Failure, Self::Pattern, Self::Learning];

    /// The snake_case name used in the API and the stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::Failure => "failure",
            Self::Pattern => "pattern",
            Self::Learning => "learning",
        }
    }
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemoryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| unknown("memory kind", s, Self::ALL.map(Self::as_str)))
    }
}

/// Where a memory is in its review: proposed by a run, accepted by people, or retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryStatus {
    /// Written by a run; not yet reviewed.
    Proposed,
    /// Reviewed and kept.
    Accepted,
    /// No longer true or useful; kept for the record, never given to runs.
    Retired,
}

impl MemoryStatus {
    /// Every status; for parsing and for listing the valid names.
    pub const ALL: [MemoryStatus; 3] = [Self::Proposed, Self::Accepted, Self::Retired];

    /// The snake_case name used in the API and the stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Accepted => "accepted",
            Self::Retired => "retired",
        }
    }
}

impl fmt::Display for MemoryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemoryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| unknown("memory status", s, Self::ALL.map(Self::as_str)))
    }
}

fn unknown<const N: usize>(what: &str, given: &str, valid: [&str; N]) -> String {
    format!("unknown {what} `{given}`; expected one of: {}", valid.join(", "))
}

/// A memory as a writer produces it, before storage gives it an id, an owner, a repository and
/// timestamps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewMemory {
    /// What the memory records.
    pub kind: MemoryKind,
    /// The memory in a sentence or two for a later run; at most [`MAX_MEMORY_TEXT_BYTES`].
    pub text: String,
    /// The structured form it came from (a pattern's problem and solution, a failure's code…).
    pub fields: serde_json::Value,
    /// What makes two memories the same, when the kind has it (failures: [`failure_fingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}
