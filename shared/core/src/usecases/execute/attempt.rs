//! One attempt at a claimed run: a workspace, the session to continue or start, the CLI under
//! its watchdogs while frames stream out, and the outcome its `result` frame (or the reason it
//! was stopped) decides.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::RunExecutor;
use super::lease::{Lease, StopReason, stop_requested};
use crate::claude::{CliInvocation, CliSummary, SessionMode};
use crate::domain::{
    Frame, FrameData, Redactor, Run, RunError, RunId, RunOutcome, RunStatus, RunTimings, Workflow, millis, object_keys,
};
use crate::ports::{MetricEvent, MetricKind, PublishedChanges, Workspace};
use crate::usecases::FrameRecorder;
use crate::{Error, Result};

/// Why the CLI loop stopped.
enum Ended {
    Exited,
    Idle,
    OutOfTime(Duration),
    Cancelled,
    LeaseLost,
}

/// What the CLI did, as far as the run's outcome is concerned.
struct CliRun {
    ended: Ended,
    summary: CliSummary,
    /// Started → first line, if there was one.
    first_frame: Option<Duration>,
    /// Started → ended, frames stored.
    took: Duration,
    /// The complete frame log, to upload.
    log: PathBuf,
}

/// How long a CLI that printed its `result` may take to exit before it is stopped.
const RESULT_GRACE: Duration = Duration::from_secs(10);

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The run's timings, started if need be.
fn timings(run: &mut Run) -> &mut RunTimings {
    run.timings.get_or_insert_with(RunTimings::default)
}

impl RunExecutor {
    pub(super) async fn run_claimed(&self, run: &mut Run, lease: &Lease) -> Result<()> {
        let Some(workflow) = self.ports.workflows.get(&run.workflow).cloned() else {
            let error = RunError::new("unknown_workflow", format!("workflow {} is not deployed here", run.workflow));
            return self.fail(run, error).await;
        };
        let preparing = tokio::time::Instant::now();
        let workspace = match self.ports.workspaces.prepare(run, &workflow).await {
            Ok(workspace) => workspace,
            Err(err) => return self.fail(run, err.into_run_error("workspace_failed")).await,
        };
        timings(run).workspace_ms = millis(preparing.elapsed());
        let result = self.run_in_workspace(run, &workflow, &workspace, lease).await;
        self.ports.workspaces.cleanup(&workspace, run.run_id).await;
        result
    }

    async fn run_in_workspace(
        &self,
        run: &mut Run,
        workflow: &Workflow,
        workspace: &Workspace,
        lease: &Lease,
    ) -> Result<()> {
        let restoring = tokio::time::Instant::now();
        let session = self.session_mode(run, workspace).await;
        let restored = restoring.elapsed();
        let workspace_ms = timings(run).workspace_ms.unwrap_or(0);
        timings(run).workspace_ms = millis(restored).map(|ms| ms + workspace_ms);
        let session = match session {
            Ok(session) => session,
            Err(Error::RunFailed(error)) => return self.fail(run, error).await,
            Err(err) => return Err(err),
        };
        match lease.requested() {
            None => {}
            Some(StopReason::LeaseLost) => return Err(Error::LeaseLost),
            Some(StopReason::Cancel) => return self.finish_stopped(run, Ended::Cancelled, CliSummary::default()).await,
        }
        let (remembered, given) = self.recall(run).await;
        self.start_running(run, &session, &workspace.base_commit, &given).await?;
        if run.cancel_requested {
            // Asked while the workspace was being prepared (the re-read on conflict brought it).
            return self.finish_stopped(run, Ended::Cancelled, CliSummary::default()).await;
        }
        let redactor = Redactor::new(workspace.secrets.iter().chain(&self.settings.secrets));
        let mut invocation =
            CliInvocation::new(workflow, run.max_turns, session, run.message.clone(), workspace.mcp_config.clone())
                .with_budget(run.max_budget_usd);
        invocation.append_system_prompt.push_str(&remembered);
        invocation.time_limit =
            Some(Duration::from_secs(workflow.config.timeout_seconds).min(self.settings.max_run_time));
        let cli = match self.run_cli(run, workflow, workspace, &invocation, &redactor, lease).await {
            Ok(cli) => cli,
            Err(Error::RunFailed(error)) => return self.fail(run, error).await,
            Err(err) => return Err(err),
        };
        let phases = timings(run);
        (phases.first_frame_ms, phases.cli_ms) = (cli.first_frame.and_then(millis), millis(cli.took));
        // From here on the run has a budget of its own, inside what its host allows.
        let finish_by = tokio::time::Instant::now() + self.settings.finish_budget;
        // The frame log goes up while the rest finishes: nothing after it needs it.
        let log_upload = self.upload_log(run.run_id, cli.log, finish_by);
        if !matches!(cli.ended, Ended::Exited) {
            log_upload.await;
            return self.finish_stopped(run, cli.ended, cli.summary).await;
        }
        let frames = cli.summary.frames;
        let result_text = cli.summary.result.as_ref().and_then(|r| r.result.clone());
        let ((), (outcome, changes)) = tokio::join!(
            log_upload,
            self.publish_and_keep(run, workflow, workspace, &redactor, cli.summary, finish_by)
        );
        let proposed = match (&result_text, outcome.status) {
            (Some(text), RunStatus::Completed) => self.remember_block(run, text).await,
            _ => Vec::new(),
        };
        tracing::info!(run_id = %run.run_id, status = %outcome.status, frames, "run finished");
        self.end(run, outcome, |r| {
            r.commits = changes.commits.clone();
            r.diff_stats = changes.diff_stats;
            r.memory_produced = proposed.clone();
        })
        .await
    }

    /// What a CLI that exited leaves: its outcome (a failed push fails it), the pushed changes,
    /// and the artifacts that outlive the workspace.
    async fn publish_and_keep(
        &self,
        run: &mut Run,
        workflow: &Workflow,
        workspace: &Workspace,
        redactor: &Redactor,
        summary: CliSummary,
        finish_by: tokio::time::Instant,
    ) -> (RunOutcome, PublishedChanges) {
        let mut outcome = summary.outcome();
        let mut changes = PublishedChanges::default();
        if outcome.status == RunStatus::Completed {
            let publishing = tokio::time::Instant::now();
            let commit = run.auto_commit.unwrap_or(workflow.config.auto_commit);
            let publish = self.ports.workspaces.publish_changes(workspace, run, commit);
            match tokio::time::timeout_at(finish_by, publish).await {
                Ok(Ok(published)) => changes = published,
                Ok(Err(err)) => {
                    outcome.status = RunStatus::Failed;
                    outcome.error = Some(err.into_run_error("publish_failed"));
                }
                Err(_) => {
                    outcome.status = RunStatus::Failed;
                    outcome.error = Some(RunError::new(
                        "publish_timeout",
                        format!(
                            "publishing the run's changes took longer than the {} s a run has after its CLI; \
                             the branch may or may not have its commits",
                            self.settings.finish_budget.as_secs()
                        ),
                    ));
                }
            }
            timings(run).publish_ms = millis(publishing.elapsed());
        }
        let keeping = tokio::time::Instant::now();
        self.keep_artifacts(run, &outcome, workspace, redactor, finish_by).await;
        timings(run).artifacts_ms = millis(keeping.elapsed());
        (outcome, changes)
    }

    /// A run with a session continues it when it has a transcript, or starts it under the id
    /// reserved up front; a run without one starts a new session of its own.
    async fn session_mode(&self, run: &Run, workspace: &Workspace) -> Result<SessionMode> {
        let Some(id) = run.session_id else { return Ok(SessionMode::New(Uuid::new_v4())) };
        match self.ports.sessions.get(id).await? {
            Some(session) if session.has_transcript() => {
                Ok(SessionMode::Resume(self.ports.transcripts.restore(&session, workspace).await?))
            }
            Some(_) => Ok(SessionMode::New(id)),
            None => Err(Error::run_failed("unknown_session", format!("session {id} no longer exists"))),
        }
    }

    /// `preparing → running`. The caller learns the session id as soon as the CLI starts; the
    /// lease is renewed in the same write, since this put replaces the whole item.
    async fn start_running(
        &self,
        run: &mut Run,
        session: &SessionMode,
        base_commit: &str,
        memory_used: &[Uuid],
    ) -> Result<()> {
        let new_session = match session {
            SessionMode::New(id) if run.session_id.is_none() => Some(*id),
            _ => None,
        };
        let lease = chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::seconds(60));
        self.save(run, |r| {
            let now = Utc::now();
            r.transition(RunStatus::Running, now)?;
            r.lease_expires_at = Some(now + lease);
            r.base_commit = Some(base_commit.to_owned());
            r.memory_used = memory_used.to_vec();
            if new_session.is_some() {
                r.session_id = new_session;
            }
            Ok(())
        })
        .await
    }

    /// Runs the CLI until it exits or a watchdog or stop request ends it, recording every line
    /// as a frame; then uploads the frame log. `Error::RunFailed` if the CLI could not start.
    async fn run_cli(
        &self,
        run: &Run,
        workflow: &Workflow,
        workspace: &Workspace,
        invocation: &CliInvocation,
        redactor: &Redactor,
        lease: &Lease,
    ) -> Result<CliRun> {
        let mut stop = lease.stop.clone();
        let log = self.ports.frame_logs.open(workspace).await?;
        let log_path = log.path().to_path_buf();
        let recorder = FrameRecorder::start(self.ports.sinks.clone(), log);
        let cli_started = tokio::time::Instant::now();
        let mut first_frame = None;
        let mut process = match self.ports.cli.start(workspace, invocation).await {
            Ok(process) => process,
            Err(err) => {
                recorder.finish().await?;
                return Err(Error::RunFailed(err.into_run_error("cli_start_failed")));
            }
        };
        // Counted from the claim: preparation and the CLI share one budget, so Lambda never
        // has to cut the run off.
        let time_limit = Duration::from_secs(workflow.config.timeout_seconds).min(self.settings.max_run_time);
        let deadline = lease.started + time_limit;
        let mut summary = CliSummary::default();
        let mut seq = 0u64;
        // Once the CLI has said how the run ended, it gets a moment to exit, not the idle timeout:
        // a tool it left running must not hold a finished run open.
        let mut exit_by: Option<tokio::time::Instant> = None;
        let ended = loop {
            tokio::select! {
                line = tokio::time::timeout(self.settings.idle_timeout, process.next_line()) => match line {
                    Err(_) => break Ended::Idle,
                    Ok(Ok(Some(line))) => {
                        seq += 1;
                        first_frame.get_or_insert_with(|| cli_started.elapsed());
                        // Cut at the cap or not is decided before redaction: a secret replaced by a
                        // shorter mask must not make a whole line look cut.
                        let cut = line.total_bytes > line.bytes.len();
                        let bytes = redactor.bytes(line.bytes);
                        let total = if cut { line.total_bytes.max(bytes.len()) } else { bytes.len() };
                        let frame =
                            Frame::from_line(run.run_id, seq, &bytes, total, Utc::now()).in_trace(run.trace_id.clone());
                        if let FrameData::Json(data) = &frame.data {
                            summary.observe(&frame.kind, frame.subtype.as_deref(), data);
                        }
                        if summary.result.is_some() && exit_by.is_none() {
                            exit_by = Some(tokio::time::Instant::now() + RESULT_GRACE);
                        }
                        // A stalled sink must not hold the watchdogs off.
                        if tokio::time::timeout_at(deadline, recorder.record(frame, bytes.len())).await.is_err() {
                            break Ended::OutOfTime(time_limit);
                        }
                    }
                    Ok(Ok(None)) => break Ended::Exited,
                    Ok(Err(err)) => {
                        tracing::error!(run_id = %run.run_id, error = %err, "reading CLI output failed");
                        break Ended::Exited;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break Ended::OutOfTime(time_limit),
                _ = sleep_until_some(exit_by) => {
                    tracing::warn!(run_id = %run.run_id, "the CLI reported its result but did not exit; stopping it");
                    break Ended::Exited;
                }
                reason = stop_requested(&mut stop) => {
                    break if reason == StopReason::LeaseLost { Ended::LeaseLost } else { Ended::Cancelled };
                }
            }
        };
        // Always stop the group: even after a clean exit, a tool may have left children behind.
        process.stop(self.settings.stop_grace).await;
        summary.exit_code = process.wait().await;
        summary.stderr_tail = redactor.text(&process.stderr_tail());
        summary.metered = process.model_usage();
        if let Some(usage) = &summary.metered {
            tracing::info!(
                run_id = %run.run_id,
                requests = usage.requests,
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                cost_usd = usage.cost_usd,
                refused_over_budget = usage.refused_over_budget,
                "model calls as the run's endpoint counted them"
            );
        }
        summary.frames = seq;
        let report = recorder.finish().await?;
        if report.failed_batches > 0 {
            tracing::error!(run_id = %run.run_id, failed = report.failed_batches, "some frame batches did not reach every sink");
        }
        self.ports.metrics.record(
            MetricEvent::new()
                .dimension("Workflow", &run.workflow)
                .count("Frames", report.frames)
                .with("FrameBytes", report.bytes as f64, MetricKind::Bytes)
                .count("FrameSinkRetries", report.retries)
                .count("FrameSinkDrops", report.failed_batches)
                .of_run(run.run_id, run.trace_id.as_ref()),
        );
        let took = cli_started.elapsed();
        Ok(CliRun { ended, summary, first_frame, took, log: log_path })
    }

    async fn upload_log(&self, run_id: RunId, path: PathBuf, finish_by: tokio::time::Instant) {
        let key = object_keys::run_log(run_id);
        match tokio::time::timeout_at(finish_by, self.ports.objects.put_file(&key, &path, "application/x-ndjson")).await
        {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(%run_id, error = %err, "uploading the frame log failed"),
            // Postgres has every frame (or back-fills it from this log before the CLI's end).
            Err(_) => tracing::error!(%run_id, "uploading the frame log did not fit the run's finish budget"),
        }
    }

    /// Ends a run the CLI did not finish by itself: cancelled or timed out. A lost lease writes
    /// nothing: the run belongs to whoever took it over.
    async fn finish_stopped(&self, run: &mut Run, ended: Ended, summary: CliSummary) -> Result<()> {
        let mut outcome = summary.outcome();
        outcome.result_summary = None;
        (outcome.status, outcome.error) = match ended {
            Ended::LeaseLost => return Err(Error::LeaseLost),
            Ended::Cancelled => (RunStatus::Cancelled, None),
            Ended::Idle => (
                RunStatus::TimedOut,
                Some(RunError::new(
                    "idle_timeout",
                    format!("no output for {} s", self.settings.idle_timeout.as_secs()),
                )),
            ),
            Ended::OutOfTime(limit) => (
                RunStatus::TimedOut,
                Some(RunError::new("run_timeout", format!("the run exceeded {} s", limit.as_secs()))),
            ),
            Ended::Exited => unreachable!("a CLI that exited is finished from its result frame"),
        };
        // What was running when it was stopped, for the caller and the failure's fingerprint.
        outcome.error = outcome.error.map(|e| e.with_tool(summary.failing_tool()));
        tracing::info!(run_id = %run.run_id, status = %outcome.status, "run stopped");
        self.end(run, outcome, |_| {}).await
    }
}
