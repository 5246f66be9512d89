//! Run intake and the caller-facing queries: submit, get, list, cancel.

use std::sync::Arc;

use chrono::{Duration, Utc};
use sha2::{Digest, Sha256};

use super::Limiter;
use super::optimistic::{self, Edit};
use crate::domain::{
    CancelOutcome, EpicLink, IntakeLimits, LimitOverrides, Owner, ReplyRoute, RepositoryPolicy, Run, RunError, RunId,
    RunRequest, RunStatus, SessionRefusal, TraceId, ValidRunRequest, ValidationError, WorkflowRegistry, object_keys,
    validate_idempotency_key,
};
use crate::ports::{
    IdempotencyRecord, MetricEvent, Metrics, NoMetrics, ObjectStore, Page, RunFilter, RunMessage, RunQueue, RunStore,
    SessionStore,
};
use crate::{Error, Result};

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL_HOURS: i64 = 24;
/// Items in a page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// The most items a page can hold.
pub const MAX_PAGE_SIZE: usize = 100;

/// A page size the caller asked for (or `default`), checked against `1..=max`.
pub(super) fn page_limit(asked: Option<usize>, default: usize, max: usize) -> Result<usize, ValidationError> {
    match asked {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ValidationError::InvalidQuery(format!("limit must be an integer from 1 to {max}"))),
    }
}

/// Run intake and the caller-facing queries.
pub struct RunService {
    store: Arc<dyn RunStore>,
    sessions: Arc<dyn SessionStore>,
    queue: Arc<dyn RunQueue>,
    objects: Arc<dyn ObjectStore>,
    workflows: Arc<WorkflowRegistry>,
    limits: IntakeLimits,
    repositories: RepositoryPolicy,
    metrics: Arc<dyn Metrics>,
    /// `None` where the deployment keeps no rate limits.
    limiter: Option<Arc<Limiter>>,
}

/// Where a run comes from, besides its owner: whom to reply to, which epic step it carries out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOrigin {
    /// A queue caller's reply route (Genie).
    pub reply: Option<ReplyRoute>,
    /// The epic step the run carries out.
    pub epic: Option<EpicLink>,
    /// The trace of the request or event that asked for the run; a new one when `None`.
    pub trace_id: Option<TraceId>,
    /// The submitting key's own limits (over the deployment's).
    pub limits: LimitOverrides,
    /// The submitting key's own repository allowlist (instead of the deployment's).
    pub repository_allowlist: Option<Vec<String>>,
}

impl RunOrigin {
    /// A run submitted through a queue, replied to on `route`.
    pub fn replying_to(route: ReplyRoute) -> Self {
        Self { reply: Some(route), ..Self::default() }
    }
}

/// What a submit produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    /// The run, as stored.
    pub run: Run,
    /// True when an `Idempotency-Key` matched an earlier submission and nothing new was created.
    pub replayed: bool,
}

/// `GET /runs` query parameters as received.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// A run status name.
    pub status: Option<String>,
    /// A workflow name.
    pub workflow: Option<String>,
    /// Page size, 1 to `MAX_PAGE_SIZE`.
    pub limit: Option<String>,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl RunService {
    /// Intake over these stores, with this deployment's workflows, limits and repositories.
    pub fn new(
        store: Arc<dyn RunStore>,
        sessions: Arc<dyn SessionStore>,
        queue: Arc<dyn RunQueue>,
        objects: Arc<dyn ObjectStore>,
        workflows: Arc<WorkflowRegistry>,
        limits: IntakeLimits,
        repositories: RepositoryPolicy,
    ) -> Self {
        let metrics: Arc<dyn Metrics> = Arc::new(NoMetrics);
        Self { store, sessions, queue, objects, workflows, limits, repositories, metrics, limiter: None }
    }

    /// The same service, admitting runs through `limiter` (epic steps excepted: their epic
    /// already runs one at a time, and refusing a step would fail the epic).
    pub fn with_limiter(self, limiter: Arc<Limiter>) -> Self {
        Self { limiter: Some(limiter), ..self }
    }

    /// The same service, measuring what it accepts into `metrics`.
    pub fn with_metrics(self, metrics: Arc<dyn Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// The workflows this deployment runs.
    pub fn workflows(&self) -> &WorkflowRegistry {
        &self.workflows
    }

    /// The run's frames as its complete log holds them, once it has ended (`output_not_ready`
    /// before: the log is uploaded when the run ends). A run that never started has none.
    pub async fn output(&self, owner: &Owner, run_id: &str) -> Result<(Run, Vec<serde_json::Value>)> {
        let run = self.get(owner, run_id).await?;
        if !run.status.is_terminal() {
            return Err(Error::OutputNotReady(run.run_id.to_string()));
        }
        let Some(log) = self.objects.get(&object_keys::run_log(run.run_id)).await? else {
            return Ok((run, Vec::new()));
        };
        let frames = String::from_utf8_lossy(&log).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        Ok((run, frames))
    }

    /// Whether a workflow by this name is deployed.
    pub fn knows_workflow(&self, name: &str) -> bool {
        self.workflows.get(name).is_some()
    }

    /// The repositories runs may use.
    pub fn repositories(&self) -> &RepositoryPolicy {
        &self.repositories
    }

    /// The intake limits requests are checked against.
    pub fn limits(&self) -> &IntakeLimits {
        &self.limits
    }

    /// Validates, records, then enqueues. If the queue refuses, the run is marked failed so it
    /// is never left queued with no message behind it.
    pub async fn submit(
        &self,
        owner: &Owner,
        workflow: &str,
        request: RunRequest,
        idempotency_key: Option<&str>,
        origin: RunOrigin,
    ) -> Result<Submitted> {
        let workflow = self.workflows.get(workflow).ok_or_else(|| Error::UnknownWorkflow(workflow.to_owned()))?;
        if let Some(key) = idempotency_key {
            validate_idempotency_key(key)?;
        }
        let repositories = match &origin.repository_allowlist {
            Some(allowlist) => self.repositories.with_allowlist(allowlist.clone()),
            None => self.repositories.clone(),
        };
        let mut valid = request.validate(workflow, &self.limits, &repositories)?;
        // A session is checked now, so a bad one is a 4xx here, never a run that fails later.
        if let Some(id) = valid.session_id {
            let session =
                self.sessions.get(id).await?.ok_or_else(|| Error::UnknownSession(id.to_string(), "not found"))?;
            session.admits(owner, &valid.workflow, &valid.repository_url, Utc::now()).map_err(
                |refusal| match refusal {
                    SessionRefusal::Unknown(why) => Error::UnknownSession(id.to_string(), why),
                    SessionRefusal::Conflict(why) => Error::SessionConflict(why),
                },
            )?;
            // An id the CLI handed back names the same lineage: runs always carry the lineage id.
            valid.session_id = Some(session.session_id);
        }
        let fingerprint = fingerprint(&valid);
        let now = Utc::now();
        let mut run = Run::queued(owner.clone(), valid, idempotency_key.map(str::to_owned), now);
        let origin_limits = origin.limits;
        let mut replaying = false;
        run.reply = origin.reply;
        run.epic = origin.epic;
        run.trace_id = Some(origin.trace_id.unwrap_or_else(TraceId::generate));
        run.time_limit_seconds = workflow.config.timeout_seconds;

        // Two conditional writes, no transaction: claim the key for this run id, then create the
        // run. A retry that finds the key taken adopts the earlier run id, so a submission that
        // crashed between the two writes is completed by its retry, and exactly one request
        // (whichever creates the run) enqueues it.
        if let Some(key) = idempotency_key {
            let record = IdempotencyRecord {
                owner: owner.clone(),
                key: key.to_owned(),
                run_id: run.run_id,
                request_fingerprint: fingerprint,
                expires_at: now + Duration::hours(IDEMPOTENCY_TTL_HOURS),
            };
            if let Some(earlier) = self.store.claim_idempotency_key(&record).await? {
                if earlier.request_fingerprint != record.request_fingerprint {
                    return Err(Error::IdempotencyKeyReused);
                }
                run.run_id = earlier.run_id;
                replaying = true;
            }
        }
        // A replay creates nothing, so it is never refused; a new run must be admitted.
        if let (Some(limiter), false, None) = (&self.limiter, replaying, &run.epic)
            && let Err(refused) = limiter.admit_run(owner, &origin_limits).await
        {
            if let Some(key) = idempotency_key {
                self.store.release_idempotency_key(owner, key).await?;
            }
            return Err(refused);
        }
        if !self.store.create(&run).await? {
            let run = self.store.get(run.run_id).await?.ok_or_else(|| Error::RunNotFound(run.run_id.to_string()))?;
            return Ok(Submitted { run, replayed: true });
        }

        if let Err(err) = self.queue.enqueue(&RunMessage::for_run(&run)).await {
            tracing::error!(run_id = %run.run_id, error = %err, "enqueue failed; failing the run");
            let expected = run.version;
            run.fail(RunError::new("enqueue_failed", format!("the run could not be queued: {err}")), Utc::now())?;
            if let Err(update_err) = self.store.update(&run, expected).await {
                tracing::error!(run_id = %run.run_id, error = %update_err, "could not mark the unqueued run failed");
            }
            // The caller is told to retry: the retry must create a new run, not replay this one.
            if let Some(key) = idempotency_key
                && let Err(release_err) = self.store.release_idempotency_key(owner, key).await
            {
                tracing::error!(run_id = %run.run_id, error = %release_err, "could not release the idempotency key");
            }
            return Err(Error::QueueUnavailable(err.to_string()));
        }
        tracing::info!(run_id = %run.run_id, workflow = %run.workflow, owner = %owner, trace_id = ?run.trace_id, "run queued");
        self.metrics.record(
            MetricEvent::new()
                .dimension("Workflow", &run.workflow)
                .count("RunsSubmitted", 1)
                .of_run(run.run_id, run.trace_id.as_ref()),
        );
        Ok(Submitted { run, replayed: false })
    }

    /// The owner's run. Another owner's run is reported as not found, never as forbidden.
    pub async fn get(&self, owner: &Owner, run_id: &str) -> Result<Run> {
        let id: RunId = run_id.parse().map_err(|_| ValidationError::InvalidRunId)?;
        match self.store.get(id).await? {
            Some(run) if &run.owner == owner => Ok(run),
            _ => Err(Error::RunNotFound(run_id.to_owned())),
        }
    }

    /// One page of the owner's runs, newest first.
    pub async fn list(&self, owner: &Owner, query: ListQuery) -> Result<Page<Run>> {
        let status = query
            .status
            .map(|s| {
                s.parse::<RunStatus>().map_err(|_| {
                    let all: Vec<_> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                    ValidationError::InvalidQuery(format!("status must be one of {}", all.join(", ")))
                })
            })
            .transpose()?;
        if let Some(name) = &query.workflow
            && self.workflows.get(name).is_none()
        {
            return Err(Error::UnknownWorkflow(name.clone()));
        }
        // Not a number is as out of range as 0.
        let limit = page_limit(query.limit.map(|raw| raw.parse().unwrap_or(0)), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
        let filter = RunFilter { status, workflow: query.workflow };
        self.store.list(owner, &filter, limit, query.cursor.as_deref()).await
    }

    /// Cancels a queued run at once, flags a live one for its executor, refuses a finished one.
    pub async fn cancel(&self, owner: &Owner, run_id: &str) -> Result<(Run, CancelOutcome)> {
        let mut run = self.get(owner, run_id).await?;
        let outcome = optimistic::update(self.store.as_ref(), &mut run, |run| {
            Ok(match run.request_cancel(Utc::now())? {
                CancelOutcome::AlreadyRequested => Edit::Keep(CancelOutcome::AlreadyRequested),
                outcome => Edit::Write(outcome),
            })
        })
        .await?;
        tracing::info!(run_id = %run.run_id, ?outcome, "cancel");
        Ok((run, outcome))
    }
}

/// A stable digest of everything that defines a run, for idempotency replays.
fn fingerprint(request: &ValidRunRequest) -> String {
    let canonical = serde_json::json!([
        request.workflow,
        request.message,
        request.branch.as_str(),
        request.max_turns,
        request.session_id,
        request.repository_url,
        request.metadata_json,
        request.auto_commit,
        request.max_budget_usd,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}
