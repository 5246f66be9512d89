//! `claude-runner mcp`: the HTTP API as MCP tools over stdio, for an orchestrator (Genie) whose
//! model starts Claude Code runs, waits for them and reads what they did.
//!
//! Each tool is a thin call to the API. An API failure (`{"error": {"code", "message"}}`) comes
//! back as a tool result with `isError: true` whose text is that error as JSON (with the HTTP
//! status), never as a protocol error: the calling model reads it and decides what to do.
//! Stdout carries the protocol only; nothing else may print there.

use std::time::Duration;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, ServiceExt as _, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Endpoints, segment};
use crate::error::Error;

/// A run in one of these statuses has ended.
const TERMINAL: [&str; 4] = ["completed", "failed", "cancelled", "timed_out"];
const POLL_EVERY: Duration = Duration::from_secs(1);
const DEFAULT_WAIT_SECONDS: u64 = 900;
/// A wait longer than this is a mistake in the arguments (and would overflow an `Instant`).
const MAX_WAIT_SECONDS: u64 = 24 * 3600;

/// Serves the tools on stdin/stdout until the client closes its end.
pub async fn serve(http: reqwest::Client, endpoints: &Endpoints) -> Result<(), Error> {
    let server = RunnerTools { http, base: endpoints.http.clone(), key: endpoints.key.clone() };
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::InvalidResponse(format!("the MCP client did not initialize: {e}")))?;
    running.waiting().await.map_err(|e| Error::InvalidResponse(format!("the MCP server stopped: {e}")))?;
    Ok(())
}

#[derive(Clone)]
pub struct RunnerTools {
    http: reqwest::Client,
    /// The API's base URL, without a trailing `/`.
    base: String,
    key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunWorkflowParams {
    /// The workflow to run, as `list_workflows` names it (e.g. `implement`).
    pub workflow: String,
    /// The task for Claude Code, in plain language.
    pub message: String,
    /// The git branch to work on; commits are pushed there.
    pub branch: String,
    /// At most this many model turns (the workflow's default otherwise).
    pub max_turns: Option<u32>,
    /// Continue this session's conversation (a session id from an earlier run).
    pub session_id: Option<String>,
    /// The repository to clone (the deployment's default otherwise).
    pub repository_url: Option<String>,
    /// Wait for the run to end and return its final status (default true); false returns as
    /// soon as the run is queued.
    pub wait: Option<bool>,
    /// With `wait`: give up waiting after this many seconds (default 900); the run goes on and
    /// `get_workflow_status` tells how it ends.
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunIdParams {
    /// The run's id (a UUID, as `run_workflow` returned it).
    pub run_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListRunsParams {
    /// Only runs in this status: queued, preparing, running, completed, failed, cancelled or
    /// timed_out.
    pub status: Option<String>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// At most this many runs (newest first).
    pub limit: Option<u32>,
    /// Continue a listing from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunOutputParams {
    /// The run's id.
    pub run_id: String,
    /// Only frames of these kinds, e.g. ["assistant", "result"] (all frames otherwise).
    pub kinds: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ResumeSessionParams {
    /// The session to continue (same workflow, repository and branch as before).
    pub session_id: String,
    /// The next message in the conversation.
    pub message: String,
    /// At most this many model turns (the workflow's default otherwise).
    pub max_turns: Option<u32>,
    /// Wait for the run to end and return its final status (default true).
    pub wait: Option<bool>,
    /// With `wait`: give up waiting after this many seconds (default 900).
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchMemoryParams {
    /// What you are about to do or what went wrong, in plain words: the most similar entries
    /// come first (the most recently seen otherwise).
    pub query: Option<String>,
    /// Only memory of this repository, as runs name it (its repository_url).
    pub repository: Option<String>,
    /// Only entries of this kind: decision, failure, pattern or learning.
    pub kind: Option<String>,
    /// At most this many entries (1 to 100, default 20).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddMemoryParams {
    /// The lesson, in a sentence or two that a later run can act on without this conversation.
    pub text: String,
    /// The repository it is about, as runs name it (the deployment's default otherwise).
    pub repository: Option<String>,
    /// decision, failure, pattern or learning (the default).
    pub kind: Option<String>,
}

#[tool_router]
impl RunnerTools {
    #[tool(
        description = "Run a Claude Code workflow on a repository branch. By default waits until the run ends and returns its final status: status, result_summary (Claude's final answer), error, cost_usd, num_turns, session_id (pass it to resume_session to continue the conversation) and commits. With wait=false returns the queued run's id at once."
    )]
    async fn run_workflow(&self, Parameters(p): Parameters<RunWorkflowParams>) -> Result<CallToolResult, ErrorData> {
        let mut body = json!({"message": p.message, "branch": p.branch});
        if let Some(n) = p.max_turns {
            body["max_turns"] = json!(n);
        }
        if let Some(s) = p.session_id {
            body["session_id"] = json!(s);
        }
        if let Some(r) = p.repository_url {
            body["repository_url"] = json!(r);
        }
        Ok(reply(self.submit(&p.workflow, &body, p.wait, p.timeout_seconds).await))
    }

    #[tool(
        description = "A run's current status: status (queued, preparing, running, completed, failed, cancelled, timed_out), result_summary, error, cost_usd, num_turns, session_id, commits, timestamps."
    )]
    async fn get_workflow_status(&self, Parameters(p): Parameters<RunIdParams>) -> Result<CallToolResult, ErrorData> {
        let path = format!("/agent/claude-code/run/{}/status", segment(&p.run_id));
        Ok(reply(self.call(reqwest::Method::GET, &path, &[], None).await))
    }

    #[tool(
        description = "The workflows this deployment runs: name, description, max_turns, timeout_seconds and whether it commits its changes (auto_commit)."
    )]
    async fn list_workflows(&self) -> Result<CallToolResult, ErrorData> {
        Ok(reply(self.call(reqwest::Method::GET, "/agent/claude-code/workflows", &[], None).await))
    }

    #[tool(
        description = "Cancel a queued or running run. Returns its status with cancel_requested; a run that has already ended cannot be cancelled (error invalid_transition)."
    )]
    async fn kill_workflow(&self, Parameters(p): Parameters<RunIdParams>) -> Result<CallToolResult, ErrorData> {
        let path = format!("/agent/claude-code/run/{}/cancel", segment(&p.run_id));
        Ok(reply(self.call(reqwest::Method::POST, &path, &[], None).await))
    }

    #[tool(
        description = "Your runs, newest first, optionally only those in one status or of one workflow. Returns {runs, next_cursor}; pass next_cursor as cursor for the next page."
    )]
    async fn list_runs(&self, Parameters(p): Parameters<ListRunsParams>) -> Result<CallToolResult, ErrorData> {
        let mut query: Vec<(&str, String)> = Vec::new();
        query.extend(p.status.map(|s| ("status", s)));
        query.extend(p.workflow.map(|w| ("workflow", w)));
        query.extend(p.limit.map(|n| ("limit", n.to_string())));
        query.extend(p.cursor.map(|c| ("cursor", c)));
        Ok(reply(self.call(reqwest::Method::GET, "/agent/claude-code/runs", &query, None).await))
    }

    #[tool(
        description = "The frames a finished run produced, in order: the Claude Code CLI's stream-json messages (kinds system, assistant, user, result, …) with seq, ts, kind, subtype and data. Optionally only some kinds. Fails with output_not_ready while the run has not ended."
    )]
    async fn get_run_output(&self, Parameters(p): Parameters<RunOutputParams>) -> Result<CallToolResult, ErrorData> {
        let path = format!("/agent/claude-code/run/{}/output", segment(&p.run_id));
        let output = self.call(reqwest::Method::GET, &path, &[], None).await.map(|mut output| {
            if let (Some(kinds), Some(frames)) = (&p.kinds, output.get_mut("frames").and_then(Value::as_array_mut)) {
                frames.retain(|frame| frame["kind"].as_str().is_some_and(|kind| kinds.iter().any(|k| k == kind)));
            }
            output
        });
        Ok(reply(output))
    }

    #[tool(
        description = "Continue a session's conversation with a new message: a new run of the session's workflow on its repository and branch, with Claude Code resuming where the session left off. Waits for the end like run_workflow unless wait=false."
    )]
    async fn resume_session(
        &self,
        Parameters(p): Parameters<ResumeSessionParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("/agent/claude-code/sessions/{}", segment(&p.session_id));
        let session = match self.call(reqwest::Method::GET, &path, &[], None).await {
            Ok(session) => session,
            Err(failure) => return Ok(failure.into_result()),
        };
        let Some(workflow) = session["workflow"].as_str() else {
            return Ok(Failure::local("bad_response", "the session names no workflow").into_result());
        };
        let mut body = json!({
            "message": p.message,
            "branch": session["branch"],
            "repository_url": session["repository_url"],
            "session_id": p.session_id,
        });
        if let Some(n) = p.max_turns {
            body["max_turns"] = json!(n);
        }
        Ok(reply(self.submit(workflow, &body, p.wait, p.timeout_seconds).await))
    }

    #[tool(
        description = "What earlier runs of a repository taught: decisions taken, failures and their causes, patterns of the code base, learnings (recorded from runs, or added as notes). Search it before starting work on a repository, and after a failure to see whether it happened before. With query, the most similar entries first. Returns {memory: [...]}, each with memory_id, kind, status (proposed, accepted, retired), text, fields, occurrences, first_seen, last_seen and the workflow, run_id and session_id it came from."
    )]
    async fn search_memory(&self, Parameters(p): Parameters<SearchMemoryParams>) -> Result<CallToolResult, ErrorData> {
        let mut query: Vec<(&str, String)> = Vec::new();
        query.extend(p.query.map(|q| ("q", q)));
        query.extend(p.repository.map(|r| ("repository", r)));
        query.extend(p.kind.map(|k| ("kind", k)));
        query.extend(p.limit.map(|n| ("limit", n.to_string())));
        Ok(reply(self.call(reqwest::Method::GET, "/agent/claude-code/memory", &query, None).await))
    }

    #[tool(
        description = "Remember something for later runs: a decision and why, a failure's cause and fix, a pattern of the code base, or a learning, that a future run could not easily find in the repository itself. Accepted at once. Search with search_memory first rather than add a duplicate. Returns the new entry with its memory_id."
    )]
    async fn add_memory(&self, Parameters(p): Parameters<AddMemoryParams>) -> Result<CallToolResult, ErrorData> {
        let mut body = json!({"text": p.text});
        if let Some(r) = p.repository {
            body["repository_url"] = json!(r);
        }
        if let Some(k) = p.kind {
            body["kind"] = json!(k);
        }
        Ok(reply(self.call(reqwest::Method::POST, "/agent/claude-code/memory", &[], Some(&body)).await))
    }
}

#[tool_handler]
impl ServerHandler for RunnerTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Runs Claude Code workflows on claude-runner. list_workflows shows what can run; run_workflow \
                 starts one and (by default) waits for its result; resume_session continues a run's \
                 conversation by its session_id; get_workflow_status, list_runs, get_run_output and \
                 kill_workflow inspect and stop runs. search_memory reads what earlier runs of a \
                 repository taught; add_memory records a lesson for later runs. Errors carry the \
                 API's error code.",
            )
    }
}

impl RunnerTools {
    /// One API call: the JSON body of a 2xx answer, or the failure as the API described it.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).header("x-api-key", &self.key);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| Failure::transport(format!("the API did not answer: {e}")))?;
        let status = response.status();
        let bytes =
            response.bytes().await.map_err(|e| Failure::transport(format!("the API's answer was cut off: {e}")))?;
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(parsed);
        }
        let code = match parsed["error"]["code"].as_str() {
            Some(code) => code.to_owned(),
            None => format!("http_{}", status.as_u16()),
        };
        let message = match parsed["error"]["message"].as_str() {
            Some(message) => message.to_owned(),
            None => String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        };
        Err(Failure { code, message, http_status: Some(status.as_u16()), retryable: status.is_server_error() })
    }

    /// Submits a run and, unless `wait` is false, waits for it to end.
    async fn submit(
        &self,
        workflow: &str,
        body: &Value,
        wait: Option<bool>,
        timeout_seconds: Option<u64>,
    ) -> Result<Value, Failure> {
        let path = format!("/agent/claude-code/{}/run", segment(workflow));
        let submitted = self.call(reqwest::Method::POST, &path, &[], Some(body)).await?;
        if !wait.unwrap_or(true) {
            return Ok(submitted);
        }
        let Some(run_id) = submitted["run_id"].as_str() else {
            return Err(Failure::local("bad_response", "the API's answer to the submit has no run_id"));
        };
        let timeout = Duration::from_secs(timeout_seconds.unwrap_or(DEFAULT_WAIT_SECONDS).min(MAX_WAIT_SECONDS));
        self.wait_for_end(run_id, timeout).await
    }

    /// Polls the run's status every second until it has ended or `timeout` has passed; then the
    /// last status, marked `wait_timed_out: true` when the run had not ended. Failures the API
    /// calls temporary (5xx, no answer) are polled through until the timeout.
    async fn wait_for_end(&self, run_id: &str, timeout: Duration) -> Result<Value, Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let path = format!("/agent/claude-code/run/{}/status", segment(run_id));
        loop {
            let out_of_time = tokio::time::Instant::now() >= deadline;
            match self.call(reqwest::Method::GET, &path, &[], None).await {
                Ok(run) if run["status"].as_str().is_some_and(|s| TERMINAL.contains(&s)) => return Ok(run),
                Ok(mut run) if out_of_time => {
                    if let Some(fields) = run.as_object_mut() {
                        fields.insert("wait_timed_out".to_owned(), json!(true));
                    }
                    return Ok(run);
                }
                Ok(_) => {}
                Err(failure) if failure.retryable && !out_of_time => {}
                Err(failure) => return Err(failure),
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// Why a tool could not do its job, as the calling model reads it.
#[derive(Debug)]
struct Failure {
    code: String,
    message: String,
    /// The API's HTTP status; `None` when it did not answer.
    http_status: Option<u16>,
    retryable: bool,
}

impl Failure {
    fn transport(message: String) -> Self {
        Self { code: "api_unreachable".to_owned(), message, http_status: None, retryable: true }
    }

    fn local(code: &str, message: &str) -> Self {
        Self { code: code.to_owned(), message: message.to_owned(), http_status: None, retryable: false }
    }

    fn into_result(self) -> CallToolResult {
        let body = json!({"error": {"code": self.code, "message": self.message, "http_status": self.http_status}});
        CallToolResult::error(vec![ContentBlock::text(pretty(&body))])
    }
}

fn reply(result: Result<Value, Failure>) -> CallToolResult {
    match result {
        Ok(value) => CallToolResult::success(vec![ContentBlock::text(pretty(&value))]),
        Err(failure) => failure.into_result(),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape_their_route() {
        assert_eq!(segment("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"), "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(segment("../runs?x=1"), "..%2Fruns%3Fx%3D1");
    }

    #[test]
    fn every_tool_has_a_description_and_an_object_input_schema() {
        let tools = RunnerTools::tool_router().list_all();
        let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "add_memory",
                "get_run_output",
                "get_workflow_status",
                "kill_workflow",
                "list_runs",
                "list_workflows",
                "resume_session",
                "run_workflow",
                "search_memory"
            ]
        );
        for tool in &tools {
            assert!(tool.description.as_deref().is_some_and(|d| !d.is_empty()), "{}", tool.name);
            assert_eq!(tool.input_schema.get("type"), Some(&json!("object")), "{}", tool.name);
        }
    }
}
