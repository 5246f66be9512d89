//! A run and its state machine (ARCHITECTURE.md §4).
//!
//! Every change of status goes through [`Run::transition`], which refuses what the state machine
//! forbids and bumps `version`; stores write the result conditionally on the previous version, so a
//! duplicate delivery, a crash-retry or a late cancel can never corrupt a run.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Owner, ValidRunRequest};

/// A run id: a UUID v7, so ids sort by creation time (newest-first listing needs no extra index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Uuid);

impl RunId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Preparing,
    Running,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] =
        [Self::Queued, Self::Preparing, Self::Running, Self::Completed, Self::Failed, Self::Cancelled, Self::TimedOut];

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

/// Why a run failed: a machine-readable code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    pub code: String,
    pub message: String,
}

impl RunError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }
}

/// What became of a run whose executor was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostRun {
    Requeued,
    Failed,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("a {from} run cannot become {to}")]
pub struct TransitionError {
    pub from: RunStatus,
    pub to: RunStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: RunId,
    pub owner: Owner,
    pub workflow: String,
    pub branch: String,
    pub repository_url: String,
    pub message: String,
    pub max_turns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    /// Caller's free-form JSON, kept as text so DynamoDB stores it verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The request's override of the workflow's `auto_commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_commit: Option<bool>,
    pub status: RunStatus,
    #[serde(default)]
    pub cancel_requested: bool,
    /// Bumped by every change; the optimistic-concurrency token of conditional writes and the
    /// ordering key of the Postgres projection.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_turns: Option<u32>,
    /// The executor holding the run and until when; renewed by heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// How many times an executor claimed the run.
    #[serde(default)]
    pub attempts: u32,
    /// The CLI's `usage` object from its `result` frame, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Commits the run added to its branch, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_stats: Option<DiffStats>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffStats {
    pub files_changed: u32,
    pub insertions: u32,
    pub deletions: u32,
}

/// How a run ended, as the executor saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub result_summary: Option<String>,
    pub error: Option<RunError>,
    pub session_id: Option<Uuid>,
    pub cost_usd: Option<f64>,
    pub num_turns: Option<u32>,
    pub usage_json: Option<String>,
    pub duration_ms: Option<u64>,
    pub exit_code: Option<i32>,
}

impl RunOutcome {
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
        }
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    Requested,
    AlreadyRequested,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use RunStatus::*;

    pub(crate) fn run_in(status: RunStatus) -> Run {
        let request = ValidRunRequest {
            workflow: "implement".into(),
            message: "hi".into(),
            branch: crate::domain::BranchName::parse("main").unwrap(),
            max_turns: 2,
            session_id: None,
            repository_url: "https://example.com/r.git".into(),
            metadata_json: None,
            auto_commit: None,
        };
        Run { status, ..Run::queued(Owner::new("team-a"), request, None, Utc::now()) }
    }

    const ALLOWED: &[(RunStatus, RunStatus)] = &[
        (Queued, Preparing),
        (Queued, Cancelled),
        (Queued, Failed),
        (Preparing, Running),
        (Preparing, Queued),
        (Preparing, Failed),
        (Preparing, Cancelled),
        (Preparing, TimedOut),
        (Running, Completed),
        (Running, Failed),
        (Running, Cancelled),
        (Running, TimedOut),
    ];

    #[test]
    fn a_lost_run_goes_again_before_the_cli_started_and_fails_after() {
        let now = Utc::now();
        let mut preparing = run_in(Preparing);
        preparing.lease_owner = Some("executor-a".into());
        preparing.lease_expires_at = Some(now + chrono::Duration::seconds(30));
        assert_eq!(preparing.recover_lost(now), None, "the lease still holds");
        preparing.lease_expires_at = Some(now - chrono::Duration::seconds(1));
        assert_eq!(preparing.recover_lost(now), Some(LostRun::Requeued));
        assert_eq!((preparing.status, preparing.lease_owner.as_deref()), (Queued, None));

        let mut running = run_in(Running);
        running.lease_expires_at = Some(now - chrono::Duration::seconds(1));
        assert_eq!(running.recover_lost(now), Some(LostRun::Failed));
        assert_eq!((running.status, running.error.map(|e| e.code)), (Failed, Some("executor_lost".to_owned())));

        assert_eq!(run_in(Completed).recover_lost(now), None, "an ended run has no lease to lose");
    }

    #[test]
    fn every_pair_of_states_is_allowed_exactly_when_the_table_says_so() {
        for from in RunStatus::ALL {
            for to in RunStatus::ALL {
                let mut run = run_in(from);
                let result = run.transition(to, Utc::now());
                if ALLOWED.contains(&(from, to)) {
                    assert!(result.is_ok(), "{from} -> {to} should be allowed");
                    assert_eq!(run.status, to);
                    assert_eq!(run.version, 2, "{from} -> {to} bumps the version");
                } else {
                    assert_eq!(result, Err(TransitionError { from, to }), "{from} -> {to} should be refused");
                    assert_eq!(run.status, from, "a refused transition leaves the run as it was");
                    assert_eq!(run.version, 1);
                }
            }
        }
    }

    #[test]
    fn terminal_states_accept_nothing() {
        for from in [Completed, Failed, Cancelled, TimedOut] {
            assert!(from.is_terminal());
            assert!(RunStatus::ALL.iter().all(|to| !from.can_become(*to)));
        }
        for live in [Queued, Preparing, Running] {
            assert!(!live.is_terminal());
        }
    }

    #[test]
    fn transitions_stamp_start_and_finish_times() {
        let mut run = run_in(Queued);
        run.transition(Preparing, Utc::now()).unwrap();
        assert!(run.started_at.is_none());
        run.transition(Running, Utc::now()).unwrap();
        assert!(run.started_at.is_some());
        assert!(run.finished_at.is_none());
        run.transition(Completed, Utc::now()).unwrap();
        assert!(run.finished_at.is_some());
    }

    #[test]
    fn fail_records_the_reason_only_when_the_transition_is_legal() {
        let mut run = run_in(Queued);
        run.fail(RunError::new("enqueue_failed", "queue down"), Utc::now()).unwrap();
        assert_eq!(run.status, Failed);
        assert_eq!(run.error.as_ref().unwrap().code, "enqueue_failed");

        let mut done = run_in(Completed);
        assert!(done.fail(RunError::new("x", "y"), Utc::now()).is_err());
        assert!(done.error.is_none());
    }

    #[test]
    fn cancelling_a_queued_run_ends_it_at_once() {
        let mut run = run_in(Queued);
        assert_eq!(run.request_cancel(Utc::now()), Ok(CancelOutcome::Cancelled));
        assert_eq!(run.status, Cancelled);
        assert!(run.finished_at.is_some());
    }

    #[test]
    fn cancelling_a_live_run_sets_the_flag_once() {
        for status in [Preparing, Running] {
            let mut run = run_in(status);
            assert_eq!(run.request_cancel(Utc::now()), Ok(CancelOutcome::Requested));
            assert_eq!(run.status, status);
            assert!(run.cancel_requested);
            assert_eq!(run.version, 2);
            assert_eq!(run.request_cancel(Utc::now()), Ok(CancelOutcome::AlreadyRequested));
            assert_eq!(run.version, 2, "a repeated cancel writes nothing");
        }
    }

    #[test]
    fn cancelling_a_finished_run_is_refused() {
        for status in [Completed, Failed, Cancelled, TimedOut] {
            let mut run = run_in(status);
            assert_eq!(run.request_cancel(Utc::now()), Err(TransitionError { from: status, to: Cancelled }));
        }
    }

    #[test]
    fn claiming_takes_a_lease_and_counts_the_attempt() {
        let now = Utc::now();
        let mut run = run_in(Queued);
        run.claim("exec-1", now + chrono::Duration::seconds(30), now).unwrap();
        assert_eq!(run.status, Preparing);
        assert_eq!(run.lease_owner.as_deref(), Some("exec-1"));
        assert_eq!(run.attempts, 1);
        assert!(!run.lease_expired(now));
        assert!(run.lease_expired(now + chrono::Duration::seconds(31)));
        let mut taken = run_in(Running);
        assert!(taken.claim("exec-2", now, now).is_err(), "a claimed run cannot be claimed again");
    }

    #[test]
    fn finishing_records_the_outcome_and_drops_the_lease() {
        let now = Utc::now();
        let mut run = run_in(Running);
        run.lease_owner = Some("exec".into());
        let session = Uuid::now_v7();
        let outcome = RunOutcome {
            status: Completed,
            result_summary: Some("done".into()),
            error: None,
            session_id: Some(session),
            cost_usd: Some(0.25),
            num_turns: Some(3),
            usage_json: Some("{}".into()),
            duration_ms: Some(1200),
            exit_code: Some(0),
        };
        run.finish(outcome, now).unwrap();
        assert_eq!((run.status, run.session_id, run.num_turns), (Completed, Some(session), Some(3)));
        assert!(run.lease_owner.is_none() && run.finished_at.is_some());
        assert!(!run.lease_expired(now), "a finished run has no lease to expire");
        let mut queued = run_in(Queued);
        assert!(queued.finish(RunOutcome::failed(RunError::new("x", "y")), now).is_ok(), "queued may fail");
        let mut done = run_in(Completed);
        assert!(done.finish(RunOutcome::failed(RunError::new("x", "y")), now).is_err());
    }

    #[test]
    fn run_ids_are_v7_and_time_ordered() {
        let a = RunId::new();
        let b = RunId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
    }

    #[test]
    fn status_names_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("done".parse::<RunStatus>().is_err());
    }
}
