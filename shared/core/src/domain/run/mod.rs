//! A run and its state machine.
//!
//! Every change of status goes through [`Run::transition`], which refuses what the state machine
//! forbids and bumps `version`; stores write the result conditionally on the previous version, so a
//! duplicate delivery, a crash-retry or a late cancel can never corrupt a run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Owner, ValidRunRequest};

/// Why a run failed: a machine-readable code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    /// Machine-readable reason, such as `cli_failed` or `executor_lost`.
    pub code: String,
    /// What went wrong, in a sentence for people.
    pub message: String,
    /// The tool call that failed (or was still running when the run was stopped), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolCall>,
}

/// A tool call of the CLI, as far as a failure needs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool (`Bash`, `Edit`, an MCP tool…).
    pub name: String,
    /// Its command, for tools that run one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The files it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

impl RunError {
    /// An error from a machine-readable code and a human-readable message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), tool: None }
    }

    /// The same error, naming the tool call behind it.
    pub fn with_tool(self, tool: Option<ToolCall>) -> Self {
        Self { tool, ..self }
    }
}

/// What became of a run whose executor was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostRun {
    /// It had not started the CLI, so it went back to the queue.
    Requeued,
    /// The CLI had started, so its effects are unknown; the run failed with `executor_lost`.
    Failed,
}

/// How long a queued run may wait, beyond its own time limit (it may be queued behind a run of
/// its session), before its queue message is taken for lost and sent again.
pub const QUEUED_GRACE_SECONDS: i64 = 900;
/// Messages sent again for one run before it is failed as `dead_lettered`.
pub const MAX_REQUEUES: u32 = 3;

/// What became of a run left queued longer than it should wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrandedRun {
    /// Its message is sent again.
    Requeued,
    /// It was sent again `MAX_REQUEUES` times and never started: failed as `dead_lettered`.
    Failed,
}

/// A status change the state machine forbids.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("a {from} run cannot become {to}")]
pub struct TransitionError {
    /// The status the run was in.
    pub from: RunStatus,
    /// The status it was asked to take.
    pub to: RunStatus,
}

/// One queued execution of the Claude Code CLI: the request, its progress and its results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Unique, time-ordered id of the run.
    pub run_id: RunId,
    /// Who submitted the run; to anyone else it does not exist.
    pub owner: Owner,
    /// Name of the workflow (prompt, tools, settings) the run uses.
    pub workflow: String,
    /// The git branch the run works on and pushes its commits to.
    pub branch: String,
    /// The git repository the run works in, as the repository policy approved it.
    pub repository_url: String,
    /// The caller's prompt, given to the CLI on stdin.
    pub message: String,
    /// Most agent turns the CLI may take (`--max-turns`).
    pub max_turns: u32,
    /// The session (lineage id) the run continues or started, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    /// Caller's free-form JSON, kept as text so DynamoDB stores it verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_json: Option<String>,
    /// The caller's `Idempotency-Key`, so a retried submission replays this run rather than adding one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The request's override of the workflow's `auto_commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_commit: Option<bool>,
    /// The most the run may spend on the model (the CLI's `--max-budget-usd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// Where the replies of a queue-submitted run go; `None` for HTTP runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<super::ReplyRoute>,
    /// The run's time limit from its workflow, in seconds; decides which executors may run it.
    #[serde(default)]
    pub time_limit_seconds: u64,
    /// Where the run's time went, phase by phase, as far as it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<RunTimings>,
    /// Where the run is in its state machine.
    pub status: RunStatus,
    /// Someone asked to cancel the run; the executor's watchdog polls it.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Bumped by every change; the optimistic-concurrency token of conditional writes and the
    /// ordering key of the Postgres projection.
    pub version: u64,
    /// When the run was submitted.
    pub created_at: DateTime<Utc>,
    /// When the run last changed.
    pub updated_at: DateTime<Utc>,
    /// When the CLI started; cleared if the run goes back to the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the run reached a terminal status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The CLI's final result text, truncated; the full text is in the frame log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_summary: Option<String>,
    /// Why the run failed or timed out, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// What the run cost, in US dollars, as the CLI reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Agent turns the CLI reported taking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_turns: Option<u32>,
    /// The executor holding the run and until when; renewed by heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    /// When the lease lapses unless a heartbeat renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// How many times an executor claimed the run.
    #[serde(default)]
    pub attempts: u32,
    /// The CLI's `usage` object from its `result` frame, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_json: Option<String>,
    /// How long the CLI reported running, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The CLI process's exit code; `None` if a signal ended it or it never ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Commits the run added to its branch, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<String>,
    /// Size of the changes the run pushed, from the base commit to its last commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_stats: Option<DiffStats>,
    /// The branch head the run started from (its epic's rollback point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// The epic step this run carries out, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epic: Option<EpicLink>,
    /// The memory entries the run was given in its prompt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_used: Vec<Uuid>,
    /// The memory entries the run produced (its failure, its proposals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_produced: Vec<Uuid>,
    /// The trace of the request that asked for the run; every log line, frame row, reply and
    /// metric of the run carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<crate::domain::TraceId>,
    /// Times the janitor sent the run's message again because it stayed queued too long.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requeues: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The epic step a run carries out, and the Step Functions task waiting for its end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpicLink {
    /// The epic.
    pub epic_id: super::epic::EpicId,
    /// The step's index in the epic.
    pub step: usize,
    /// The task token the run's heartbeats and its end report to; never shown to callers.
    pub task_token: String,
}

/// Size of a change as `git diff --shortstat` counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffStats {
    /// Files changed.
    pub files_changed: u32,
    /// Lines added.
    pub insertions: u32,
    /// Lines removed.
    pub deletions: u32,
}

/// How a run ended, as the executor saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    /// The status the run ends in.
    pub status: RunStatus,
    /// The CLI's final result text, truncated; `None` when the run was stopped.
    pub result_summary: Option<String>,
    /// Why the run did not complete, when it did not.
    pub error: Option<RunError>,
    /// The conversation id the CLI reported, kept so the run can be resumed.
    pub session_id: Option<Uuid>,
    /// What the run cost, in US dollars, as the CLI reported it.
    pub cost_usd: Option<f64>,
    /// Agent turns the CLI reported taking.
    pub num_turns: Option<u32>,
    /// The CLI's `usage` object, as JSON text.
    pub usage_json: Option<String>,
    /// How long the CLI reported running, in milliseconds.
    pub duration_ms: Option<u64>,
    /// The CLI process's exit code; `None` if a signal ended it or it never ran.
    pub exit_code: Option<i32>,
}

impl RunOutcome {
    /// A failure known only by its error; the caller fills in whatever else it learned.
    pub fn failed(error: RunError) -> Self {
        Self {
            status: RunStatus::Failed,
            result_summary: None,
            error: Some(error),
            session_id: None,
            cost_usd: None,
            num_turns: None,
            usage_json: None,
            duration_ms: None,
            exit_code: None,
        }
    }
}

impl Run {
    /// A freshly submitted run, version 1.
    pub fn queued(owner: Owner, request: ValidRunRequest, idempotency_key: Option<String>, at: DateTime<Utc>) -> Self {
        Self {
            run_id: RunId::new(),
            owner,
            workflow: request.workflow,
            branch: request.branch.into(),
            repository_url: request.repository_url,
            message: request.message,
            max_turns: request.max_turns,
            session_id: request.session_id,
            metadata_json: request.metadata_json,
            auto_commit: request.auto_commit,
            max_budget_usd: request.max_budget_usd,
            reply: None,
            timings: None,
            time_limit_seconds: 0,
            idempotency_key,
            status: RunStatus::Queued,
            cancel_requested: false,
            version: 1,
            created_at: at,
            updated_at: at,
            started_at: None,
            finished_at: None,
            result_summary: None,
            error: None,
            cost_usd: None,
            num_turns: None,
            lease_owner: None,
            lease_expires_at: None,
            attempts: 0,
            usage_json: None,
            duration_ms: None,
            exit_code: None,
            commits: Vec::new(),
            diff_stats: None,
            base_commit: None,
            epic: None,
            memory_used: Vec::new(),
            memory_produced: Vec::new(),
            trace_id: None,
            requeues: 0,
        }
    }

    /// Recovers a run queued for longer than it should wait: its message was lost, or went to
    /// the dead-letter queue after failed deliveries. It is sent again (a new version, so a FIFO
    /// queue does not drop the message as a duplicate) at most `MAX_REQUEUES` times, then failed
    /// with `dead_lettered` so no run stays queued with no message behind it. `None` while it
    /// may still be waiting its turn.
    pub fn recover_stranded(&mut self, now: DateTime<Utc>) -> Option<StrandedRun> {
        let bound = chrono::Duration::seconds(QUEUED_GRACE_SECONDS + self.time_limit_seconds as i64);
        if self.status != RunStatus::Queued || now - self.updated_at < bound {
            return None;
        }
        if self.requeues >= MAX_REQUEUES {
            let message = format!("the run was sent to the queue {} times and never started", self.requeues + 1);
            self.fail(RunError::new("dead_lettered", message), now).ok()?;
            return Some(StrandedRun::Failed);
        }
        self.requeues += 1;
        self.touch(now);
        Some(StrandedRun::Requeued)
    }

    /// An executor takes the run: `queued → preparing`, under a lease it must keep renewing.
    pub fn claim(
        &mut self,
        executor: &str,
        lease_until: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.transition(RunStatus::Preparing, at)?;
        self.lease_owner = Some(executor.to_owned());
        self.lease_expires_at = Some(lease_until);
        self.attempts += 1;
        Ok(())
    }

    /// True when a live run's executor has stopped renewing its lease.
    pub fn lease_expired(&self, now: DateTime<Utc>) -> bool {
        matches!(self.status, RunStatus::Preparing | RunStatus::Running)
            && self.lease_expires_at.is_none_or(|until| until < now)
    }

    /// Takes back a run whose executor was lost (its lease expired): before the CLI started
    /// (`preparing`) it can simply go again; after, its effects are unknown, so it fails with
    /// `executor_lost`. `None` while the lease holds.
    pub fn recover_lost(&mut self, now: DateTime<Utc>) -> Option<LostRun> {
        if !self.lease_expired(now) {
            return None;
        }
        if self.status == RunStatus::Preparing {
            self.transition(RunStatus::Queued, now).ok()?;
            self.lease_owner = None;
            self.lease_expires_at = None;
            return Some(LostRun::Requeued);
        }
        let error = RunError::new("executor_lost", "the executor running this run stopped renewing its lease");
        self.finish(RunOutcome::failed(error), now).ok()?;
        Some(LostRun::Failed)
    }

    /// Ends the run with everything the executor learned. The session id is kept even when the
    /// CLI failed, so a caller can still resume the conversation; a run that already names its
    /// session (the lineage id) keeps that name whatever id the CLI used.
    pub fn finish(&mut self, outcome: RunOutcome, at: DateTime<Utc>) -> Result<(), TransitionError> {
        self.transition(outcome.status, at)?;
        self.result_summary = outcome.result_summary;
        self.error = outcome.error;
        self.session_id = self.session_id.or(outcome.session_id);
        self.cost_usd = outcome.cost_usd;
        self.num_turns = outcome.num_turns;
        self.usage_json = outcome.usage_json;
        self.duration_ms = outcome.duration_ms;
        self.exit_code = outcome.exit_code;
        self.lease_owner = None;
        self.lease_expires_at = None;
        Ok(())
    }

    /// Moves the run to `next`, stamping the times that belong to it.
    pub fn transition(&mut self, next: RunStatus, at: DateTime<Utc>) -> Result<(), TransitionError> {
        if !self.status.can_become(next) {
            return Err(TransitionError { from: self.status, to: next });
        }
        match next {
            RunStatus::Running => self.started_at = Some(at),
            RunStatus::Queued => self.started_at = None,
            s if s.is_terminal() => self.finished_at = Some(at),
            _ => {}
        }
        self.status = next;
        self.touch(at);
        Ok(())
    }

    /// Ends the run as failed with a reason.
    pub fn fail(&mut self, error: RunError, at: DateTime<Utc>) -> Result<(), TransitionError> {
        self.transition(RunStatus::Failed, at)?;
        self.error = Some(error);
        Ok(())
    }

    /// Asks a live run to stop: a queued run is cancelled at once, a preparing or running one is
    /// flagged for its executor's watchdog. Asking twice is not an error.
    pub fn request_cancel(&mut self, at: DateTime<Utc>) -> Result<CancelOutcome, TransitionError> {
        match self.status {
            RunStatus::Queued => {
                self.transition(RunStatus::Cancelled, at)?;
                Ok(CancelOutcome::Cancelled)
            }
            RunStatus::Preparing | RunStatus::Running if self.cancel_requested => Ok(CancelOutcome::AlreadyRequested),
            RunStatus::Preparing | RunStatus::Running => {
                self.cancel_requested = true;
                self.touch(at);
                Ok(CancelOutcome::Requested)
            }
            from => Err(TransitionError { from, to: RunStatus::Cancelled }),
        }
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.version += 1;
        self.updated_at = at;
    }
}

/// What a cancel request did to a live run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The run was still queued, so it is cancelled at once.
    Cancelled,
    /// The run is preparing or running; it is flagged for its executor to stop.
    Requested,
    /// A cancel was already pending; nothing changed.
    AlreadyRequested,
}

mod lane;
mod status;
mod timings;

pub use lane::{LAMBDA_RUN_LIMIT_SECONDS, Lane};

pub use status::{RunId, RunStatus};
pub use timings::{RunTimings, millis};

#[cfg(test)]
pub(crate) mod tests;
