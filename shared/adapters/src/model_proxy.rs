//! The model endpoint, served to one run's CLI on loopback so the model key never enters the
//! sandbox: the CLI holds a per-run placeholder, and the proxy forwards each request to the real
//! endpoint with the real key. Whatever the run's commands read or send out, the key is not in it,
//! and the placeholder is worthless once the run has ended (its proxy is gone).
//!
//! It also counts what passes: the tokens of every Messages answer (streamed or not) and their
//! cost at list prices. With a budget, a request made once the run has spent it twice over is
//! refused, whoever in the sandbox makes it. The CLI stops itself at the budget (`--max-budget-usd`,
//! by its own prices, its last call possibly beyond it), so only calls made around the CLI, or a
//! CLI that does not stop, get that far; the margin keeps two price lists from disagreeing into a
//! stop the CLI would not have made.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use runner_core::ports::ModelUsage;
use runner_core::{Error, Result};

/// The most a request body may be (a long conversation with images is megabytes, not hundreds).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Headers that belong to one hop, or that the proxy sets itself.
const NOT_FORWARDED: [&str; 7] =
    ["host", "x-api-key", "authorization", "content-length", "connection", "transfer-encoding", "keep-alive"];

/// One run's model endpoint on loopback; stops when dropped.
pub struct ModelProxy {
    addr: SocketAddr,
    placeholder: String,
    meter: Arc<Meter>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

struct Upstream {
    client: reqwest::Client,
    base: String,
    key: String,
    placeholder: String,
    meter: Arc<Meter>,
}

/// Spending this many times the budget at the endpoint stops the run there.
const BUDGET_BACKSTOP: f64 = 2.0;

/// The run's model calls so far, and what it may spend.
struct Meter {
    usage: Mutex<ModelUsage>,
    budget_usd: Option<f64>,
}

impl Meter {
    fn spent(&self) -> bool {
        let usage = self.usage.lock().expect("meter lock");
        self.budget_usd.is_some_and(|budget| usage.cost_usd >= budget * BUDGET_BACKSTOP)
    }

    fn add(&self, model: &str, tokens: Tokens) {
        let price = price_of(model);
        let mut usage = self.usage.lock().expect("meter lock");
        usage.input_tokens += tokens.input;
        usage.cache_creation_input_tokens += tokens.cache_creation;
        usage.cache_read_input_tokens += tokens.cache_read;
        usage.output_tokens += tokens.output;
        usage.cost_usd += (tokens.input as f64 * price.input
            + tokens.cache_creation as f64 * price.input * 1.25
            + tokens.cache_read as f64 * price.input * 0.1
            + tokens.output as f64 * price.output)
            / 1_000_000.0;
    }
}

/// Tokens of one answer, or of one step of a streamed one.
#[derive(Clone, Copy, Debug, Default)]
struct Tokens {
    input: u64,
    cache_creation: u64,
    cache_read: u64,
    output: u64,
}

impl Tokens {
    fn of(usage: &serde_json::Value) -> Self {
        let n = |key: &str| usage[key].as_u64().unwrap_or(0);
        Self {
            input: n("input_tokens"),
            cache_creation: n("cache_creation_input_tokens"),
            cache_read: n("cache_read_input_tokens"),
            output: n("output_tokens"),
        }
    }
}

/// List prices in USD per million tokens (input, output); cache writes cost 1.25× input, cache
/// reads 0.1×.
struct Price {
    input: f64,
    output: f64,
}

/// By model-name prefix, most specific first. A model not listed is priced as the dearest, so
/// a budget errs on the side of stopping.
const PRICES: &[(&str, Price)] = &[
    ("claude-opus-4-5", Price { input: 5.0, output: 25.0 }),
    ("claude-opus", Price { input: 15.0, output: 75.0 }),
    ("claude-sonnet", Price { input: 3.0, output: 15.0 }),
    ("claude-3-7-sonnet", Price { input: 3.0, output: 15.0 }),
    ("claude-3-5-sonnet", Price { input: 3.0, output: 15.0 }),
    ("claude-haiku-4", Price { input: 1.0, output: 5.0 }),
    ("claude-3-5-haiku", Price { input: 0.8, output: 4.0 }),
    ("claude-3-haiku", Price { input: 0.25, output: 1.25 }),
];
const DEAREST: Price = Price { input: 15.0, output: 75.0 };

fn price_of(model: &str) -> &'static Price {
    PRICES.iter().find(|(prefix, _)| model.starts_with(prefix)).map_or(&DEAREST, |(_, price)| price)
}

/// Reads the tokens out of a streamed answer as it passes: `message_start` carries the input
/// (and the model), each `message_delta` the output so far.
#[derive(Default)]
struct StreamMeter {
    pending: Vec<u8>,
    model: String,
    output_so_far: u64,
}

impl StreamMeter {
    fn feed(&mut self, chunk: &[u8], meter: &Meter) {
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else { continue };
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else { continue };
            match event["type"].as_str() {
                Some("message_start") => {
                    self.model = event["message"]["model"].as_str().unwrap_or_default().to_owned();
                    let tokens = Tokens::of(&event["message"]["usage"]);
                    self.output_so_far = tokens.output;
                    meter.add(&self.model, tokens);
                }
                Some("message_delta") => {
                    let output = event["usage"]["output_tokens"].as_u64().unwrap_or(self.output_so_far);
                    let more = output.saturating_sub(self.output_so_far);
                    self.output_so_far = output.max(self.output_so_far);
                    meter.add(&self.model, Tokens { output: more, ..Tokens::default() });
                }
                _ => {}
            }
        }
        // A line never ends: keep memory bounded.
        if self.pending.len() > 1024 * 1024 {
            self.pending.clear();
        }
    }
}

impl ModelProxy {
    /// Serves `upstream` (the real endpoint, e.g. `https://api.anthropic.com`) with `key` on a
    /// free loopback port; once the calls cost twice `budget_usd`, further ones are refused.
    pub async fn start(upstream: &str, key: &str, budget_usd: Option<f64>) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Streams go quiet while the model thinks, not for five minutes.
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::dependency("model proxy client", e))?;
        let placeholder = format!("sk-ant-run-{}", uuid::Uuid::new_v4().simple());
        let meter = Arc::new(Meter { usage: Mutex::new(ModelUsage::default()), budget_usd });
        let state = Arc::new(Upstream {
            client,
            base: upstream.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            placeholder: placeholder.clone(),
            meter: meter.clone(),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| Error::dependency("model proxy bind", e))?;
        let addr = listener.local_addr().map_err(|e| Error::dependency("model proxy address", e))?;
        let router = axum::Router::new().fallback(forward).with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(err) = serve.await {
                tracing::warn!(error = %err, "model proxy stopped");
            }
        });
        Ok(Self { addr, placeholder, meter, stop: Some(stop), task })
    }

    /// What the CLI is given as `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the CLI is given as `ANTHROPIC_API_KEY`: good for this proxy only.
    pub fn placeholder(&self) -> &str {
        &self.placeholder
    }

    /// The run's model calls so far.
    pub fn usage(&self) -> ModelUsage {
        self.meter.usage.lock().expect("meter lock").clone()
    }
}

impl Drop for ModelProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Streams still open end with the run.
        self.task.abort();
    }
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let presented = request.headers().get("x-api-key").or_else(|| request.headers().get("authorization"));
    let presented = presented.and_then(|v| v.to_str().ok()).unwrap_or_default();
    if presented.trim_start_matches("Bearer ") != upstream.placeholder {
        return refuse(StatusCode::UNAUTHORIZED, "authentication_error", "not this run's key");
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Answers to these carry the tokens a run pays for (not `/v1/messages/count_tokens`).
    let metered = parts.uri.path() == "/v1/messages";
    if metered && upstream.meter.spent() {
        upstream.meter.usage.lock().expect("meter lock").refused_over_budget += 1;
        let budget = upstream.meter.budget_usd.unwrap_or_default();
        let message = format!("this run has spent twice its budget of {budget} USD");
        return refuse(StatusCode::BAD_REQUEST, "invalid_request_error", &message);
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "the request body is too large");
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(key) = HeaderValue::from_str(&upstream.key) {
        headers.insert(HeaderName::from_static("x-api-key"), key);
    }
    let sent = upstream
        .client
        .request(parts.method, format!("{}{path}", upstream.base))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(err) => {
            tracing::warn!(error = %err, "the model endpoint could not be reached");
            return refuse(StatusCode::BAD_GATEWAY, "api_error", "the model endpoint could not be reached");
        }
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let relayed = if metered && answer.status().is_success() {
        upstream.meter.usage.lock().expect("meter lock").requests += 1;
        let streamed = answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if streamed {
            // Server-sent events go through as they come, counted on the way.
            let meter = upstream.meter.clone();
            let mut reader = StreamMeter::default();
            let stream = answer.bytes_stream().inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    reader.feed(bytes, &meter);
                }
            });
            Body::from_stream(stream)
        } else {
            match answer.bytes().await {
                Ok(bytes) => {
                    if let Ok(message) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                        let model = message["model"].as_str().unwrap_or_default();
                        upstream.meter.add(model, Tokens::of(&message["usage"]));
                    }
                    Body::from(bytes)
                }
                Err(_) => {
                    return refuse(StatusCode::BAD_GATEWAY, "api_error", "the model endpoint's answer was cut off");
                }
            }
        }
    } else {
        Body::from_stream(answer.bytes_stream())
    };
    response.body(relayed).unwrap_or_else(|_| {
        refuse(StatusCode::BAD_GATEWAY, "api_error", "the model endpoint's answer could not be relayed")
    })
}

/// An error in the Messages API's own shape, so the CLI reports it as it would the API's.
fn refuse(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint that answers with the key it was given.
    async fn echo_key() -> (String, JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().fallback(|headers: HeaderMap| async move {
            let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            ([("content-type", "text/event-stream")], format!("event: key\ndata: {key}\n\n"))
        });
        (url, tokio::spawn(async move { axum::serve(listener, router).await.unwrap() }))
    }

    #[tokio::test]
    async fn the_placeholder_buys_the_real_key_upstream_and_nothing_else_does() {
        let (upstream, server) = echo_key().await;
        let proxy = ModelProxy::start(&upstream, "sk-real-key-0123456789", None).await.unwrap();
        let client = reqwest::Client::new();
        let url = format!("{}/v1/messages?beta=true", proxy.base_url());
        let answer = client.post(&url).header("x-api-key", proxy.placeholder()).body("{}").send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        assert_eq!(answer.text().await.unwrap(), "event: key\ndata: sk-real-key-0123456789\n\n");
        for wrong in ["sk-real-key-0123456789", "", "sk-ant-run-guess"] {
            let refused = client.post(&url).header("x-api-key", wrong).send().await.unwrap();
            assert_eq!(refused.status().as_u16(), 401, "{wrong:?}");
        }
        let base = proxy.base_url();
        drop(proxy);
        // Bounded wait for the listener to close, not a timing assertion.
        let mut gone = false;
        for _ in 0..100 {
            if client.get(&base).send().await.is_err() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the proxy is gone with its run");
        server.abort();
    }

    /// An endpoint that streams one answer of `claude-sonnet-4-5` with 1000 input tokens (200
    /// of them cache reads) and 200 output tokens, the output told in two deltas.
    async fn streaming_model() -> (String, JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().fallback(|| async {
            let events = [
                r#"{"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929","usage":{"input_tokens":800,"cache_read_input_tokens":200,"output_tokens":1}}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
                r#"{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":120}}"#,
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":200}}"#,
                r#"{"type":"message_stop"}"#,
            ];
            let body: String = events.iter().map(|e| format!("event: x\ndata: {e}\n\n")).collect();
            ([("content-type", "text/event-stream")], body)
        });
        (url, tokio::spawn(async move { axum::serve(listener, router).await.unwrap() }))
    }

    #[tokio::test]
    async fn the_proxy_counts_tokens_and_cost_and_refuses_calls_once_the_budget_is_spent() {
        let (upstream, server) = streaming_model().await;
        // One answer costs (800 × 3 + 200 × 0.3 + 200 × 15) / 10^6 = 0.00546 USD: twice 0.0025.
        let proxy = ModelProxy::start(&upstream, "sk-real", Some(0.0025)).await.unwrap();
        let client = reqwest::Client::new();
        let url = format!("{}/v1/messages", proxy.base_url());
        let call = || client.post(&url).header("x-api-key", proxy.placeholder()).body("{}").send();
        let first = call().await.unwrap();
        assert_eq!(first.status().as_u16(), 200);
        first.text().await.unwrap();
        let usage = proxy.usage();
        assert_eq!(
            (usage.requests, usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens),
            (1, 800, 200, 200)
        );
        assert!((usage.cost_usd - 0.00546).abs() < 1e-9, "{usage:?}");
        let refused = call().await.unwrap();
        assert_eq!(refused.status().as_u16(), 400, "twice the budget is spent");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(proxy.usage().refused_over_budget, 1);
        // Token counting is free: it passes, and is not counted.
        let count = format!("{}/v1/messages/count_tokens", proxy.base_url());
        let counted = client.post(&count).header("x-api-key", proxy.placeholder()).send().await.unwrap();
        assert_eq!(counted.status().as_u16(), 200);
        assert_eq!(proxy.usage().requests, 1);
        server.abort();
    }

    #[test]
    fn a_model_not_in_the_price_list_is_priced_as_the_dearest() {
        assert_eq!(price_of("claude-haiku-4-5-20251001").input, 1.0);
        assert_eq!(price_of("claude-opus-4-5-20251101").output, 25.0);
        assert_eq!(price_of("claude-opus-4-1").output, 75.0);
        assert_eq!(price_of("some-future-model").output, DEAREST.output);
    }
}
