//! The HTTP API function: run intake, status, listing and cancel; sessions; epics.
//!
//! An axum `Router` is the handler. On Lambda, `lambda_http` feeds it API Gateway events; the local
//! stack serves the very same router over a TCP socket.

mod error;
mod extract;
mod openapi;
mod trace;
mod views;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use runner_adapters::Wiring;
use runner_core::domain::epic::EpicRequest;
use runner_core::domain::{RunRequest, StreamTokens, TraceContext};
use runner_core::ports::MemoryEntry;
use runner_core::ports::{KeyGrant, MemoryChange};
use runner_core::usecases::{
    Authenticator, DecisionRequest, EpicService, ListQuery, MemoryNote, MemorySearch, MemoryService, ReserveSession,
    RunOrigin, RunService, SessionService,
};

pub use error::ApiError;
use extract::{Caller, JsonBody};
use views::{Links, RunSummary, RunView, SessionView, SubmitResponse, epic_view};

/// What every route shares: the use cases and the stream settings, built once per cold start.
#[derive(Clone)]
pub struct AppState {
    pub runs: Arc<RunService>,
    pub sessions: Arc<SessionService>,
    pub auth: Authenticator,
    pub websocket_url: Option<String>,
    pub stream_tokens: Option<StreamTokens>,
    /// `None` where epics are not deployed (no `EPICS_TABLE`).
    pub epics: Option<Arc<EpicService>>,
    /// `None` where the API has no database.
    pub memory: Option<Arc<MemoryService>>,
}

/// Builds the API's state once per cold start.
pub async fn build(wiring: &Wiring) -> runner_core::Result<AppState> {
    let settings = wiring.settings()?;
    let workflows = Arc::new(settings.workflow_registry()?);
    Ok(AppState {
        runs: Arc::new(wiring.run_service(&settings, workflows.clone())),
        sessions: Arc::new(wiring.session_service(&settings, workflows)),
        auth: wiring.authenticator(&settings),
        websocket_url: settings.websocket_url.clone(),
        stream_tokens: settings.stream_token_secret.as_ref().map(|s| StreamTokens::new(s.as_bytes().to_vec())),
        epics: match settings.epics_table {
            Some(_) => Some(Arc::new(wiring.epic_service(false)?)),
            None => None,
        },
        memory: wiring.memory_service().await?.map(Arc::new),
    })
}

impl AppState {
    fn epics(&self) -> Result<&EpicService, ApiError> {
        self.epics.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "epics_not_deployed",
                "this deployment has no epics (EPICS_TABLE is not set)",
            )
        })
    }

    fn memory(&self) -> Result<&MemoryService, ApiError> {
        self.memory.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "memory_not_deployed",
                "this API has no database (DATABASE_URL is not set)",
            )
        })
    }

    /// Room for the largest allowed message even when JSON escaping doubles it.
    fn body_limit(&self) -> usize {
        self.runs.limits().max_message_bytes * 2 + 64 * 1024
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi::document))
        .route("/agent/claude-code/{workflow}/run", post(submit_run))
        .route("/agent/claude-code/run/{run_id}/status", get(run_status))
        .route("/agent/claude-code/run/{run_id}/cancel", post(cancel_run))
        .route("/agent/claude-code/runs", get(list_runs))
        .route("/agent/claude-code/workflows", get(list_workflows))
        .route("/agent/claude-code/run/{run_id}/output", get(run_output))
        .route("/agent/claude-code/sessions", post(reserve_session).get(list_sessions))
        .route("/agent/claude-code/sessions/{session_id}", get(get_session).delete(delete_session))
        .route("/agent/claude-code/sessions/{session_id}/history", get(session_history))
        .route("/agent/claude-code/memory", get(search_memory).post(add_memory))
        .route("/agent/claude-code/memory/{memory_id}", get(get_memory).patch(change_memory).delete(delete_memory))
        .route("/agent/claude-code/epics", post(start_epic).get(list_epics))
        .route("/agent/claude-code/epics/{epic_id}", get(get_epic))
        .route("/agent/claude-code/epics/{epic_id}/approvals/{approval_id}", post(decide_approval))
        .route("/agent/claude-code/epics/{epic_id}/cancel", post(cancel_epic))
        .route("/agent/claude-code/epics/{epic_id}/rollback", post(rollback_epic))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(axum::middleware::from_fn(trace::in_trace))
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn submit_run(
    State(state): State<AppState>,
    Caller(grant): Caller,
    Path(workflow): Path<String>,
    Extension(trace): Extension<TraceContext>,
    headers: HeaderMap,
    body: Result<JsonBody<RunRequest>, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    // An unknown workflow is reported before anything about the body.
    if !state.runs.knows_workflow(&workflow) {
        return Err(runner_core::Error::UnknownWorkflow(workflow).into());
    }
    let JsonBody(request) = body?;
    let idempotency_key = headers.get("idempotency-key").map(|v| v.to_str().unwrap_or("\u{0}"));
    let KeyGrant { key, owner, limits, repository_allowlist } = grant;
    let origin = RunOrigin { trace_id: Some(trace.trace_id), limits, repository_allowlist, ..RunOrigin::default() };
    let submitted = state.runs.submit(&owner, &workflow, request, idempotency_key, origin).await?;
    let links = Links::from_headers(&headers);
    let now = chrono::Utc::now();
    let token = state.stream_tokens.as_ref().map(|t| t.issue_for_key(submitted.run.run_id, &owner, &key, now));
    let body = SubmitResponse::new(&submitted.run, &links, state.websocket_url.as_deref(), token);
    let replayed = if submitted.replayed { "true" } else { "false" };
    Ok((StatusCode::ACCEPTED, [("idempotent-replayed", replayed)], Json(body)))
}

async fn run_status(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(run_id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let run = state.runs.get(&owner, &run_id).await?;
    Ok(Json(RunView::from(&run)))
}

async fn cancel_run(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(run_id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let (run, _) = state.runs.cancel(&owner, &run_id).await?;
    Ok(Json(RunView::from(&run)))
}

async fn list_runs(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let page = state.runs.list(&owner, query).await?;
    let runs: Vec<RunSummary> = page.items.iter().map(RunSummary::from).collect();
    Ok(Json(serde_json::json!({"runs": runs, "next_cursor": page.next_cursor})))
}

async fn list_workflows(State(state): State<AppState>, Caller(_): Caller) -> Json<serde_json::Value> {
    let registry = state.runs.workflows();
    let workflows: Vec<serde_json::Value> = registry
        .names()
        .filter_map(|name| registry.get(name))
        .map(|w| {
            serde_json::json!({
                "name": w.name, "description": w.config.description, "max_turns": w.config.max_turns,
                "timeout_seconds": w.config.timeout_seconds, "auto_commit": w.config.auto_commit,
                "permission_mode": w.config.permission_mode.as_cli_arg(), "allowed_tools": w.allowed_tools,
            })
        })
        .collect();
    Json(serde_json::json!({ "workflows": workflows }))
}

async fn run_output(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(run_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (run, frames) = state.runs.output(&owner, &run_id).await?;
    Ok(Json(serde_json::json!({"run_id": run.run_id, "status": run.status, "frames": frames})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    offset: Option<usize>,
}

fn page_query(query: Result<Query<PageQuery>, QueryRejection>) -> Result<PageQuery, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    Ok(query)
}

async fn reserve_session(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    JsonBody(request): JsonBody<ReserveSession>,
) -> Result<impl IntoResponse, ApiError> {
    let session = state.sessions.reserve(&owner, request).await?;
    Ok((StatusCode::CREATED, Json(SessionView::from(&session))))
}

async fn list_sessions(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query = page_query(query)?;
    let page = state.sessions.list(&owner, query.limit, query.cursor.as_deref()).await?;
    let sessions: Vec<SessionView> = page.items.iter().map(SessionView::from).collect();
    Ok(Json(serde_json::json!({"sessions": sessions, "next_cursor": page.next_cursor})))
}

async fn get_session(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(session_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = state.sessions.get(&owner, &session_id).await?;
    let mut view = serde_json::to_value(SessionView::from(&session)).unwrap_or_default();
    // The memory its runs produced, where the API has a database.
    if let Some(memory) = &state.memory {
        let produced = memory.of_session(&owner, session.session_id).await?;
        view["memory"] = serde_json::to_value(produced).unwrap_or_default();
    }
    Ok(Json(view))
}

async fn delete_session(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(session_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.sessions.delete(&owner, &session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn session_history(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(session_id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query = page_query(query)?;
    let (messages, next) = state.sessions.history(&owner, &session_id, query.offset, query.limit).await?;
    Ok(Json(serde_json::json!({"messages": messages, "next_offset": next})))
}

async fn start_epic(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<EpicRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency_key = headers.get("idempotency-key").map(|v| v.to_str().unwrap_or("\u{0}"));
    let started = state.epics()?.start(&owner, request, idempotency_key, None).await?;
    let replayed = if started.replayed { "true" } else { "false" };
    Ok((StatusCode::ACCEPTED, [("idempotent-replayed", replayed)], Json(epic_view(&started.epic))))
}

async fn list_epics(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query = page_query(query)?;
    let limit = query.limit.map(|n| n.to_string());
    let page = state.epics()?.list(&owner, limit, query.cursor.as_deref()).await?;
    let epics: Vec<serde_json::Value> = page.items.iter().map(epic_view).collect();
    Ok(Json(serde_json::json!({"epics": epics, "next_cursor": page.next_cursor})))
}

async fn get_epic(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(epic_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(epic_view(&state.epics()?.get(&owner, &epic_id).await?)))
}

async fn decide_approval(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path((epic_id, approval_id)): Path<(String, String)>,
    JsonBody(request): JsonBody<DecisionRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let epics = state.epics()?;
    let Ok(approval_id) = approval_id.parse::<usize>() else {
        // Another owner's (or no) epic is not found first, whatever the approval id looks like.
        let epic = epics.get(&owner, &epic_id).await?;
        let message = format!("epic {} has no approval {approval_id}", epic.epic_id);
        return Err(ApiError::new(StatusCode::NOT_FOUND, "approval_not_found", message));
    };
    let epic = epics.decide(&owner, &epic_id, approval_id, request).await?;
    Ok((StatusCode::ACCEPTED, Json(epic_view(&epic))))
}

async fn cancel_epic(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(epic_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let epic = state.epics()?.cancel(&owner, &epic_id).await?;
    Ok((StatusCode::ACCEPTED, Json(epic_view(&epic))))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    to_step: usize,
}

async fn rollback_epic(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(epic_id): Path<String>,
    JsonBody(request): JsonBody<RollbackRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let epic = state.epics()?.rollback(&owner, &epic_id, request.to_step).await?;
    Ok((StatusCode::ACCEPTED, Json(epic_view(&epic))))
}

async fn search_memory(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    query: Result<Query<MemorySearch>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let entries: Vec<MemoryEntry> = state.memory()?.search(&owner, query).await?;
    Ok(Json(serde_json::json!({"memory": entries})))
}

async fn add_memory(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    JsonBody(note): JsonBody<MemoryNote>,
) -> Result<impl IntoResponse, ApiError> {
    let entry = state.memory()?.add(&owner, note).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

async fn get_memory(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(memory_id): Path<String>,
) -> Result<Json<MemoryEntry>, ApiError> {
    Ok(Json(state.memory()?.get(&owner, &memory_id).await?))
}

async fn change_memory(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(memory_id): Path<String>,
    JsonBody(change): JsonBody<MemoryChange>,
) -> Result<Json<MemoryEntry>, ApiError> {
    Ok(Json(state.memory()?.change(&owner, &memory_id, change).await?))
}

async fn delete_memory(
    State(state): State<AppState>,
    Caller(KeyGrant { owner, .. }): Caller,
    Path(memory_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.memory()?.delete(&owner, &memory_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
