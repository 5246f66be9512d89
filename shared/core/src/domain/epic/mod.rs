//! An epic: one goal carried through several workflows on one branch, with approvals, a budget,
//! a bounded fix loop and rollback points (docs/epics.md).
//!
//! Step Functions keeps the epic going (every wait durable and bounded: a run step by its
//! executor's heartbeat, an approval by its timeout); what comes next is decided here, by
//! [`Epic::advance`], from what the last step did. That keeps every rule of an epic in one
//! place with unit tests, and the state machine a small, fixed loop.

pub mod announce;
mod plan;
mod request;
mod triggers;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Owner, RunError, RunId, RunStatus};

pub use plan::{Advance, After, Decision, DecisionKind, Next, RollbackPlan, RunReport};
pub use request::{
    ApprovalMode, DEFAULT_APPROVAL_TIMEOUT_SECONDS, DEFAULT_MAX_FIX_ROUNDS, EpicRequest, MAX_APPROVAL_TIMEOUT_SECONDS,
    MAX_FIX_ROUNDS, ValidEpicRequest,
};
pub use triggers::ApprovalTrigger;

/// The share of the budget whose spending asks for an approval before the next step.
pub const BUDGET_APPROVAL_SHARE: f64 = 0.8;
/// The most of a step's result kept in the epic and passed on to the next steps.
pub const MAX_CARRIED_SUMMARY_BYTES: usize = 2_000;

/// An epic id: a UUID v7, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EpicId(Uuid);

impl EpicId {
    /// A fresh id, ordered by creation time.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The plain UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for EpicId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl Default for EpicId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EpicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for EpicId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Where an epic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpicStatus {
    /// A step is running (or about to).
    Running,
    /// Waiting for a person's (or Genie's) decision.
    AwaitingApproval,
    /// Every step ran and passed.
    Completed,
    /// An approval was denied; nothing after it ran.
    Denied,
    /// The budget ran out before the epic was done.
    BudgetExhausted,
    /// A step failed (or was lost) and the epic could not go on.
    Failed,
    /// Someone cancelled it.
    Cancelled,
    /// An approval was not given in time.
    TimedOut,
    /// The branch was moved back to a rollback point.
    RolledBack,
}

impl EpicStatus {
    /// True once the epic will not change by itself again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running | Self::AwaitingApproval)
    }

    /// The status's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Completed => "completed",
            Self::Denied => "denied",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::RolledBack => "rolled_back",
        }
    }
}

impl fmt::Display for EpicStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EpicStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| format!("no epic status {s:?}"))
    }
}

/// One entry of an epic's plan: a workflow to run, or an approval to ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PlanStep {
    /// Run this workflow.
    Run {
        /// The workflow's name.
        workflow: String,
        /// Why this step is in the plan when the caller did not put it there (`fix`, `amend`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Ask for a decision before going on.
    Approval,
}

impl PlanStep {
    /// A step that runs `workflow`.
    pub fn run(workflow: &str) -> Self {
        Self::Run { workflow: workflow.to_owned(), reason: None }
    }

    /// The step's name in a plan: its workflow, or `approval`.
    pub fn name(&self) -> &str {
        match self {
            Self::Run { workflow, .. } => workflow,
            Self::Approval => "approval",
        }
    }
}

/// Where a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Its run is queued or running, or its approval is being asked for.
    Running,
    /// Its run completed and passed.
    Passed,
    /// Its run did not complete, or completed and reported a failure.
    Failed,
    /// The approval was given (by a person or, in `auto` mode, by the rules).
    Approved,
    /// The approval was denied, amended or answered with a rollback.
    Decided,
    /// The approval was not given in time, or the run step lost its executor.
    TimedOut,
    /// The epic ended (cancelled) while the step was running.
    Abandoned,
}

/// A decision as recorded on an approval step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedDecision {
    /// approve, deny, amend or rollback.
    pub decision: DecisionKind,
    /// What the person said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who decided: an owner's name, or `auto`.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One step the epic took (or is taking), in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Its position among the epic's steps, from 0; also the approval id of an approval step.
    pub index: usize,
    /// The plan step it carried out.
    pub plan: PlanStep,
    /// Where it is.
    pub status: StepStatus,
    /// The run that carried it out (run steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// The branch head before the step ran: where a rollback to this step moves the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_point: Option<String>,
    /// The branch head after the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_after: Option<String>,
    /// Commits the step added, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<String>,
    /// What the step's run said at the end, truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_summary: Option<String>,
    /// Why the step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// What it cost, in US dollars.
    #[serde(default)]
    pub cost_usd: f64,
    /// Agent turns its run took.
    #[serde(default)]
    pub num_turns: u32,
    /// How long its run's CLI ran, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// Why the approval was asked for (approval steps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<ApprovalTrigger>,
    /// The decision (approval steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<RecordedDecision>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Cost, turns and time, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// US dollars.
    pub cost_usd: f64,
    /// Agent turns.
    pub num_turns: u32,
    /// Milliseconds of CLI time.
    pub duration_ms: u64,
}

/// An approval the epic is waiting for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// The approval's id: its step's index.
    pub approval_id: usize,
    /// What is asked.
    pub asked: String,
    /// Why it is asked.
    pub triggers: Vec<ApprovalTrigger>,
    /// When the epic gives up waiting (`timed_out`).
    pub expires_at: DateTime<Utc>,
    /// The Step Functions task token its decision completes; never shown to callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_token: Option<String>,
}

/// The last advance handled, so that a redelivered one answers the same (idempotence).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandledAdvance {
    /// A digest of the advance's task token.
    pub token_digest: String,
    /// What it answered.
    pub answer: Advance,
}

/// An epic: its request, its plan, the steps it took and where it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epic {
    /// Unique, time-ordered id.
    pub epic_id: EpicId,
    /// Who started it; to anyone else it does not exist.
    pub owner: Owner,
    /// A short name for people.
    pub title: String,
    /// The goal, given to every step.
    pub message: String,
    /// The branch every step works on.
    pub branch: String,
    /// The repository, as the repository policy approved it.
    pub repository_url: String,
    /// What the epic will do, in order; the fix loop and amendments insert steps into it.
    pub plan: Vec<PlanStep>,
    /// The next plan entry to carry out.
    pub cursor: usize,
    /// The most the epic may spend, in US dollars.
    pub budget_usd: f64,
    /// Whether approvals wait for a person.
    pub approval: ApprovalMode,
    /// How long an approval waits.
    pub approval_timeout_seconds: u64,
    /// The most fix rounds (fix → check again) the epic may take.
    pub max_fix_rounds: u32,
    /// Fix rounds taken so far.
    #[serde(default)]
    pub fix_rounds: u32,
    /// Move the branch back to the failing step's rollback point when a step fails for good.
    #[serde(default)]
    pub rollback_on_failure: bool,
    /// Turn limit of each step's run; `None` leaves the workflow's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Where the epic is.
    pub status: EpicStatus,
    /// Every step taken, in order.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// The approval being waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_approval: Option<PendingApproval>,
    /// The budget's approval threshold was passed and approved.
    #[serde(default)]
    pub budget_approved: bool,
    /// Cost, turns and time over every step.
    #[serde(default)]
    pub totals: Totals,
    /// Why it ended, when it did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// What the last rollback did, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
    /// Where a queue caller's replies go (Genie); `None` for epics started over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<super::ReplyRoute>,
    /// The Step Functions execution carrying the epic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// How many executions were started for it (a rollback after the end starts one more).
    #[serde(default)]
    pub executions: u32,
    /// The last advance answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_advance: Option<HandledAdvance>,
    /// Bumped by every change; the token of conditional writes.
    pub version: u64,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a rollback did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// The step whose rollback point the branch went back to.
    pub to_step: usize,
    /// The commit the branch points at now.
    pub to_commit: String,
    /// The head it had.
    pub from_commit: String,
    /// The commits it no longer has, newest first.
    pub discarded: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
}

impl Epic {
    /// A new epic, `running`, version 1, nothing done yet.
    pub fn start(owner: Owner, request: ValidEpicRequest, at: DateTime<Utc>) -> Self {
        Self {
            epic_id: EpicId::new(),
            owner,
            title: request.title,
            message: request.message,
            branch: request.branch,
            repository_url: request.repository_url,
            plan: request.plan,
            cursor: 0,
            budget_usd: request.budget_usd,
            approval: request.approval,
            approval_timeout_seconds: request.approval_timeout_seconds,
            max_fix_rounds: request.max_fix_rounds,
            fix_rounds: 0,
            rollback_on_failure: request.rollback_on_failure,
            max_turns: request.max_turns,
            status: EpicStatus::Running,
            steps: Vec::new(),
            pending_approval: None,
            budget_approved: false,
            totals: Totals::default(),
            error: None,
            rollback: None,
            reply: None,
            execution_id: None,
            executions: 0,
            last_advance: None,
            version: 1,
            created_at: at,
            updated_at: at,
            finished_at: None,
        }
    }

    /// What is left of the budget, in US dollars (never negative).
    pub fn remaining_budget(&self) -> f64 {
        (self.budget_usd - self.totals.cost_usd).max(0.0)
    }

    /// The step with this index.
    pub fn step(&self, index: usize) -> Option<&StepRecord> {
        self.steps.get(index)
    }

    /// The run step still running, if any.
    pub fn running_run(&self) -> Option<&StepRecord> {
        self.steps.iter().rev().find(|s| s.status == StepStatus::Running && s.run_id.is_some())
    }

    /// The branch head as the epic last saw it: after its latest run step, else before its
    /// first. `None` before any run.
    pub fn known_head(&self) -> Option<&str> {
        self.steps.iter().rev().find_map(|s| s.head_after.as_deref().or(s.rollback_point.as_deref()))
    }

    /// The Step Functions execution name of its `n`-th execution.
    pub fn execution_name(&self, n: u32) -> String {
        if n == 0 { self.epic_id.to_string() } else { format!("{}-{n}", self.epic_id) }
    }

    /// A run step's run was submitted.
    pub fn step_submitted(&mut self, index: usize, run_id: RunId, at: DateTime<Utc>) {
        if let Some(step) = self.steps.get_mut(index) {
            step.run_id = Some(run_id);
        }
        self.touch(at);
    }

    /// The message a run step's run gets: the goal, what the earlier steps produced, and why the
    /// step is there. Cut to `max_bytes` (oldest context first), never the goal itself.
    pub fn step_message(&self, index: usize, max_bytes: usize) -> String {
        plan::step_message(self, index, max_bytes)
    }

    /// Ends the epic in `status`, with `error` when it did not complete.
    pub fn end(&mut self, status: EpicStatus, error: Option<RunError>, at: DateTime<Utc>) {
        self.status = status;
        self.error = error;
        self.pending_approval = None;
        self.finished_at = Some(at);
        for step in self.steps.iter_mut().filter(|s| s.status == StepStatus::Running) {
            step.status = StepStatus::Abandoned;
            step.finished_at = Some(at);
        }
        self.touch(at);
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.version += 1;
        self.updated_at = at;
    }
}

/// Whether a run's status counts as the step having passed (a completed run can still report a
/// failure in its result; see [`RunReport::passed`]).
pub(crate) fn run_completed(status: RunStatus) -> bool {
    status == RunStatus::Completed
}

#[cfg(test)]
mod tests;
