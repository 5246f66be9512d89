//! Response bodies. The stored `Run` is never serialized as-is: owners and idempotency keys stay
//! internal.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use runner_core::domain::{DiffStats, Run, RunError, RunId, RunStatus, Session};
use serde::Serialize;
use uuid::Uuid;

/// Absolute URLs for links, from the Host the caller used.
pub struct Links {
    base: String,
}

impl Links {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let base = match header("host") {
            Some(host) => format!("{}://{host}", header("x-forwarded-proto").unwrap_or("http")),
            None => String::new(),
        };
        Self { base }
    }

    pub fn status(&self, run_id: RunId) -> String {
        format!("{}/agent/claude-code/run/{run_id}/status", self.base)
    }
}

#[derive(Serialize)]
pub struct SubmitResponse {
    run_id: RunId,
    status: RunStatus,
    status_url: String,
    /// The run's trace: in the executor's log lines, its frame rows, replies and metrics.
    trace_id: Option<String>,
    stream: StreamInfo,
}

/// How a WebSocket client follows the run: connect to `url` (with `x-api-key`, or to
/// `url_with_token` when it cannot set headers), then send `subscribe`.
#[derive(Serialize)]
pub struct StreamInfo {
    url: Option<String>,
    url_with_token: Option<String>,
    token: Option<String>,
    protocol: &'static str,
    subscribe: serde_json::Value,
}

impl SubmitResponse {
    pub fn new(run: &Run, links: &Links, websocket_url: Option<&str>, token: Option<String>) -> Self {
        Self {
            run_id: run.run_id,
            status: run.status,
            status_url: links.status(run.run_id),
            trace_id: run.trace_id.as_ref().map(ToString::to_string),
            stream: StreamInfo {
                url: websocket_url.map(str::to_owned),
                url_with_token: websocket_url.zip(token.as_deref()).map(|(url, token)| format!("{url}?token={token}")),
                token,
                protocol: "claude-runner.frames.v1",
                subscribe: serde_json::json!({"action": "subscribe", "run_id": run.run_id, "after_seq": 0}),
            },
        }
    }
}

#[derive(Serialize)]
pub struct RunView {
    #[serde(flatten)]
    summary: RunSummary,
    message: String,
    repository_url: String,
    max_turns: u32,
    metadata: Option<serde_json::Value>,
    cancel_requested: bool,
    updated_at: DateTime<Utc>,
    attempts: u32,
    usage: Option<serde_json::Value>,
    duration_ms: Option<u64>,
    exit_code: Option<i32>,
    commits: Vec<String>,
    diff_stats: Option<DiffStats>,
    timings: Option<runner_core::domain::RunTimings>,
    time_limit_seconds: u64,
    base_commit: Option<String>,
    /// The epic step it carries out (without the task token).
    epic: Option<serde_json::Value>,
    /// Memory entries the run was given, and the ones it produced.
    memory: serde_json::Value,
    trace_id: Option<String>,
}

/// A run in a listing: what a dashboard row needs.
#[derive(Serialize)]
pub struct RunSummary {
    run_id: RunId,
    status: RunStatus,
    workflow: String,
    branch: String,
    session_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    result_summary: Option<String>,
    error: Option<RunError>,
    cost_usd: Option<f64>,
    num_turns: Option<u32>,
}

impl From<&Run> for RunSummary {
    fn from(run: &Run) -> Self {
        Self {
            run_id: run.run_id,
            status: run.status,
            workflow: run.workflow.clone(),
            branch: run.branch.clone(),
            session_id: run.session_id,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            result_summary: run.result_summary.clone(),
            error: run.error.clone(),
            cost_usd: run.cost_usd,
            num_turns: run.num_turns,
        }
    }
}

impl From<&Run> for RunView {
    fn from(run: &Run) -> Self {
        Self {
            summary: RunSummary::from(run),
            message: run.message.clone(),
            repository_url: run.repository_url.clone(),
            max_turns: run.max_turns,
            metadata: run.metadata_json.as_deref().and_then(|m| serde_json::from_str(m).ok()),
            cancel_requested: run.cancel_requested,
            updated_at: run.updated_at,
            attempts: run.attempts,
            usage: run.usage_json.as_deref().and_then(|u| serde_json::from_str(u).ok()),
            duration_ms: run.duration_ms,
            exit_code: run.exit_code,
            commits: run.commits.clone(),
            diff_stats: run.diff_stats,
            timings: run.timings.clone(),
            time_limit_seconds: run.time_limit_seconds,
            base_commit: run.base_commit.clone(),
            epic: run.epic.as_ref().map(|e| serde_json::json!({"epic_id": e.epic_id, "step": e.step})),
            memory: serde_json::json!({"used": run.memory_used, "produced": run.memory_produced}),
            trace_id: run.trace_id.as_ref().map(ToString::to_string),
        }
    }
}

/// A session without its owner and version.
#[derive(Serialize)]
pub struct SessionView {
    session_id: Uuid,
    workflow: String,
    repository_url: String,
    branch: String,
    run_ids: Vec<RunId>,
    runs: usize,
    resumable: bool,
    total_turns: u64,
    total_cost_usd: f64,
    input_tokens: u64,
    output_tokens: u64,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.session_id,
            workflow: s.workflow.clone(),
            repository_url: s.repository_url.clone(),
            branch: s.branch.clone(),
            run_ids: s.run_ids.clone(),
            runs: s.run_ids.len(),
            resumable: s.has_transcript(),
            total_turns: s.total_turns,
            total_cost_usd: s.total_cost_usd,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
        }
    }
}

/// An epic as callers see it: the stored record without its task tokens and bookkeeping, each
/// step named by its plan entry, and what is spent and left.
pub fn epic_view(epic: &runner_core::domain::epic::Epic) -> serde_json::Value {
    use runner_core::domain::epic::PlanStep;
    let steps: Vec<serde_json::Value> = epic
        .steps
        .iter()
        .map(|step| {
            let mut view = serde_json::to_value(step).unwrap_or_default();
            if let Some(fields) = view.as_object_mut() {
                fields.remove("plan");
                fields.insert("name".into(), step.plan.name().into());
                let kind = if matches!(step.plan, PlanStep::Approval) { "approval" } else { "run" };
                fields.insert("kind".into(), kind.into());
                if let PlanStep::Run { reason: Some(reason), .. } = &step.plan {
                    fields.insert("reason".into(), reason.clone().into());
                }
            }
            view
        })
        .collect();
    let pending = epic.pending_approval.as_ref().map(|p| {
        serde_json::json!({
            "approval_id": p.approval_id, "asked": p.asked, "triggers": p.triggers, "expires_at": p.expires_at,
        })
    });
    serde_json::json!({
        "epic_id": epic.epic_id,
        "title": epic.title,
        "message": epic.message,
        "branch": epic.branch,
        "repository_url": epic.repository_url,
        "status": epic.status,
        "approval": epic.approval,
        "approval_timeout_seconds": epic.approval_timeout_seconds,
        "budget_usd": epic.budget_usd,
        "spent_usd": epic.totals.cost_usd,
        "remaining_usd": epic.remaining_budget(),
        "max_fix_rounds": epic.max_fix_rounds,
        "fix_rounds": epic.fix_rounds,
        "rollback_on_failure": epic.rollback_on_failure,
        "plan": epic.plan.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "steps": steps,
        "pending_approval": pending,
        "totals": epic.totals,
        "error": epic.error,
        "rollback": epic.rollback,
        "execution_id": epic.execution_id,
        "created_at": epic.created_at,
        "updated_at": epic.updated_at,
        "finished_at": epic.finished_at,
    })
}
