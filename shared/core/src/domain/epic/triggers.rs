//! Why an approval is asked for. In `manual` mode every approval step waits for a person and
//! the triggers say what to look at; in `auto` mode an approval step waits only when one fires.

use serde::{Deserialize, Serialize};

/// A reason for a person to look before the epic goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalTrigger {
    /// The epic's approvals are manual: every approval step asks.
    Manual,
    /// The design says it breaks a public interface.
    BreakingChange,
    /// The design adds an API endpoint.
    NewEndpoint,
    /// The design touches authentication, secrets or permissions.
    SecurityChange,
    /// The design changes a database schema or migrates data.
    DatabaseChange,
    /// The epic has spent `BUDGET_APPROVAL_SHARE` of its budget.
    CostThreshold,
    /// An amendment re-ran the design, which needs a new look.
    Amended,
}

/// Phrases that, in what the previous steps reported, fire a trigger. Plain lower-case
/// substrings: the architect's prompt asks it to name these risks in these words.
const PHRASES: [(&str, ApprovalTrigger); 11] = [
    ("breaking change", ApprovalTrigger::BreakingChange),
    ("backwards-incompatible", ApprovalTrigger::BreakingChange),
    ("backward-incompatible", ApprovalTrigger::BreakingChange),
    ("new endpoint", ApprovalTrigger::NewEndpoint),
    ("new api endpoint", ApprovalTrigger::NewEndpoint),
    ("security", ApprovalTrigger::SecurityChange),
    ("authentication", ApprovalTrigger::SecurityChange),
    ("database migration", ApprovalTrigger::DatabaseChange),
    ("schema change", ApprovalTrigger::DatabaseChange),
    ("migration", ApprovalTrigger::DatabaseChange),
    ("drop table", ApprovalTrigger::DatabaseChange),
];

impl ApprovalTrigger {
    /// The triggers the text of earlier steps fires, each once, in a stable order.
    pub fn found_in(text: &str) -> Vec<Self> {
        let text = text.to_lowercase();
        let mut found: Vec<Self> = Vec::new();
        for (phrase, trigger) in PHRASES {
            if text.contains(phrase) && !found.contains(&trigger) {
                found.push(trigger);
            }
        }
        found
    }

    /// What the trigger asks a person to look at.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Manual => "approvals are manual for this epic",
            Self::BreakingChange => "the design announces a breaking change",
            Self::NewEndpoint => "the design adds an API endpoint",
            Self::SecurityChange => "the design touches security (authentication, secrets, permissions)",
            Self::DatabaseChange => "the design changes a database schema or migrates data",
            Self::CostThreshold => "the epic has spent 80% of its budget",
            Self::Amended => "the design was amended and needs a new look",
        }
    }
}
