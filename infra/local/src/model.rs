//! A scripted stand-in for the Anthropic Messages API: `POST /v1/messages` answered with the
//! real SSE event sequence (`message_start`, `content_block_*`, `message_delta`, `message_stop`),
//! so the real `claude` binary runs real tool calls against it. Tests script the turns; the local
//! stack uses it as its clearly labelled offline model when no `ANTHROPIC_API_KEY` is set.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
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
    /// Accepts the request and never answers (the connection stays open).
    Stall,
    /// An API error with this HTTP status.
    Fail(u16),
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
}

#[derive(Default)]
struct Script {
    turns: VecDeque<Turn>,
    /// Bodies of every `/v1/messages` request, in arrival order.
    requests: Vec<Value>,
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

    pub fn push(&self, turns: impl IntoIterator<Item = Turn>) {
        self.script.lock().expect("script lock").turns.extend(turns);
    }

    /// Answer every request past the script with `turn` (the offline model's endless mode).
    pub fn set_fallback(&self, turn: Turn) {
        self.script.lock().expect("script lock").fallback = Some(turn);
    }

    pub fn requests(&self) -> Vec<Value> {
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

async fn count_tokens() -> Json<Value> {
    Json(json!({"input_tokens": 100}))
}

async fn messages(State(script): State<Arc<Mutex<Script>>>, Json(body): Json<Value>) -> Response {
    // Side requests without tools (titles, summaries) get a plain answer and do not consume
    // the script, which belongs to the agent loop.
    let agent_loop = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let turn = {
        let mut script = script.lock().expect("script lock");
        script.requests.push(body.clone());
        if agent_loop {
            let next = script.turns.pop_front().or_else(|| script.fallback.clone());
            match next {
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

async fn answer(mut turn: Turn, request: &Value) -> Response {
    while let Turn::Delayed(wait, inner) = turn {
        tokio::time::sleep(wait).await;
        turn = *inner;
    }
    let model = request["model"].as_str().unwrap_or("claude-scripted").to_owned();
    let (block, stop_reason) = match turn {
        Turn::Stall => {
            // Never answer; the client's watchdog has to deal with it.
            std::future::pending::<()>().await;
            unreachable!()
        }
        Turn::Fail(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, Json(api_error("api_error", "scripted failure"))).into_response();
        }
        Turn::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
        Turn::ToolUse { name, input } => {
            let id = format!("toolu_{}", uuid_like());
            (json!({"type": "tool_use", "id": id, "name": name, "input": input}), "tool_use")
        }
        Turn::Delayed(..) => unreachable!("unwrapped above"),
    };
    if request["stream"].as_bool() != Some(true) {
        let message = json!({
            "id": format!("msg_{}", uuid_like()), "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": 100, "output_tokens": 20}
        });
        return Json(message).into_response();
    }
    let (start_block, delta) = match block["type"].as_str() {
        Some("tool_use") => (
            json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
            json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
        ),
        _ => (json!({"type": "text", "text": ""}), json!({"type": "text_delta", "text": block["text"]})),
    };
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {
            "id": format!("msg_{}", uuid_like()), "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 100, "output_tokens": 1}}}),
        ),
        ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": start_block})),
        ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": delta})),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": 20}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let body: String = events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(body))
        .expect("static response")
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

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
