//! Epics (docs/epics.md): the API's side (start, look, decide, cancel, roll back) and the
//! epics function's side (the state machine's tasks: advance, run a step, wait for approval).
//!
//! The state machine is a fixed loop — `Advance` → `RunStep` | `Approval` → `Advance` … — whose
//! waits are durable and bounded; every rule of what comes next is `Epic::advance`'s.

use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::runs::{DEFAULT_PAGE_SIZE, IDEMPOTENCY_TTL_HOURS, MAX_PAGE_SIZE, RunOrigin, RunService, page_limit};
use crate::domain::cloud_event::CloudEvent;
use crate::domain::epic::{
    Advance, After, Decision, DecisionKind, Epic, EpicId, EpicRequest, EpicStatus, HandledAdvance, Next, RunReport,
    StepStatus, ValidEpicRequest, announce,
};
use crate::domain::memory::{MAX_MEMORY_TEXT_BYTES, MemoryKind, MemoryStatus, NewMemory};
use crate::domain::{
    EpicLink, Owner, ReplyRoute, RunError, RunId, RunRequest, ValidationError, validate_idempotency_key,
};
use crate::ports::{
    BranchMover, EpicEngine, EpicStore, IdempotencyRecord, MemorySource, MemoryStore, Page, ReplyQueue, RunStore,
    TaskAnswer,
};
use crate::{Error, ErrorKind, Result};

/// How long an epic's waits are.
#[derive(Clone, Copy, Debug)]
pub struct EpicSettings {
    /// A run step fails when its executor has not heartbeaten for this long.
    pub step_heartbeat_seconds: u64,
    /// The longest a run step may take, queue wait included.
    pub step_timeout_seconds: u64,
}

impl Default for EpicSettings {
    fn default() -> Self {
        Self { step_heartbeat_seconds: 120, step_timeout_seconds: 3 * 3600 }
    }
}

/// A decision as `POST /epics/{id}/approvals/{approval_id}` takes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// approve, deny, amend or rollback.
    pub decision: DecisionKind,
    /// What the person says; required for `amend`.
    #[serde(default)]
    pub comment: Option<String>,
    /// For `rollback`: the step to go back to (before the first run step when absent).
    #[serde(default)]
    pub to_step: Option<usize>,
}

/// The longest decision comment, in bytes.
pub const MAX_COMMENT_BYTES: usize = 4_000;

/// One message of the epic tasks queue, as the state machine sends it.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EpicTask {
    Advance {
        epic_id: String,
        #[serde(default)]
        after: Option<Value>,
        token: String,
    },
    Step {
        epic_id: String,
        step: usize,
        token: String,
    },
    Approval {
        epic_id: String,
        step: usize,
        token: String,
    },
}

/// Epics: started and decided through the API, carried by the engine, their steps run as
/// ordinary runs.
pub struct EpicService {
    epics: Arc<dyn EpicStore>,
    engine: Arc<dyn EpicEngine>,
    runs: Arc<RunService>,
    run_store: Arc<dyn RunStore>,
    branches: Option<Arc<dyn BranchMover>>,
    replies: Option<Arc<dyn ReplyQueue>>,
    memory: Option<Arc<dyn MemoryStore>>,
    settings: EpicSettings,
}

/// What a start produced.
#[derive(Clone, Debug)]
pub struct StartedEpic {
    /// The epic, as stored.
    pub epic: Epic,
    /// True when the idempotency key named an earlier start and nothing new began.
    pub replayed: bool,
}

/// Attempts at a conditional write of an epic before giving up (the queue retries the task).
const WRITE_ATTEMPTS: usize = 5;

impl EpicService {
    /// The service over these ports. `branches` is needed only where rollbacks are carried out
    /// (the epics function); the API only asks for them. `replies` announce to queue callers.
    pub fn new(
        epics: Arc<dyn EpicStore>,
        engine: Arc<dyn EpicEngine>,
        runs: Arc<RunService>,
        run_store: Arc<dyn RunStore>,
        branches: Option<Arc<dyn BranchMover>>,
        replies: Option<Arc<dyn ReplyQueue>>,
        settings: EpicSettings,
    ) -> Self {
        Self { epics, engine, runs, run_store, branches, replies, memory: None, settings }
    }

    /// The same service, recording every approval decision in the repository's memory.
    pub fn with_memory(self, memory: Arc<dyn MemoryStore>) -> Self {
        Self { memory: Some(memory), ..self }
    }

    /// Validates, records and starts an epic. Under an idempotency key already used for the same
    /// request, names the epic that key started instead (`replayed`).
    pub async fn start(
        &self,
        owner: &Owner,
        request: EpicRequest,
        idempotency_key: Option<&str>,
        reply: Option<ReplyRoute>,
    ) -> Result<StartedEpic> {
        if let Some(key) = idempotency_key {
            validate_idempotency_key(key)?;
        }
        let valid = request.validate(self.runs.workflows(), self.runs.limits(), self.runs.repositories())?;
        let fingerprint = fingerprint(&valid);
        let now = Utc::now();
        let mut epic = Epic::start(owner.clone(), valid, now);
        epic.reply = reply;
        if let Some(key) = idempotency_key {
            // The idempotency table is shared with runs; an epic's keys live apart under a prefix.
            let record = IdempotencyRecord {
                owner: owner.clone(),
                key: format!("epic:{key}"),
                run_id: RunId::from(epic.epic_id.as_uuid()),
                request_fingerprint: fingerprint,
                expires_at: now + chrono::Duration::hours(IDEMPOTENCY_TTL_HOURS),
            };
            if let Some(earlier) = self.run_store.claim_idempotency_key(&record).await? {
                if earlier.request_fingerprint != record.request_fingerprint {
                    return Err(Error::IdempotencyKeyReused);
                }
                let id = EpicId::from(earlier.run_id.as_uuid());
                if let Some(existing) = self.epics.get(id).await? {
                    return Ok(StartedEpic { epic: existing, replayed: true });
                }
                // The earlier start stopped between the key and the epic: finish it under its id.
                epic.epic_id = id;
            }
        }
        self.epics.create(&epic).await?;
        let input = self.execution_input(&epic, Value::Null);
        match self.engine.start(&epic.execution_name(0), &input).await {
            Ok(execution) => {
                self.write(&mut epic, |e| {
                    e.execution_id = Some(execution.clone());
                    e.executions = 1;
                    true
                })
                .await?;
                tracing::info!(epic_id = %epic.epic_id, %owner, steps = epic.plan.len(), "epic started");
                Ok(StartedEpic { epic, replayed: false })
            }
            Err(err) => {
                tracing::error!(epic_id = %epic.epic_id, error = %err, "the engine refused the epic; failing it");
                let error = RunError::new("engine_unavailable", "the workflow engine could not start the epic");
                let _ = self
                    .write(&mut epic, |e| {
                        e.end(EpicStatus::Failed, Some(error.clone()), Utc::now());
                        true
                    })
                    .await;
                Err(err)
            }
        }
    }

    /// The owner's epic; another owner's is not found.
    pub async fn get(&self, owner: &Owner, epic_id: &str) -> Result<Epic> {
        let not_found = || Error::EpicNotFound(epic_id.to_owned());
        let id: EpicId = epic_id.parse().map_err(|_| not_found())?;
        match self.epics.get(id).await? {
            Some(epic) if &epic.owner == owner => Ok(epic),
            _ => Err(not_found()),
        }
    }

    /// One page of the owner's epics, newest first.
    pub async fn list(&self, owner: &Owner, limit: Option<String>, cursor: Option<&str>) -> Result<Page<Epic>> {
        let limit = page_limit(limit.map(|raw| raw.parse().unwrap_or(0)), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        self.epics.list(owner, limit, cursor).await
    }

    /// Decides the pending approval `approval_id`. The epic moves on once the engine has it;
    /// the answer is the epic as it was when the decision was handed over.
    pub async fn decide(
        &self,
        owner: &Owner,
        epic_id: &str,
        approval_id: usize,
        request: DecisionRequest,
    ) -> Result<Epic> {
        let epic = self.get(owner, epic_id).await?;
        let invalid =
            |message: String| Error::Invalid(ValidationError::InvalidEpic { code: "invalid_decision", message });
        if request.comment.as_ref().is_some_and(|c| c.len() > MAX_COMMENT_BYTES || c.contains('\0')) {
            return Err(invalid(format!("comment must be at most {MAX_COMMENT_BYTES} bytes, without NUL")));
        }
        if request.decision == DecisionKind::Amend && request.comment.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err(invalid("amend needs a comment: what to change in the design".into()));
        }
        if request.decision != DecisionKind::Rollback && request.to_step.is_some() {
            return Err(invalid("to_step goes with a rollback decision only".into()));
        }
        if let (DecisionKind::Rollback, Some(to_step)) = (request.decision, request.to_step) {
            epic.rollback_target(to_step).map_err(invalid)?;
        }
        let pending = epic.pending_approval.as_ref().filter(|p| p.approval_id == approval_id);
        let Some(token) = pending.and_then(|p| p.task_token.clone()) else {
            return Err(not_pending(&epic, approval_id));
        };
        let decision = Decision {
            approval_id,
            decision: request.decision,
            comment: request.comment,
            to_step: request.to_step,
            by: owner.to_string(),
        };
        let output = json!({"kind": "decision", "decision": decision});
        match self.engine.succeed(&token, &output).await? {
            TaskAnswer::Delivered => {
                tracing::info!(epic_id = %epic.epic_id, approval_id, decision = ?decision.decision, "approval decided");
                Ok(epic)
            }
            TaskAnswer::Gone => Err(not_pending(&epic, approval_id)),
        }
    }

    /// Cancels the epic: it ends `cancelled`, its running step's run is cancelled, and its
    /// execution is stopped.
    pub async fn cancel(&self, owner: &Owner, epic_id: &str) -> Result<Epic> {
        let mut epic = self.get(owner, epic_id).await?;
        if epic.status.is_terminal() {
            return Err(ended(&epic));
        }
        let waiting = epic.pending_approval.as_ref().and_then(|p| p.task_token.clone());
        let running = epic.running_run().and_then(|s| s.run_id);
        self.write(&mut epic, |e| {
            if e.status.is_terminal() {
                return false;
            }
            let error = RunError::new("cancelled", "the epic was cancelled");
            e.end(EpicStatus::Cancelled, Some(error), Utc::now());
            true
        })
        .await?;
        if let Some(run_id) = running
            && let Err(err) = self.runs.cancel(owner, &run_id.to_string()).await
        {
            tracing::info!(%run_id, error = %err, "the cancelled epic's run was not cancelled (it may have ended)");
        }
        // The waiting approval is failed so the execution moves on and ends even where stopping
        // an execution is not immediate; the stop is the engine's own record of the end.
        if let Some(token) = waiting {
            let _ = self.engine.fail(&token, "cancelled", "the epic was cancelled").await;
        }
        if let Some(execution) = &epic.execution_id
            && let Err(err) = self.engine.stop(execution, "cancelled through the API").await
        {
            tracing::warn!(epic_id = %epic.epic_id, error = %err, "could not stop the execution; it ends at its next step");
        }
        tracing::info!(epic_id = %epic.epic_id, "epic cancelled");
        Ok(epic)
    }

    /// Moves the branch back to step `to_step`'s rollback point: as the decision on a pending
    /// approval, or, once the epic has ended, through a new execution. Refused while a step runs.
    pub async fn rollback(&self, owner: &Owner, epic_id: &str, to_step: usize) -> Result<Epic> {
        let mut epic = self.get(owner, epic_id).await?;
        epic.rollback_target(to_step)
            .map_err(|message| Error::Invalid(ValidationError::InvalidEpic { code: "invalid_rollback", message }))?;
        match epic.status {
            EpicStatus::AwaitingApproval => {
                let approval_id = epic.pending_approval.as_ref().map(|p| p.approval_id).unwrap_or_default();
                let request = DecisionRequest {
                    decision: DecisionKind::Rollback,
                    comment: Some("rollback requested through the API".into()),
                    to_step: Some(to_step),
                };
                self.decide(owner, epic_id, approval_id, request).await
            }
            EpicStatus::Running => Err(Error::EpicConflict {
                code: "epic_running",
                message: "a step is running; cancel the epic (or wait for an approval) before rolling back".into(),
            }),
            _ => {
                let n = epic.executions;
                let input = self.execution_input(&epic, json!({"kind": "rollback_requested", "to_step": to_step}));
                let execution = self.engine.start(&epic.execution_name(n), &input).await?;
                self.write(&mut epic, |e| {
                    e.execution_id = Some(execution.clone());
                    e.executions = n + 1;
                    true
                })
                .await?;
                tracing::info!(epic_id = %epic.epic_id, to_step, "rollback of an ended epic started");
                Ok(epic)
            }
        }
    }

    /// One message of the epic tasks queue. `Err` for a transient failure: the queue retries it.
    pub async fn handle_task(&self, body: &str) -> Result<()> {
        let task: EpicTask = match serde_json::from_str(body) {
            Ok(task) => task,
            Err(err) => {
                // Nothing can answer a message we cannot read; the state machine's own timeouts end it.
                tracing::error!(error = %err, "unreadable epic task; dropped");
                return Ok(());
            }
        };
        match task {
            EpicTask::Advance { epic_id, after, token } => self.advance(&epic_id, after, &token).await,
            EpicTask::Step { epic_id, step, token } => self.run_step(&epic_id, step, &token).await,
            EpicTask::Approval { epic_id, step, token } => self.await_approval(&epic_id, step, &token).await,
        }
    }

    async fn load(&self, epic_id: &str) -> Result<Option<Epic>> {
        let Ok(id) = epic_id.parse::<EpicId>() else { return Ok(None) };
        self.epics.get(id).await
    }

    /// `Advance`: records what just happened and answers with what comes next. A redelivered
    /// advance answers what it answered the first time.
    async fn advance(&self, epic_id: &str, after: Option<Value>, token: &str) -> Result<()> {
        let Some(mut epic) = self.load(epic_id).await? else {
            tracing::error!(epic_id, "advance for an unknown epic; ending its execution");
            self.engine.fail(token, "epic_not_found", "no such epic").await?;
            return Ok(());
        };
        let digest = hex::encode(&Sha256::digest(token.as_bytes())[..16]);
        let expected = epic.version;
        let answer = match &epic.last_advance {
            Some(handled) if handled.token_digest == digest => handled.answer.clone(),
            _ => {
                let after = self.after(&epic, after.unwrap_or(Value::Null)).await?;
                let decided = match &after {
                    After::Decided(d)
                        if epic.pending_approval.as_ref().is_some_and(|p| p.approval_id == d.approval_id) =>
                    {
                        Some(d.clone())
                    }
                    _ => None,
                };
                let answer = match epic.advance(after, Utc::now()) {
                    Next::Go(answer) => answer,
                    Next::RollBack(plan) => {
                        let result = self.move_branch(&epic, &plan.to_commit, &plan.expected_head).await?;
                        epic.rolled_back(plan, result, Utc::now())
                    }
                };
                epic.last_advance = Some(HandledAdvance { token_digest: digest, answer: answer.clone() });
                // One write for all of it; a concurrent one (a cancel) makes the queue retry.
                epic.version = expected + 1;
                self.epics.update(&epic, expected).await?;
                if let Some(decision) = decided {
                    self.remember_decision(&epic, &decision).await;
                }
                answer
            }
        };
        tracing::info!(epic_id = %epic.epic_id, status = %epic.status, next = ?answer, "epic advanced");
        if matches!(answer, Advance::Done { .. } | Advance::Failed { .. }) {
            // Sent again if the advance is redelivered: the event's id is stable.
            self.announce(announce::ended(&epic, Utc::now())).await?;
        }
        self.engine.succeed(token, &serde_json::to_value(&answer).unwrap_or_default()).await?;
        Ok(())
    }

    /// Reads what the state machine reports as the last task's result.
    async fn after(&self, epic: &Epic, last: Value) -> Result<After> {
        if last.is_null() {
            return Ok(After::Start);
        }
        if let Some(error) = last.get("Error").and_then(Value::as_str) {
            // A task that failed: the approval's timeout, a run step's lost heartbeat, a run
            // that ended without completing (its executor fails the task), or a cancel.
            if epic.status == EpicStatus::AwaitingApproval {
                return Ok(if error.starts_with("States.") {
                    After::ApprovalTimedOut
                } else {
                    After::RunLost(RunError::new("approval_failed", error))
                });
            }
            if let Some(report) = self.running_report(epic).await? {
                return Ok(After::RunEnded(report));
            }
            let lost = if error.starts_with("States.") {
                RunError::new("step_lost", format!("the step's run stopped reporting ({error}); its executor was lost"))
            } else {
                let cause = last.get("Cause").and_then(Value::as_str).unwrap_or_default();
                RunError::new("step_failed", format!("the step could not run: {error} {cause}").trim().to_owned())
            };
            return Ok(After::RunLost(lost));
        }
        match last.get("kind").and_then(Value::as_str) {
            Some("run_ended") => Ok(match self.running_report(epic).await? {
                Some(report) => After::RunEnded(report),
                None => After::RunLost(RunError::new("step_lost", "the step's run reported an end it does not have")),
            }),
            Some("decision") => match serde_json::from_value::<Decision>(last["decision"].clone()) {
                Ok(decision) => Ok(After::Decided(decision)),
                Err(err) => Ok(After::RunLost(RunError::new("approval_failed", err.to_string()))),
            },
            Some("rollback_requested") => {
                Ok(After::RollbackRequested { to_step: last["to_step"].as_u64().unwrap_or_default() as usize })
            }
            _ => Ok(After::RunLost(RunError::new("step_failed", format!("unexpected task result {last}")))),
        }
    }

    /// The report of the running step's run, once that run has ended.
    async fn running_report(&self, epic: &Epic) -> Result<Option<RunReport>> {
        let Some(run_id) = epic.running_run().and_then(|s| s.run_id) else { return Ok(None) };
        let run = self.run_store.get(run_id).await?;
        Ok(run.filter(|r| r.status.is_terminal()).map(|r| RunReport::from_run(&r)))
    }

    async fn move_branch(&self, epic: &Epic, to: &str, expected: &str) -> Result<Result<Vec<String>, RunError>> {
        let Some(branches) = &self.branches else {
            return Err(Error::Config("this function cannot move branches (no git)".into()));
        };
        match branches.move_branch(&epic.repository_url, &epic.branch, to, expected).await {
            Ok(discarded) => {
                tracing::info!(epic_id = %epic.epic_id, to, discarded = discarded.len(), "branch moved back");
                Ok(Ok(discarded))
            }
            Err(Error::RunFailed(refused)) => {
                tracing::warn!(epic_id = %epic.epic_id, code = %refused.code, "rollback refused");
                Ok(Err(refused))
            }
            Err(err) => Err(err),
        }
    }

    /// `RunStep`: submits the step's run, carrying the task token its executor reports to.
    async fn run_step(&self, epic_id: &str, step: usize, token: &str) -> Result<()> {
        let Some(mut epic) = self.load(epic_id).await? else {
            self.engine.fail(token, "epic_not_found", "no such epic").await?;
            return Ok(());
        };
        let workflow = match epic.step(step) {
            Some(s) if s.status == StepStatus::Running && !epic.status.is_terminal() => s.plan.name().to_owned(),
            _ => {
                // Ended (cancelled) meanwhile: the advance that follows says so.
                self.engine.fail(token, "epic_ended", "the epic is no longer running this step").await?;
                return Ok(());
            }
        };
        let request = RunRequest {
            message: epic.step_message(step, self.runs.limits().max_message_bytes),
            branch: epic.branch.clone(),
            max_turns: epic.max_turns.map(i64::from),
            session_id: None,
            repository_url: Some(epic.repository_url.clone()),
            metadata: Some(json!({"epic_id": epic.epic_id, "step": step})),
            auto_commit: None,
            max_budget_usd: Some(epic.remaining_budget()),
        };
        let origin = RunOrigin {
            reply: None,
            epic: Some(EpicLink { epic_id: epic.epic_id, step, task_token: token.to_owned() }),
            ..RunOrigin::default()
        };
        let key = format!("epic-{}-step-{step}", epic.epic_id);
        let submitted = match self.runs.submit(&epic.owner, &workflow, request, Some(&key), origin).await {
            Ok(submitted) => submitted,
            Err(err) if matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Internal) => return Err(err),
            Err(err) => {
                tracing::warn!(epic_id, step, error = %err, "the step's run was refused");
                self.engine.fail(token, err.code(), &err.to_string()).await?;
                return Ok(());
            }
        };
        let run_id = submitted.run.run_id;
        self.write(&mut epic, |e| {
            if e.step(step).is_some_and(|s| s.run_id == Some(run_id)) {
                return false;
            }
            e.step_submitted(step, run_id, Utc::now());
            true
        })
        .await?;
        tracing::info!(epic_id, step, %run_id, workflow, "epic step queued");
        Ok(())
    }

    /// `Approval`: records the pending approval's task token, so a decision can complete it.
    async fn await_approval(&self, epic_id: &str, step: usize, token: &str) -> Result<()> {
        let Some(mut epic) = self.load(epic_id).await? else {
            self.engine.fail(token, "epic_not_found", "no such epic").await?;
            return Ok(());
        };
        let waiting = epic.pending_approval.as_ref().is_some_and(|p| p.approval_id == step);
        if !waiting || epic.status.is_terminal() {
            self.engine.fail(token, "epic_ended", "the epic no longer waits for this approval").await?;
            return Ok(());
        }
        self.write(&mut epic, |e| match e.pending_approval.as_mut() {
            Some(p) if p.approval_id == step && p.task_token.as_deref() != Some(token) => {
                p.task_token = Some(token.to_owned());
                e.updated_at = Utc::now();
                true
            }
            _ => false,
        })
        .await?;
        if let Some(p) = &epic.pending_approval {
            tracing::info!(epic_id, approval_id = step, asked = %p.asked, "epic awaits approval");
        }
        // Announced once a decision can be taken: the token is stored.
        self.announce(announce::approval_requested(&epic, Utc::now())).await
    }

    /// An approval decision, kept in the repository's memory so later runs know it was made.
    async fn remember_decision(&self, epic: &Epic, decision: &Decision) {
        let Some(memory) = &self.memory else { return };
        let step = epic.step(decision.approval_id);
        let triggers = step.map(|s| s.triggers.clone()).unwrap_or_default();
        let kind = format!("{:?}", decision.decision).to_lowercase();
        let mut text =
            format!("Epic \"{}\": {} by {} at its approval {}", epic.title, kind, decision.by, decision.approval_id);
        if let Some(comment) = &decision.comment {
            text.push_str(&format!(": {comment}"));
        }
        let entry = NewMemory {
            kind: MemoryKind::Decision,
            text: text.chars().take(MAX_MEMORY_TEXT_BYTES / 4).collect(),
            fields: json!({
                "epic_id": epic.epic_id, "approval_id": decision.approval_id, "decision": decision.decision,
                "comment": decision.comment, "by": decision.by, "triggers": triggers,
            }),
            fingerprint: None,
        };
        let source = MemorySource {
            owner: epic.owner.clone(),
            repository_url: epic.repository_url.clone(),
            workflow: None,
            epic_id: Some(epic.epic_id.as_uuid()),
            run_id: None,
            session_id: None,
        };
        if let Err(err) = memory.record(&source, &entry, MemoryStatus::Accepted).await {
            tracing::warn!(epic_id = %epic.epic_id, error = %err, "the decision was not remembered");
        }
    }

    /// Sends a reply to the queue caller that started the epic, if it has one.
    async fn announce(&self, reply: Option<(ReplyRoute, CloudEvent)>) -> Result<()> {
        let (Some((route, event)), Some(replies)) = (reply, &self.replies) else { return Ok(()) };
        replies.send(&route.reply_to, &event, route.correlation_id.as_deref()).await?;
        tracing::info!(event = %event.kind, id = %event.id, "epic reply sent");
        Ok(())
    }

    fn execution_input(&self, epic: &Epic, last: Value) -> Value {
        json!({
            "epic_id": epic.epic_id,
            "last": last,
            "limits": {
                "heartbeat_seconds": self.settings.step_heartbeat_seconds,
                "step_timeout_seconds": self.settings.step_timeout_seconds,
            },
        })
    }

    /// Applies `change` and writes the epic conditionally, re-reading and re-applying on a
    /// concurrent write (bounded). `change` returns false when there is nothing to write.
    async fn write(&self, epic: &mut Epic, mut change: impl FnMut(&mut Epic) -> bool) -> Result<()> {
        for _ in 0..WRITE_ATTEMPTS {
            let mut next = epic.clone();
            if !change(&mut next) {
                return Ok(());
            }
            next.version = epic.version + 1;
            match self.epics.update(&next, epic.version).await {
                Ok(()) => {
                    *epic = next;
                    return Ok(());
                }
                Err(Error::Conflict) => {
                    *epic = self
                        .epics
                        .get(epic.epic_id)
                        .await?
                        .ok_or_else(|| Error::EpicNotFound(epic.epic_id.to_string()))?;
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::Conflict)
    }
}

/// A stable digest of everything that defines an epic, for idempotency replays.
fn fingerprint(request: &ValidEpicRequest) -> String {
    let canonical = json!([
        request.title,
        request.message,
        request.branch,
        request.repository_url,
        request.plan,
        request.budget_usd,
        request.approval,
        request.approval_timeout_seconds,
        request.max_fix_rounds,
        request.rollback_on_failure,
        request.max_turns,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

fn not_pending(epic: &Epic, approval_id: usize) -> Error {
    if epic.status.is_terminal() {
        return ended(epic);
    }
    Error::EpicConflict {
        code: "approval_not_pending",
        message: format!("approval {approval_id} is not waiting for a decision (the epic is {})", epic.status),
    }
}

fn ended(epic: &Epic) -> Error {
    Error::EpicConflict { code: "epic_ended", message: format!("the epic has ended ({})", epic.status) }
}
