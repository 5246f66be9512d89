//! `POST /epics`: the request and its rules.

use serde::{Deserialize, Serialize};

use super::PlanStep;
use crate::domain::{
    BranchName, IntakeLimits, MAX_MAX_TURNS, MIN_MAX_TURNS, RepositoryPolicy, ValidationError, WorkflowRegistry,
};

/// How long an approval waits when the request does not say (one day).
pub const DEFAULT_APPROVAL_TIMEOUT_SECONDS: u64 = 86_400;
/// The longest an approval may wait (a week).
pub const MAX_APPROVAL_TIMEOUT_SECONDS: u64 = 7 * 86_400;
/// Fix rounds when the request does not say.
pub const DEFAULT_MAX_FIX_ROUNDS: u32 = 2;
/// The most fix rounds a request may ask for.
pub const MAX_FIX_ROUNDS: u32 = 5;
/// The most steps a plan may have as requested.
pub const MAX_PLAN_STEPS: usize = 12;
/// The longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// The largest budget an epic may have, in US dollars.
pub const MAX_EPIC_BUDGET_USD: f64 = 10_000.0;
/// The plan when the request gives none.
pub const DEFAULT_STEPS: [&str; 5] = ["architect", "approval", "implement", "test", "review"];

/// Whether approvals wait for a person.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// Every approval step waits for a decision through the API (or Genie).
    #[default]
    Manual,
    /// Approval steps pass by themselves unless a trigger (a breaking change, a database or
    /// security change, a new endpoint, the budget's threshold) asks for a person.
    Auto,
}

/// `POST /agent/claude-code/epics` as received.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpicRequest {
    /// A short name for people.
    pub title: String,
    /// The goal; every step gets it.
    pub message: String,
    /// The branch every step works on.
    pub branch: String,
    /// The repository; the deployment's default when absent.
    #[serde(default)]
    pub repository_url: Option<String>,
    /// Workflow names and `approval`, in order; the default plan when absent.
    #[serde(default)]
    pub steps: Option<Vec<String>>,
    /// The most the epic may spend on the model, in US dollars.
    pub budget_usd: f64,
    /// `manual` (the default) or `auto`.
    #[serde(default)]
    pub approval: Option<ApprovalMode>,
    /// How long an approval waits, in seconds.
    #[serde(default)]
    pub approval_timeout_seconds: Option<i64>,
    /// The most fix rounds.
    #[serde(default)]
    pub max_fix_rounds: Option<i64>,
    /// Adds a `pr` step at the end.
    #[serde(default)]
    pub pr: Option<bool>,
    /// Move the branch back when a step fails for good.
    #[serde(default)]
    pub rollback_on_failure: Option<bool>,
    /// Turn limit of each step's run.
    #[serde(default)]
    pub max_turns: Option<i64>,
}

/// A request that met every rule, with its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidEpicRequest {
    /// Trimmed, 1 to `MAX_TITLE_CHARS` characters.
    pub title: String,
    /// Not blank, no NUL, within the intake limit.
    pub message: String,
    /// A branch name git accepts.
    pub branch: String,
    /// Approved by the repository policy.
    pub repository_url: String,
    /// Every run step names a deployed workflow.
    pub plan: Vec<PlanStep>,
    /// Positive, at most `MAX_EPIC_BUDGET_USD`.
    pub budget_usd: f64,
    /// Manual or auto.
    pub approval: ApprovalMode,
    /// 1 to `MAX_APPROVAL_TIMEOUT_SECONDS`.
    pub approval_timeout_seconds: u64,
    /// 0 to `MAX_FIX_ROUNDS`.
    pub max_fix_rounds: u32,
    /// Roll back when a step fails for good.
    pub rollback_on_failure: bool,
    /// Turn limit of each step's run.
    pub max_turns: Option<u32>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError::InvalidEpic { code, message: message.into() }
}

impl EpicRequest {
    /// Checks every rule and fills in defaults.
    pub fn validate(
        self,
        workflows: &WorkflowRegistry,
        limits: &IntakeLimits,
        repositories: &RepositoryPolicy,
    ) -> Result<ValidEpicRequest, ValidationError> {
        let title = self.title.trim().to_owned();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS || title.contains('\0') {
            return Err(invalid("invalid_title", format!("title must be 1 to {MAX_TITLE_CHARS} characters")));
        }
        if self.message.trim().is_empty() {
            return Err(ValidationError::EmptyMessage);
        }
        // Steps get the goal plus what earlier steps produced: the goal may use half the limit.
        let max_goal = limits.max_message_bytes / 2;
        if self.message.len() > max_goal {
            return Err(ValidationError::MessageTooLarge { actual: self.message.len(), max: max_goal });
        }
        if self.message.contains('\0') {
            return Err(ValidationError::InvalidMessage);
        }
        let branch = BranchName::parse(&self.branch)?;
        let repository_url = repositories.resolve(self.repository_url.as_deref())?;
        if !(self.budget_usd.is_finite()
            && (crate::domain::request::MIN_BUDGET_USD..=MAX_EPIC_BUDGET_USD).contains(&self.budget_usd))
        {
            return Err(invalid(
                "invalid_budget",
                format!("budget_usd must be a number of US dollars from 0.0001 to {MAX_EPIC_BUDGET_USD}"),
            ));
        }
        let names: Vec<String> = match self.steps {
            Some(steps) => steps,
            None => DEFAULT_STEPS.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut plan = Vec::with_capacity(names.len() + 1);
        for name in &names {
            if name == "approval" {
                plan.push(PlanStep::Approval);
            } else if workflows.get(name).is_some() {
                plan.push(PlanStep::run(name));
            } else {
                return Err(invalid(
                    "invalid_steps",
                    format!("step {name:?} is neither `approval` nor a deployed workflow"),
                ));
            }
        }
        if self.pr == Some(true) {
            plan.push(PlanStep::run("pr"));
        }
        if !plan.iter().any(|s| matches!(s, PlanStep::Run { .. })) || plan.len() > MAX_PLAN_STEPS {
            return Err(invalid(
                "invalid_steps",
                format!("steps must hold at least one workflow and at most {MAX_PLAN_STEPS} entries"),
            ));
        }
        if plan.windows(2).any(|w| w[0] == PlanStep::Approval && w[1] == PlanStep::Approval) {
            return Err(invalid("invalid_steps", "two approvals in a row ask the same question twice"));
        }
        let approval_timeout_seconds = match self.approval_timeout_seconds {
            None => DEFAULT_APPROVAL_TIMEOUT_SECONDS,
            Some(s) if (1..=MAX_APPROVAL_TIMEOUT_SECONDS as i64).contains(&s) => s as u64,
            Some(_) => {
                return Err(invalid(
                    "invalid_approval_timeout",
                    format!("approval_timeout_seconds must be from 1 to {MAX_APPROVAL_TIMEOUT_SECONDS}"),
                ));
            }
        };
        let max_fix_rounds = match self.max_fix_rounds {
            None => DEFAULT_MAX_FIX_ROUNDS,
            Some(n) if (0..=MAX_FIX_ROUNDS as i64).contains(&n) => n as u32,
            Some(_) => {
                return Err(invalid(
                    "invalid_fix_rounds",
                    format!("max_fix_rounds must be from 0 to {MAX_FIX_ROUNDS}"),
                ));
            }
        };
        if max_fix_rounds > 0 && workflows.get("fix").is_none() {
            return Err(invalid(
                "invalid_fix_rounds",
                "this deployment has no `fix` workflow; set max_fix_rounds to 0",
            ));
        }
        let max_turns = match self.max_turns {
            None => None,
            Some(n) if (MIN_MAX_TURNS as i64..=MAX_MAX_TURNS as i64).contains(&n) => Some(n as u32),
            Some(n) => {
                return Err(ValidationError::InvalidMaxTurns { actual: n, min: MIN_MAX_TURNS, max: MAX_MAX_TURNS });
            }
        };
        Ok(ValidEpicRequest {
            title,
            message: self.message,
            branch: branch.into(),
            repository_url,
            plan,
            budget_usd: self.budget_usd,
            approval: self.approval.unwrap_or_default(),
            approval_timeout_seconds,
            max_fix_rounds,
            rollback_on_failure: self.rollback_on_failure.unwrap_or(false),
            max_turns,
        })
    }
}
