//! A scripted stand-in for the Anthropic Messages API: `POST /v1/messages` answered with the
//! real SSE event sequence (`message_start`, `ping`, `content_block_*` with several deltas per
//! block, `message_delta`, `message_stop`, or a mid-stream `error`), so the real `claude` binary
//! runs real tool calls against it. Like the real API it refuses a request without an API key
//! (`x-api-key` or `authorization: Bearer …`) or without `anthropic-version`. Tests script the
//! turns, shared or per run (`script`, keyed by a word in the caller's message); the local stack
//! uses it as its clearly labelled offline model when no `ANTHROPIC_API_KEY` is set.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::LocalError;

/// One answer of the model.
#[derive(Clone, Debug)]
pub enum Turn {
    Text(String),
    /// A tool call; the CLI runs the tool and comes back with its result.
    ToolUse {
        name: String,
        input: Value,
    },
    /// One assistant message with one content block per item (`Text` and `ToolUse` only), in
    /// order: e.g. text then a tool call, or two parallel tool calls.
    Blocks(Vec<Turn>),
    /// Accepts the request and never answers (the connection stays open).
    Stall,
    /// Starts the answer (`message_start`, a text block with one delta), then sends nothing
    /// more while keeping the connection open.
    StallMidStream,
    /// An API error with this HTTP status (the error type the real API gives that status).
    Fail(u16),
    /// `message_start`, then an `error` event of this type and message, and the stream ends.
    /// A non-streaming request gets the same error as an HTTP error with the type's status.
    StreamError {
        kind: String,
        message: String,
    },
    /// Waits, then answers with the inner turn.
    Delayed(Duration, Box<Turn>),
}

impl Turn {
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }
    pub fn tool(name: &str, input: Value) -> Self {
        Self::ToolUse { name: name.to_owned(), input }
    }
    pub fn write(path: &str, content: &str) -> Self {
        Self::tool("Write", json!({"file_path": path, "content": content}))
    }
    pub fn stream_error(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self::StreamError { kind: kind.into(), message: message.into() }
    }
}

/// One request as it arrived: its headers (names lower-case, repeated values joined with ", ")
/// and its JSON body.
type Recorded = (BTreeMap<String, String>, Value);

#[derive(Default)]
struct Script {
    turns: VecDeque<Turn>,
    /// Per-run scripts: the turns of agent-loop requests whose caller text contains the keyword.
    keyed: Vec<(String, VecDeque<Turn>)>,
    /// Every `/v1/messages` request, in arrival order.
    requests: Vec<Recorded>,
    /// What answers once the script is used up.
    fallback: Option<Turn>,
    /// Answer like a tiny agent instead (the local stack's offline model).
    demo: bool,
}

pub struct ScriptedModel {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    stop: watch::Sender<bool>,
}

impl ScriptedModel {
    pub async fn start(turns: Vec<Turn>) -> Result<Self, LocalError> {
        let script = Arc::new(Mutex::new(Script { turns: turns.into(), ..Script::default() }));
        let router = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .fallback(|| async { (StatusCode::NOT_FOUND, Json(api_error("not_found_error", "no such endpoint"))) })
            .with_state(script.clone());
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(LocalError::io("bind the model port"))?;
        let addr = listener.local_addr().map_err(LocalError::io("model address"))?;
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(Self { addr, script, stop })
    }

    /// The local stack's offline model: for each request it writes a note about the task into
    /// the workspace with the real `Write` tool, then reports what it did.
    pub async fn offline_demo() -> Result<Self, LocalError> {
        let model = Self::start(Vec::new()).await?;
        model.script.lock().expect("script lock").demo = true;
        Ok(model)
    }

    /// The value for `ANTHROPIC_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends to the shared script (the turns of agent-loop requests no keyword claims).
    pub fn push(&self, turns: impl IntoIterator<Item = Turn>) {
        self.script.lock().expect("script lock").turns.extend(turns);
    }

    /// A script of its own for one run: agent-loop requests whose caller text (the caller's
    /// message, see `caller_text`) contains `keyword` take their turns from `turns`, in order,
    /// and never from the shared script; once these are used up, the fallback answers (or
    /// "Done."). Calling it again with the same keyword appends; the first keyword registered
    /// that matches wins.
    pub fn script(&self, keyword: &str, turns: Vec<Turn>) {
        let mut script = self.script.lock().expect("script lock");
        match script.keyed.iter_mut().find(|(k, _)| k == keyword) {
            Some((_, queue)) => queue.extend(turns),
            None => script.keyed.push((keyword.to_owned(), turns.into())),
        }
    }

    /// Answer every request past the script with `turn` (the offline model's endless mode).
    pub fn set_fallback(&self, turn: Turn) {
        self.script.lock().expect("script lock").fallback = Some(turn);
    }

    /// Bodies of every `/v1/messages` request, in arrival order (refused ones included).
    pub fn requests(&self) -> Vec<Value> {
        self.script.lock().expect("script lock").requests.iter().map(|(_, body)| body.clone()).collect()
    }

    /// Every `/v1/messages` request as `(headers, body)`, in arrival order; header names are
    /// lower-case (`x-api-key`, `anthropic-version`, …).
    pub fn requests_with_headers(&self) -> Vec<(BTreeMap<String, String>, Value)> {
        self.script.lock().expect("script lock").requests.clone()
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.stop();
    }
}

fn api_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The error type the real API gives with this HTTP status.
fn error_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The HTTP status the real API gives with this error type.
fn error_status(kind: &str) -> StatusCode {
    let code = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    };
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(api_error(kind, message))).into_response()
}

fn recorded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if let Some(existing) = out.get_mut(name.as_str()) {
            existing.push_str(", ");
            existing.push_str(&value);
        } else {
            out.insert(name.as_str().to_owned(), value);
        }
    }
    out
}

/// The real API's refusals: no API key is a 401 `authentication_error`, no `anthropic-version`
/// a 400 `invalid_request_error`.
fn refusal(headers: &HeaderMap) -> Option<Response> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let api_key = text(header::HeaderName::from_static("x-api-key")).is_some_and(|k| !k.is_empty());
    let bearer = text(header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| !token.trim().is_empty());
    if !api_key && !bearer {
        return Some(error_response(StatusCode::UNAUTHORIZED, "authentication_error", "x-api-key header is required"));
    }
    if text(header::HeaderName::from_static("anthropic-version")).is_none_or(str::is_empty) {
        return Some(error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    None
}

async fn count_tokens(headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&headers) {
        return refused;
    }
    Json(json!({"input_tokens": 100})).into_response()
}

async fn messages(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    script.lock().expect("script lock").requests.push((recorded_headers(&headers), body.clone()));
    if let Some(refused) = refusal(&headers) {
        return refused;
    }
    // Side requests without tools (titles, summaries) get a plain answer and do not consume
    // the script, which belongs to the agent loop.
    let agent_loop = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let turn = {
        let mut script = script.lock().expect("script lock");
        if agent_loop {
            let caller = caller_text(&body);
            let keyed = caller
                .as_deref()
                .and_then(|text| script.keyed.iter().position(|(keyword, _)| text.contains(keyword.as_str())));
            let next = match keyed {
                Some(index) => script.keyed[index].1.pop_front(),
                None => script.turns.pop_front(),
            };
            match next.or_else(|| script.fallback.clone()) {
                Some(turn) => turn,
                None if script.demo => demo_turn(&body),
                None => Turn::text("Done."),
            }
        } else {
            Turn::text("ok")
        }
    };
    answer(turn, &body).await
}

/// The caller's own message in an agent-loop request: the last user message that is not a
/// tool result (in a new conversation the first one; when resuming, the newest prompt), and
/// in it the last text block that is not a `<system-reminder>` (the CLI puts its context, git
/// status and recent commits, in reminder blocks before the caller's text).
fn caller_text(request: &Value) -> Option<String> {
    let messages = request["messages"].as_array()?;
    let prompt = messages.iter().rev().filter(|m| m["role"] == "user").find(|m| match &m["content"] {
        Value::String(_) => true,
        Value::Array(blocks) => !blocks.iter().any(|b| b["type"] == "tool_result"),
        _ => false,
    })?;
    match &prompt["content"] {
        Value::String(text) => Some(text.clone()),
        Value::Array(blocks) => {
            let texts: Vec<&str> =
                blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect();
            texts
                .iter()
                .rev()
                .find(|t| !t.trim_start().starts_with("<system-reminder>"))
                .or(texts.last())
                .map(|t| (*t).to_owned())
        }
        _ => None,
    }
}

/// `Text` and `ToolUse` items, nested `Blocks` flattened; anything else is a scripting mistake.
fn flatten(items: Vec<Turn>, out: &mut Vec<Turn>) -> Result<(), String> {
    for item in items {
        match item {
            Turn::Text(_) | Turn::ToolUse { .. } => out.push(item),
            Turn::Blocks(inner) => flatten(inner, out)?,
            other => return Err(format!("Turn::Blocks holds only Text and ToolUse items, not {other:?}")),
        }
    }
    Ok(())
}

/// `text` cut into about `parts` pieces at character boundaries (one piece if it is short).
fn pieces(text: &str, parts: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for k in 1..parts {
        let mut cut = text.len() * k / parts;
        while cut < text.len() && !text.is_char_boundary(cut) {
            cut += 1;
        }
        if cut > start {
            out.push(&text[start..cut]);
            start = cut;
        }
    }
    if start < text.len() || out.is_empty() {
        out.push(&text[start..]);
    }
    out
}

/// How many deltas each text or tool-input block is streamed in.
const DELTAS_PER_BLOCK: usize = 3;

fn sse(events: &[(&str, Value)]) -> String {
    events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect()
}

fn ping() -> (&'static str, Value) {
    ("ping", json!({"type": "ping"}))
}

fn message_start(id: &str, model: &str) -> (&'static str, Value) {
    (
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 100, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    )
}

fn event_stream(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("static response")
}

async fn answer(mut turn: Turn, request: &Value) -> Response {
    while let Turn::Delayed(wait, inner) = turn {
        tokio::time::sleep(wait).await;
        turn = *inner;
    }
    let streaming = request["stream"].as_bool() == Some(true);
    let model = request["model"].as_str().unwrap_or("claude-scripted").to_owned();
    let message_id = format!("msg_{}", uuid_like());
    let items = match turn {
        Turn::Stall => {
            // Never answer; the client's watchdog has to deal with it.
            std::future::pending::<()>().await;
            unreachable!()
        }
        Turn::StallMidStream => {
            if !streaming {
                std::future::pending::<()>().await;
                unreachable!()
            }
            let events = [
                message_start(&message_id, &model),
                ping(),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": "Let me think"}}),
                ),
            ];
            // The first events, then a body that never ends and never sends another byte.
            let first = futures_util::stream::iter([Ok::<String, Infallible>(sse(&events))]);
            let body = first.chain(futures_util::stream::pending::<Result<String, Infallible>>());
            return event_stream(Body::from_stream(body));
        }
        Turn::Fail(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error_response(status, error_kind(status), "scripted failure");
        }
        Turn::StreamError { kind, message } => {
            if !streaming {
                return error_response(error_status(&kind), &kind, &message);
            }
            let events = [message_start(&message_id, &model), ping(), ("error", api_error(&kind, &message))];
            return event_stream(Body::from(sse(&events)));
        }
        Turn::Text(_) | Turn::ToolUse { .. } => vec![turn],
        Turn::Blocks(items) => {
            let mut flat = Vec::new();
            if let Err(mistake) = flatten(items, &mut flat) {
                tracing::error!(%mistake, "the model script is wrong");
                return error_response(StatusCode::INTERNAL_SERVER_ERROR, "api_error", &mistake);
            }
            flat
        }
        Turn::Delayed(..) => unreachable!("unwrapped above"),
    };
    // Each tool call gets an id of its own: the CLI drops a turn whose ids it has seen before.
    let blocks: Vec<Value> = items
        .into_iter()
        .map(|item| match item {
            Turn::ToolUse { name, input } => {
                json!({"type": "tool_use", "id": format!("toolu_{}", uuid_like()), "name": name, "input": input})
            }
            Turn::Text(text) => json!({"type": "text", "text": text}),
            _ => unreachable!("flattened to Text and ToolUse"),
        })
        .collect();
    let stop_reason = if blocks.iter().any(|b| b["type"] == "tool_use") { "tool_use" } else { "end_turn" };
    if !streaming {
        let message = json!({
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": blocks, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": 100, "output_tokens": 20,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        });
        return Json(message).into_response();
    }
    let mut events = vec![message_start(&message_id, &model), ping()];
    for (index, block) in blocks.iter().enumerate() {
        let (start_block, deltas): (Value, Vec<Value>) = match block["type"].as_str() {
            Some("tool_use") => {
                let input = block["input"].to_string();
                (
                    json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
                    pieces(&input, DELTAS_PER_BLOCK)
                        .into_iter()
                        .map(|part| json!({"type": "input_json_delta", "partial_json": part}))
                        .collect(),
                )
            }
            _ => (
                json!({"type": "text", "text": ""}),
                pieces(block["text"].as_str().unwrap_or_default(), DELTAS_PER_BLOCK)
                    .into_iter()
                    .map(|part| json!({"type": "text_delta", "text": part}))
                    .collect(),
            ),
        };
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start_block}),
        ));
        for delta in deltas {
            events
                .push(("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta})));
        }
        events.push(("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        events.push(ping());
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": 20}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    event_stream(Body::from(sse(&events)))
}

/// The offline model's move: write a note on the first turn, then finish.
fn demo_turn(request: &Value) -> Turn {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let has_tool_result = messages
        .iter()
        .any(|m| m["content"].as_array().is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result")));
    if has_tool_result {
        return Turn::text(
            "[offline model] I wrote CLAUDE_RUNNER_OFFLINE.md describing the task. \
             Set ANTHROPIC_API_KEY before `cargo xtask up` to run the real model.",
        );
    }
    let task = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| match &m["content"] {
            Value::String(text) => Some(text.clone()),
            Value::Array(blocks) => blocks.iter().rev().find_map(|b| b["text"].as_str().map(str::to_owned)),
            _ => None,
        })
        .next_back()
        .unwrap_or_default();
    let note = format!(
        "# Offline model run\n\nThis file was written by claude-runner's offline model (no ANTHROPIC_API_KEY was set).\n\n## Task\n\n{task}\n"
    );
    Turn::write("CLAUDE_RUNNER_OFFLINE.md", &note)
}

/// A fresh id: a per-process prefix (ids from an earlier process, e.g. in a resumed
/// transcript, never come back) and a counter.
fn uuid_like() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static PREFIX: OnceLock<u32> = OnceLock::new();
    let prefix = *PREFIX.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.subsec_nanos() ^ (now.as_secs() as u32).rotate_left(7) ^ std::process::id().rotate_left(16)
    });
    format!("{prefix:08x}{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cut_at_character_boundaries_and_lose_nothing() {
        for text in ["", "a", "ab", "héllo wörld ✓ — ünïcode", "{\"file_path\":\"x.txt\",\"content\":\"x\"}"] {
            let parts = pieces(text, 3);
            assert_eq!(parts.concat(), text);
            assert!(parts.len() <= 3 && !parts.is_empty());
        }
        assert_eq!(pieces("abcdef", 3), ["ab", "cd", "ef"]);
    }

    #[test]
    fn the_callers_text_is_the_last_non_reminder_text_of_the_newest_prompt() {
        let fresh = json!({"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\ngitStatus: commit KW-B\n</system-reminder>"},
                {"type": "text", "text": "Write it KW-A\n"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Write", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]});
        assert_eq!(caller_text(&fresh).as_deref(), Some("Write it KW-A\n"));
        let resumed = json!({"messages": [
            {"role": "user", "content": "first KW-A"},
            {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
            {"role": "user", "content": [{"type": "text", "text": "second KW-B"}]}]});
        assert_eq!(caller_text(&resumed).as_deref(), Some("second KW-B"));
    }
}
