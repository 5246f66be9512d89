//! Executing a run: claim it under a lease, prepare a workspace, run the CLI under its
//! watchdogs while frames stream out, publish and archive what it did, finish the run.
//!
//! - `mod.rs`: the executor, its settings and ports, the claim, and every write of the run;
//! - `lease.rs`: the heartbeat that renews the lease and hears cancel requests;
//! - `attempt.rs`: one attempt in a workspace (session, CLI loop, outcome);
//! - `artifacts.rs`: what outlives the workspace (archive, transcript, session totals).

mod artifacts;
mod attempt;
mod lease;
mod memory;

pub use memory::MemorySettings;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::Instrument as _;
use uuid::Uuid;

use self::lease::Lease;
use super::optimistic::{self, Edit};
use crate::domain::{
    DEFAULT_SESSION_TTL_DAYS, LostRun, Run, RunError, RunId, RunOutcome, RunStatus, RunTimings, TransitionError,
    WorkflowRegistry, millis,
};
use crate::ports::{
    Cli, EpicEngine, FrameLogs, FrameSink, MemoryStore, MetricEvent, Metrics, ObjectStore, RunStore, SessionStore,
    Transcripts, Workspaces,
};
use crate::{Error, Result};

/// How an executor runs runs: its name in leases, the lease, the watchdogs. The defaults here
/// are the deployment's defaults.
#[derive(Clone, Debug)]
pub struct ExecutorSettings {
    /// Names this executor in leases.
    pub executor_id: String,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often the lease is renewed (and a cancel request looked for).
    pub heartbeat: Duration,
    /// No CLI output for this long ends the run as `timed_out`.
    pub idle_timeout: Duration,
    /// Ceiling on any run's total time, whatever its workflow asks (Lambda stops at 15 min).
    pub max_run_time: Duration,
    /// Between SIGTERM and SIGKILL when the CLI is stopped.
    pub stop_grace: Duration,
    /// After the CLI: the push, the log upload, the transcript and the archive share this, so a
    /// run ends before its host stops it (Lambda's 900 s less `max_run_time` is 60 s). The push
    /// comes first; an archive that does not fit is left out, never the run's end.
    pub finish_budget: Duration,
    /// Values never to appear in a frame (the model API key), besides the workspace's own.
    pub secrets: Vec<String>,
    /// How long a session lives after its last run.
    pub session_ttl: Duration,
    /// What runs take from, and leave in, the repository's memory.
    pub memory: MemorySettings,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            executor_id: format!("executor-{}", Uuid::new_v4()),
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_run_time: Duration::from_secs(840),
            stop_grace: Duration::from_secs(5),
            finish_budget: Duration::from_secs(45),
            secrets: Vec::new(),
            session_ttl: Duration::from_secs(DEFAULT_SESSION_TTL_DAYS as u64 * 86_400),
            memory: MemorySettings::default(),
        }
    }
}

/// What to do with the queue message that asked for the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Handled (executed, or nothing to do): delete the message.
    Done,
    /// Another executor holds a live lease: let the message come back later.
    Retry,
}

/// What an executor works with: the ports its function wires to AWS, Postgres, git and the CLI.
pub struct ExecutorPorts {
    /// The runs table.
    pub store: Arc<dyn RunStore>,
    /// The workflows this deployment runs.
    pub workflows: Arc<WorkflowRegistry>,
    /// Checkouts to run in.
    pub workspaces: Arc<dyn Workspaces>,
    /// The agent CLI.
    pub cli: Arc<dyn Cli>,
    /// The artifact store (frame logs, archives).
    pub objects: Arc<dyn ObjectStore>,
    /// The sessions table.
    pub sessions: Arc<dyn SessionStore>,
    /// Session transcripts, restored before and kept after a run.
    pub transcripts: Arc<dyn Transcripts>,
    /// Each run's own frame log.
    pub frame_logs: Arc<dyn FrameLogs>,
    /// Every frame goes to each, in this order.
    pub sinks: Vec<Arc<dyn FrameSink>>,
    /// The engine an epic step's run heartbeats and reports its end to.
    pub epics: Arc<dyn EpicEngine>,
    /// The repositories' memory; `None` runs without it.
    pub memory: Option<Arc<dyn MemoryStore>>,
    /// Where the run's measurements go.
    pub metrics: Arc<dyn Metrics>,
}

/// Runs the runs the queue asks for, one `execute` per message.
pub struct RunExecutor {
    ports: ExecutorPorts,
    settings: ExecutorSettings,
}

/// What a claim found.
enum Claim {
    Claimed(Box<Run>),
    Nothing,
    HeldElsewhere,
    /// A run that has ended: before this message came, or here because its executor was lost.
    Ended(Box<Run>),
}

/// What the claim's look at the stored run decided.
enum Found {
    Claimable,
    HeldElsewhere,
    Ended,
}

impl RunExecutor {
    /// An executor over these ports.
    pub fn new(ports: ExecutorPorts, settings: ExecutorSettings) -> Self {
        Self { ports, settings }
    }

    /// Claims and runs the run to its end (or hands it back when its lease is lost). A run that
    /// has already ended is only announced to its subscribers.
    pub async fn execute(&self, run_id: RunId) -> Result<Disposition> {
        let run = match self.claim(run_id).await? {
            Claim::Claimed(run) => *run,
            Claim::Nothing => return Ok(Disposition::Done),
            Claim::HeldElsewhere => return Ok(Disposition::Retry),
            Claim::Ended(run) => {
                // An executor on this machine may have died running it.
                self.ports.workspaces.discard(run_id).await;
                self.announce_end(run_id, run.status).await;
                // The first report may have been lost with its executor: the engine ignores a repeat.
                self.report_to_epic(&run).await;
                return Ok(Disposition::Done);
            }
        };
        // Every log line of the run names its trace.
        let trace_id = run.trace_id.as_ref().map(|t| t.to_string()).unwrap_or_default();
        let span = tracing::info_span!("run", %run_id, trace_id = %trace_id);
        self.execute_claimed(run).instrument(span).await
    }

    async fn execute_claimed(&self, mut run: Run) -> Result<Disposition> {
        let run_id = run.run_id;
        tracing::info!(%run_id, workflow = %run.workflow, attempt = run.attempts, "claimed");
        let waited = (Utc::now() - run.created_at).to_std().unwrap_or_default();
        run.timings = Some(RunTimings { queue_wait_ms: millis(waited), ..RunTimings::default() });
        self.ports.metrics.record(
            MetricEvent::new()
                .dimension("Workflow", &run.workflow)
                .count("RunsStarted", 1)
                .millis("QueueWait", millis(waited))
                .of_run(run_id, run.trace_id.as_ref()),
        );
        let settings = &self.settings;
        // An epic step's heartbeat also tells the engine the step is alive.
        let task = run.epic.as_ref().map(|link| (self.ports.epics.clone(), link.task_token.clone()));
        let lease = Lease::hold(
            self.ports.store.clone(),
            run_id,
            settings.executor_id.clone(),
            settings.lease,
            settings.heartbeat,
            task,
        );
        let result = self.run_claimed(&mut run, &lease).await;
        drop(lease);
        match &result {
            Err(Error::LeaseLost) => tracing::warn!(%run_id, "lease lost; the run is another executor's now"),
            Err(err) => {
                // Infrastructure failure after the claim: end the run rather than leave it leased.
                tracing::error!(%run_id, error = %err, "execution failed");
                let _ = self.fail(&mut run, RunError::new("executor_error", err.to_string())).await;
            }
            Ok(()) => {}
        }
        if run.status.is_terminal() {
            self.announce_end(run_id, run.status).await;
            self.report_to_epic(&run).await;
        } else {
            for sink in &self.ports.sinks {
                sink.abandon(run_id).await;
            }
        }
        match result {
            Ok(()) | Err(Error::LeaseLost) => Ok(Disposition::Done),
            Err(err) => Err(err),
        }
    }

    /// Takes the run under this executor's lease, if it is queued or its executor was lost.
    async fn claim(&self, run_id: RunId) -> Result<Claim> {
        let Some(mut run) = self.ports.store.get(run_id).await? else {
            tracing::warn!(%run_id, "message for an unknown run; dropped");
            return Ok(Claim::Nothing);
        };
        let (executor, lease) = (self.settings.executor_id.as_str(), self.settings.lease);
        let claimed = optimistic::update(self.ports.store.as_ref(), &mut run, |run| {
            let now = Utc::now();
            match run.status {
                RunStatus::Queued => {}
                RunStatus::Preparing | RunStatus::Running => {
                    let lost = run.lease_owner.clone();
                    match run.recover_lost(now) {
                        None => return Ok(Edit::Keep(Found::HeldElsewhere)),
                        Some(LostRun::Requeued) => {
                            tracing::warn!(%run_id, ?lost, "taking over a run whose executor was lost");
                        }
                        Some(LostRun::Failed) => return Ok(Edit::Write(Found::Ended)),
                    }
                }
                // Cancelled while queued, or a duplicate delivery: nothing to run, but whoever
                // subscribed meanwhile still needs the end.
                _ => return Ok(Edit::Keep(Found::Ended)),
            }
            run.claim(executor, now + lease, now)?;
            Ok(Edit::Write(Found::Claimable))
        })
        .await;
        match claimed {
            Ok(Found::Claimable) => Ok(Claim::Claimed(Box::new(run))),
            Ok(Found::HeldElsewhere) | Err(Error::Conflict) => Ok(Claim::HeldElsewhere),
            Ok(Found::Ended) => Ok(Claim::Ended(Box::new(run))),
            Err(err) => Err(err),
        }
    }

    /// Tells every sink the run has ended.
    async fn announce_end(&self, run_id: RunId, status: RunStatus) {
        for sink in &self.ports.sinks {
            sink.finish(run_id, status).await;
        }
    }

    /// Tells the epic step's waiting task how its run ended: success for a completed run, a
    /// failure named by the run's error code otherwise (the epic reads the run for the rest).
    async fn report_to_epic(&self, run: &Run) {
        let Some(link) = &run.epic else { return };
        let engine = &self.ports.epics;
        let sent = match &run.error {
            None if run.status == RunStatus::Completed => {
                let output = serde_json::json!({"kind": "run_ended", "run_id": run.run_id, "status": run.status});
                engine.succeed(&link.task_token, &output).await
            }
            error => {
                let (code, message) = error.as_ref().map_or((run.status.as_str(), "the run did not complete"), |e| {
                    (e.code.as_str(), e.message.as_str())
                });
                engine.fail(&link.task_token, code, message).await
            }
        };
        match sent {
            Ok(answer) => tracing::info!(run_id = %run.run_id, epic_id = %link.epic_id, ?answer, "epic step reported"),
            // The step's heartbeat timeout ends it if this never arrives.
            Err(err) => tracing::warn!(run_id = %run.run_id, error = %err, "could not report to the epic"),
        }
    }

    /// Applies `change` and writes it conditionally; on a concurrent write (a cancel request)
    /// re-reads and applies it again, unless the run has meanwhile passed to another executor.
    /// The timings gathered so far travel with every write.
    async fn save(&self, run: &mut Run, change: impl Fn(&mut Run) -> Result<(), TransitionError>) -> Result<()> {
        let me = self.settings.executor_id.as_str();
        let timings = run.timings.clone();
        optimistic::update(self.ports.store.as_ref(), run, |next| {
            if next.lease_owner.as_deref() != Some(me) && !next.status.is_terminal() {
                return Err(Error::LeaseLost);
            }
            change(next)?;
            if timings.is_some() {
                next.timings = timings.clone();
            }
            Ok(Edit::Write(()))
        })
        .await
    }

    /// Ends the run as failed with `error`: the one way a run fails here.
    async fn fail(&self, run: &mut Run, error: RunError) -> Result<()> {
        tracing::warn!(run_id = %run.run_id, code = %error.code, "run failed");
        self.end(run, RunOutcome::failed(error), |_| {}).await
    }

    /// Ends the run with `outcome` (and `also`), in one write that also names the failure
    /// memory it left, so whoever sees the run ended sees that too.
    async fn end(&self, run: &mut Run, outcome: RunOutcome, also: impl Fn(&mut Run)) -> Result<()> {
        let mut ended = run.clone();
        let failure = match ended.finish(outcome.clone(), Utc::now()) {
            Ok(()) => self.remember_failure(&ended).await,
            Err(_) => None,
        };
        self.save(run, |r| {
            r.finish(outcome.clone(), Utc::now())?;
            also(r);
            if let Some(id) = failure {
                r.memory_produced.push(id);
            }
            Ok(())
        })
        .await
    }
}
