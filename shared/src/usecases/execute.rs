//! Executing a run: claim it under a lease, prepare a workspace, run the CLI under its
//! watchdogs while frames stream out, publish and archive what it did, finish the run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use uuid::Uuid;

use super::frames::FrameRecorder;
use crate::claude::{CliInvocation, CliSummary, SessionMode, encoded_project_dir};
use crate::domain::{
    DEFAULT_SESSION_TTL_DAYS, Frame, LostRun, Run, RunError, RunId, RunOutcome, RunStatus, Session, SessionUse,
    TransitionError, WorkflowRegistry,
};
use crate::ports::{AgentCli, FrameSink, ObjectStore, PublishedChanges, RunStore, SessionStore, Workspace, Workspaces};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct ExecutorSettings {
    /// Names this executor in leases.
    pub executor_id: String,
    pub lease: Duration,
    pub heartbeat: Duration,
    /// No CLI output for this long ends the run as `timed_out`.
    pub idle_timeout: Duration,
    /// Ceiling on any run's total time, whatever its workflow asks (Lambda stops at 15 min).
    pub max_run_time: Duration,
    pub stop_grace: Duration,
    pub frame_flush: Duration,
    /// Values never to appear in a frame (the model API key), besides the workspace's own.
    pub secrets: Vec<String>,
    /// How long a session lives after its last run.
    pub session_ttl: Duration,
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
            frame_flush: Duration::from_millis(100),
            secrets: Vec::new(),
            session_ttl: Duration::from_secs(DEFAULT_SESSION_TTL_DAYS as u64 * 86_400),
        }
    }
}

/// What to do with the queue message that asked for the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Handled (executed, or nothing to do): delete the message.
    Done,
    /// Another executor holds a live lease: let the message come back later.
    Retry,
}

/// What an executor works with: the ports its function wires to AWS, Postgres, git and the CLI.
pub struct ExecutorPorts {
    pub store: Arc<dyn RunStore>,
    pub workflows: Arc<WorkflowRegistry>,
    pub workspaces: Arc<dyn Workspaces>,
    pub cli: Arc<dyn AgentCli>,
    pub objects: Arc<dyn ObjectStore>,
    pub sessions: Arc<dyn SessionStore>,
    /// Every frame goes to each, in this order.
    pub sinks: Vec<Arc<dyn FrameSink>>,
}

pub struct RunExecutor {
    store: Arc<dyn RunStore>,
    workflows: Arc<WorkflowRegistry>,
    workspaces: Arc<dyn Workspaces>,
    cli: Arc<dyn AgentCli>,
    objects: Arc<dyn ObjectStore>,
    sessions: Arc<dyn SessionStore>,
    sinks: Vec<Arc<dyn FrameSink>>,
    settings: ExecutorSettings,
}

enum Claim {
    Claimed(Box<Run>),
    Nothing,
    HeldElsewhere,
    /// A run that has ended: before this message came, or here because its executor was lost.
    Ended(RunStatus),
}

/// Why the CLI loop stopped.
enum Ended {
    Exited,
    Idle,
    OutOfTime(Duration),
    Cancelled,
    LeaseLost,
}

impl RunExecutor {
    pub fn new(ports: ExecutorPorts, settings: ExecutorSettings) -> Self {
        let ExecutorPorts { store, workflows, workspaces, cli, objects, sessions, sinks } = ports;
        Self { store, workflows, workspaces, cli, objects, sessions, sinks, settings }
    }

    pub async fn execute(&self, run_id: RunId) -> Result<Delivery> {
        let mut run = match self.claim(run_id).await? {
            Claim::Claimed(run) => *run,
            Claim::Nothing => return Ok(Delivery::Done),
            Claim::HeldElsewhere => return Ok(Delivery::Retry),
            Claim::Ended(status) => {
                self.notify_finished(run_id, status).await;
                return Ok(Delivery::Done);
            }
        };
        let started = tokio::time::Instant::now();
        tracing::info!(%run_id, workflow = %run.workflow, attempt = run.attempts, "claimed");
        let (cancel_tx, cancel_rx) = watch::channel(Stop::No);
        // Dropped with this future: an executor that is itself aborted stops renewing its lease.
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            self.store.clone(),
            run_id,
            self.settings.executor_id.clone(),
            self.settings.lease,
            self.settings.heartbeat,
            cancel_tx,
        )));
        let result = self.run_claimed(&mut run, cancel_rx, started).await;
        drop(_heartbeat);
        match &result {
            Err(Error::LeaseLost) => tracing::warn!(%run_id, "lease lost; the run is another executor's now"),
            Err(err) => {
                // Infrastructure failure after the claim: end the run rather than leave it leased.
                tracing::error!(%run_id, error = %err, "execution failed");
                let error = RunError::new("executor_error", err.to_string());
                let _ = self.save(&mut run, |r| r.finish(RunOutcome::failed(error.clone()), Utc::now())).await;
            }
            Ok(()) => {}
        }
        if run.status.is_terminal() {
            self.notify_finished(run_id, run.status).await;
        } else {
            for sink in &self.sinks {
                sink.abandon(run_id).await;
            }
        }
        match result {
            Ok(()) | Err(Error::LeaseLost) => Ok(Delivery::Done),
            Err(err) => Err(err),
        }
    }

    async fn claim(&self, run_id: RunId) -> Result<Claim> {
        for _ in 0..5 {
            let Some(mut run) = self.store.get(run_id).await? else {
                tracing::warn!(%run_id, "message for an unknown run; dropped");
                return Ok(Claim::Nothing);
            };
            let expected = run.version;
            let now = Utc::now();
            match run.status {
                RunStatus::Queued => {}
                RunStatus::Preparing | RunStatus::Running => {
                    let lost = run.lease_owner.clone();
                    match run.recover_lost(now) {
                        None => return Ok(Claim::HeldElsewhere),
                        Some(LostRun::Requeued) => {
                            tracing::warn!(%run_id, ?lost, "taking over a run whose executor was lost");
                        }
                        Some(LostRun::Failed) => match self.store.update(&run, expected).await {
                            Ok(()) => return Ok(Claim::Ended(run.status)),
                            Err(Error::Conflict) => return Ok(Claim::Nothing),
                            Err(err) => return Err(err),
                        },
                    }
                }
                // Cancelled while queued, or a duplicate delivery: nothing to run, but whoever
                // subscribed meanwhile still needs the end.
                status => return Ok(Claim::Ended(status)),
            }
            run.claim(&self.settings.executor_id, now + self.settings.lease, now)?;
            match self.store.update(&run, expected).await {
                Ok(()) => return Ok(Claim::Claimed(Box::new(run))),
                Err(Error::Conflict) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(Claim::HeldElsewhere)
    }

    async fn notify_finished(&self, run_id: RunId, status: RunStatus) {
        for sink in &self.sinks {
            sink.finish(run_id, status).await;
        }
    }

    /// Applies `change` and writes it conditionally; on a concurrent write (a cancel request)
    /// re-reads and applies it again, unless the run has meanwhile passed to another executor.
    async fn save(&self, run: &mut Run, change: impl Fn(&mut Run) -> Result<(), TransitionError>) -> Result<()> {
        for _ in 0..5 {
            if run.lease_owner.as_deref() != Some(self.settings.executor_id.as_str()) && !run.status.is_terminal() {
                return Err(Error::LeaseLost);
            }
            let expected = run.version;
            let mut next = run.clone();
            change(&mut next)?;
            match self.store.update(&next, expected).await {
                Ok(()) => {
                    *run = next;
                    return Ok(());
                }
                Err(Error::Conflict) => {
                    *run =
                        self.store.get(run.run_id).await?.ok_or_else(|| Error::RunNotFound(run.run_id.to_string()))?;
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::Conflict)
    }

    async fn run_claimed(
        &self,
        run: &mut Run,
        stop: watch::Receiver<Stop>,
        started: tokio::time::Instant,
    ) -> Result<()> {
        let Some(workflow) = self.workflows.get(&run.workflow).cloned() else {
            let error = RunError::new("unknown_workflow", format!("workflow {} is not deployed here", run.workflow));
            return self.save(run, |r| r.finish(RunOutcome::failed(error.clone()), Utc::now())).await;
        };
        let workspace = match self.workspaces.prepare(run, &workflow).await {
            Ok(ws) => ws,
            Err(err) => {
                let error = match err {
                    Error::RunFailed(e) => e,
                    other => RunError::new("workspace_failed", other.to_string()),
                };
                tracing::warn!(run_id = %run.run_id, code = %error.code, "workspace preparation failed");
                return self.save(run, |r| r.finish(RunOutcome::failed(error.clone()), Utc::now())).await;
            }
        };
        let result = self.run_in_workspace(run, &workflow, &workspace, stop, started).await;
        self.workspaces.cleanup(&workspace, run.run_id).await;
        result
    }

    async fn run_in_workspace(
        &self,
        run: &mut Run,
        workflow: &crate::domain::Workflow,
        workspace: &Workspace,
        mut stop: watch::Receiver<Stop>,
        started: tokio::time::Instant,
    ) -> Result<()> {
        // A run with a session continues it when it has a transcript, or starts it under the
        // id reserved up front; a run without one starts a new session of its own.
        let session = match run.session_id {
            Some(id) => match self.sessions.get(id).await? {
                Some(existing) if existing.has_transcript() => {
                    match self.restore_transcript(&existing, workspace).await {
                        Ok(cli_id) => SessionMode::Resume(cli_id),
                        Err(Error::RunFailed(error)) => {
                            return self.save(run, |r| r.finish(RunOutcome::failed(error.clone()), Utc::now())).await;
                        }
                        Err(other) => return Err(other),
                    }
                }
                Some(_) => SessionMode::New(id),
                None => {
                    let error = RunError::new("unknown_session", format!("session {id} no longer exists"));
                    return self.save(run, |r| r.finish(RunOutcome::failed(error.clone()), Utc::now())).await;
                }
            },
            None => SessionMode::New(Uuid::new_v4()),
        };
        let stopped_early = *stop.borrow();
        match stopped_early {
            Stop::No => {}
            Stop::LeaseLost => return Err(Error::LeaseLost),
            Stop::Cancel => return self.finish_stopped(run, Ended::Cancelled, CliSummary::default()).await,
        }
        let new_session = match session {
            SessionMode::New(id) if run.session_id.is_none() => Some(id),
            _ => None,
        };
        // The caller learns the session id as soon as the CLI starts; the lease is renewed in the
        // same write, since this put replaces the whole item.
        let lease = chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::seconds(60));
        self.save(run, |r| {
            let now = Utc::now();
            r.transition(RunStatus::Running, now)?;
            r.lease_expires_at = Some(now + lease);
            if new_session.is_some() {
                r.session_id = new_session;
            }
            Ok(())
        })
        .await?;
        if run.cancel_requested {
            // Asked while the workspace was being prepared (the re-read on conflict brought it).
            return self.finish_stopped(run, Ended::Cancelled, CliSummary::default()).await;
        }

        let invocation =
            CliInvocation::new(workflow, run.max_turns, session, run.message.clone(), workspace.mcp_config.clone());
        let log_path = workspace.root.join("output.ndjson");
        let recorder = FrameRecorder::start(self.sinks.clone(), log_path.clone(), self.settings.frame_flush).await?;
        let mut process = match self.cli.start(workspace, &invocation).await {
            Ok(p) => p,
            Err(err) => {
                recorder.finish().await?;
                let error = RunError::new("cli_start_failed", err.to_string());
                return self.save(run, |r| r.finish(RunOutcome::failed(error.clone()), Utc::now())).await;
            }
        };
        // Counted from the claim: preparation and the CLI share one budget, so Lambda never
        // has to cut the run off.
        let time_limit = Duration::from_secs(workflow.config.timeout_seconds).min(self.settings.max_run_time);
        let deadline = started + time_limit;
        let redactor = Redactor::new(workspace.secrets.iter().chain(&self.settings.secrets));
        let mut summary = CliSummary::default();
        let mut seq = 0u64;
        let ended = loop {
            tokio::select! {
                line = tokio::time::timeout(self.settings.idle_timeout, process.next_line()) => match line {
                    Err(_) => break Ended::Idle,
                    Ok(Ok(Some(line))) => {
                        seq += 1;
                        let bytes = redactor.bytes(line.bytes);
                        let frame = Frame::from_line(run.run_id, seq, &bytes, line.total_bytes.max(bytes.len()), Utc::now());
                        if let crate::domain::FrameData::Json(data) = &frame.data {
                            summary.observe(&frame.kind, frame.subtype.as_deref(), data);
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
                reason = stop_requested(&mut stop) => {
                    break if reason == Stop::LeaseLost { Ended::LeaseLost } else { Ended::Cancelled };
                }
            }
        };
        // Always stop the group: even after a clean exit, a tool may have left children behind.
        process.stop(self.settings.stop_grace).await;
        summary.exit_code = process.wait().await;
        summary.stderr_tail = redactor.text(&process.stderr_tail());
        summary.frames = seq;
        let report = recorder.finish().await?;
        if report.failed_batches > 0 {
            tracing::error!(run_id = %run.run_id, failed = report.failed_batches, "some frame batches did not reach every sink");
        }
        if let Err(err) = self
            .objects
            .put_file(&format!("runs/{}/output.ndjson", run.run_id), &log_path, "application/x-ndjson")
            .await
        {
            tracing::error!(run_id = %run.run_id, error = %err, "uploading the frame log failed");
        }

        if !matches!(ended, Ended::Exited) {
            return self.finish_stopped(run, ended, summary).await;
        }
        let mut outcome = summary.outcome();
        let mut changes = PublishedChanges::default();
        if outcome.status == RunStatus::Completed {
            let commit = run.auto_commit.unwrap_or(workflow.config.auto_commit);
            match self.workspaces.publish_changes(workspace, run, commit).await {
                Ok(published) => changes = published,
                Err(err) => {
                    let error = match err {
                        Error::RunFailed(e) => e,
                        other => RunError::new("publish_failed", other.to_string()),
                    };
                    outcome.status = RunStatus::Failed;
                    outcome.error = Some(error);
                }
            }
        }
        self.keep_artifacts(run, &outcome, workspace).await;
        tracing::info!(run_id = %run.run_id, status = %outcome.status, frames = seq, "run finished");
        self.save(run, |r| {
            r.finish(outcome.clone(), Utc::now())?;
            r.commits = changes.commits.clone();
            r.diff_stats = changes.diff_stats;
            Ok(())
        })
        .await
    }

    async fn finish_stopped(&self, run: &mut Run, ended: Ended, summary: CliSummary) -> Result<()> {
        if matches!(ended, Ended::LeaseLost) {
            // The run belongs to whoever took it over; writing here would overwrite them.
            return Err(Error::LeaseLost);
        }
        let mut outcome = summary.outcome();
        outcome.result_summary = None;
        (outcome.status, outcome.error) = match ended {
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
            Ended::LeaseLost => (
                RunStatus::Failed,
                Some(RunError::new("lease_lost", "another executor took the run over; this one stopped")),
            ),
            Ended::Exited => unreachable!("a CLI that exited is finished from its result frame"),
        };
        tracing::info!(run_id = %run.run_id, status = %outcome.status, "run stopped");
        self.save(run, |r| r.finish(outcome.clone(), Utc::now())).await
    }

    /// Workspace archive and session transcript to S3. Best effort: a failure here is logged and
    /// does not change the run's outcome.
    async fn keep_artifacts(&self, run: &Run, outcome: &RunOutcome, workspace: &Workspace) {
        let run_id = run.run_id;
        match self.workspaces.archive(workspace).await {
            Ok(path) => {
                let key = format!("runs/{run_id}/workspace.tar.zst");
                if let Err(err) = self.objects.put_file(&key, &path, "application/zstd").await {
                    tracing::error!(%run_id, error = %err, "uploading the workspace archive failed");
                }
            }
            Err(err) => tracing::error!(%run_id, error = %err, "archiving the workspace failed"),
        }
        let (Some(lineage), Some(cli_session)) = (run.session_id, outcome.session_id) else { return };
        let prefix = format!("sessions/{lineage}/");
        let project = encoded_project_dir(&workspace.config_dir, &workspace.work_dir);
        let transcript = project.join(format!("{cli_session}.jsonl"));
        let mut uploads = vec![(transcript, format!("{prefix}transcript.jsonl"))];
        let folder = project.join(cli_session.to_string());
        for file in files_under(&folder) {
            if let Ok(relative) = file.strip_prefix(&folder) {
                uploads.push((file.clone(), format!("{prefix}files/{}", relative.display())));
            }
        }
        let mut kept = true;
        for (path, key) in uploads {
            if !path.exists() {
                tracing::warn!(%run_id, path = %path.display(), "transcript file not found");
                kept = false;
                continue;
            }
            if let Err(err) = self.objects.put_file(&key, &path, "application/octet-stream").await {
                tracing::error!(%run_id, %key, error = %err, "uploading the transcript failed");
                kept = false;
            }
        }
        let usage: serde_json::Value =
            outcome.usage_json.as_deref().and_then(|u| serde_json::from_str(u).ok()).unwrap_or_default();
        let used = SessionUse {
            run_id: Some(run_id),
            cli_session_id: Some(cli_session),
            transcript_prefix: kept.then_some(prefix),
            turns: outcome.num_turns.unwrap_or(0) as u64,
            cost_usd: outcome.cost_usd.unwrap_or(0.0),
            input_tokens: usage["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
        };
        if let Err(err) = self.record_session_use(run, lineage, &used).await {
            tracing::error!(%run_id, error = %err, "recording the session failed");
        }
    }

    /// Adds the run to its session (creating the session for a run that started one).
    async fn record_session_use(&self, run: &Run, lineage: Uuid, used: &SessionUse) -> Result<()> {
        let ttl = chrono::Duration::from_std(self.settings.session_ttl)
            .unwrap_or(chrono::Duration::days(DEFAULT_SESSION_TTL_DAYS));
        let result = self.fold_into_session(run, lineage, used, ttl).await;
        // The CLI named the conversation differently: link that id to the lineage too.
        if let (Ok(session), Some(cli_id)) = (&result, used.cli_session_id)
            && cli_id != lineage
        {
            self.sessions.create(&session.alias(cli_id)).await?;
        }
        result.map(|_| ())
    }

    async fn fold_into_session(
        &self,
        run: &Run,
        lineage: Uuid,
        used: &SessionUse,
        ttl: chrono::Duration,
    ) -> Result<Session> {
        for _ in 0..5 {
            let now = Utc::now();
            match self.sessions.get(lineage).await? {
                Some(mut session) => {
                    let expected = session.version;
                    session.record(used, now, ttl);
                    match self.sessions.update(&session, expected).await {
                        Err(Error::Conflict) => continue,
                        other => return other.map(|()| session),
                    }
                }
                None => {
                    let mut session = Session::reserve(
                        lineage,
                        run.owner.clone(),
                        &run.workflow,
                        &run.repository_url,
                        &run.branch,
                        now,
                        ttl,
                    );
                    session.record(used, now, ttl);
                    if self.sessions.create(&session).await? {
                        return Ok(session);
                    }
                }
            }
        }
        Err(Error::Conflict)
    }

    /// Puts a session's transcript where the CLI looks for it: under *this* run's config dir and
    /// *this* workspace's encoded cwd. Returns the id to `--resume`.
    async fn restore_transcript(&self, session: &Session, workspace: &Workspace) -> Result<Uuid> {
        let cli_id = session.cli_session_id.unwrap_or(session.session_id);
        let prefix = session.transcript_prefix.clone().unwrap_or_default();
        let project = encoded_project_dir(&workspace.config_dir, &workspace.work_dir);
        tokio::fs::create_dir_all(&project).await.map_err(|e| Error::dependency("create the project dir", e))?;
        if !self
            .objects
            .get_file(&format!("{prefix}transcript.jsonl"), &project.join(format!("{cli_id}.jsonl")))
            .await?
        {
            return Err(Error::run_failed(
                "transcript_missing",
                format!("the transcript of session {} is no longer in the artifact store", session.session_id),
            ));
        }
        let files = format!("{prefix}files/");
        for object in self.objects.list(&files).await? {
            let relative = &object[files.len()..];
            if relative.split('/').any(|part| part == ".." || part.is_empty()) {
                continue;
            }
            let target = project.join(cli_id.to_string()).join(relative);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| Error::dependency("restore session files", e))?;
            }
            self.objects.get_file(&object, &target).await?;
        }
        Ok(cli_id)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    No,
    Cancel,
    LeaseLost,
}

/// Resolves once a stop is requested; never, if the heartbeat is gone.
async fn stop_requested(stop: &mut watch::Receiver<Stop>) -> Stop {
    loop {
        let current = *stop.borrow_and_update();
        if current != Stop::No {
            return current;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Renews the lease and polls for a cancel request, until aborted.
async fn heartbeat(
    store: Arc<dyn RunStore>,
    run_id: RunId,
    executor: String,
    lease: Duration,
    every: Duration,
    stop: watch::Sender<Stop>,
) {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    loop {
        tokio::time::sleep(every).await;
        match store.heartbeat(run_id, &executor, Utc::now() + lease).await {
            Ok(Some(beat)) if beat.cancel_requested => {
                let _ = stop.send(Stop::Cancel);
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(%run_id, "lease lost");
                let _ = stop.send(Stop::LeaseLost);
                return;
            }
            Err(err) => tracing::warn!(%run_id, error = %err, "heartbeat failed; retrying"),
        }
    }
}

/// Replaces secret values in CLI output. Built once per run: the needles (each secret, and its
/// JSON-escaped form, since lines are JSON) are worked out once, not per line.
struct Redactor {
    needles: Vec<Vec<u8>>,
}

impl Redactor {
    /// Values shorter than 6 bytes are too likely to be ordinary words to redact safely.
    fn new<'a>(secrets: impl IntoIterator<Item = &'a String>) -> Self {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for secret in secrets {
            let escaped = serde_json::to_string(secret).unwrap_or_default().trim_matches('"').to_owned();
            for needle in [secret.clone(), escaped] {
                if needle.len() >= 6 && !needles.iter().any(|n| n == needle.as_bytes()) {
                    needles.push(needle.into_bytes());
                }
            }
        }
        Self { needles }
    }

    fn bytes(&self, line: Vec<u8>) -> Vec<u8> {
        let mut line = line;
        for needle in &self.needles {
            if line.windows(needle.len()).any(|w| w == needle.as_slice()) {
                let mut out = Vec::with_capacity(line.len());
                let mut i = 0;
                while i < line.len() {
                    if line[i..].starts_with(needle) {
                        out.extend_from_slice(b"[REDACTED]");
                        i += needle.len();
                    } else {
                        out.push(line[i]);
                        i += 1;
                    }
                }
                line = out;
            }
        }
        line
    }

    fn text(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.bytes(text.as_bytes().to_vec())).into_owned()
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            // file_type() does not follow links: a link can neither loop the walk nor pull in
            // files from outside the session folder.
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaped_secrets_are_redacted_too() {
        let secrets = vec!["pa\"ss\\word".to_owned()];
        let line = serde_json::json!({"content": format!("KEY={}", secrets[0])}).to_string().into_bytes();
        let out = String::from_utf8(Redactor::new(&secrets).bytes(line)).unwrap();
        assert_eq!(out, r#"{"content":"KEY=[REDACTED]"}"#);
    }

    #[test]
    fn secrets_are_redacted_wherever_they_appear() {
        let secrets = vec!["s3cr3t-value".to_owned(), "abc".to_owned()];
        let line = br#"{"content":"TOKEN=s3cr3t-value and s3cr3t-value; abc"}"#.to_vec();
        let out = String::from_utf8(Redactor::new(&secrets).bytes(line)).unwrap();
        assert_eq!(out, r#"{"content":"TOKEN=[REDACTED] and [REDACTED]; abc"}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "still JSON");
    }
}
