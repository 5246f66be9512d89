//! The model endpoint, served to one run's CLI on loopback so the model key never enters the
//! sandbox: the CLI holds a per-run placeholder, and the proxy forwards each request to the real
//! endpoint with the real key. Whatever the run's commands read or send out, the key is not in it,
//! and the placeholder is worthless once the run has ended (its proxy is gone).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

struct Upstream {
    client: reqwest::Client,
    base: String,
    key: String,
    placeholder: String,
}

impl ModelProxy {
    /// Serves `upstream` (the real endpoint, e.g. `https://api.anthropic.com`) with `key` on a
    /// free loopback port.
    pub async fn start(upstream: &str, key: &str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Streams go quiet while the model thinks, not for five minutes.
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::dependency("model proxy client", e))?;
        let placeholder = format!("sk-ant-run-{}", uuid::Uuid::new_v4().simple());
        let state = Arc::new(Upstream {
            client,
            base: upstream.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            placeholder: placeholder.clone(),
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
        Ok(Self { addr, placeholder, stop: Some(stop), task })
    }

    /// What the CLI is given as `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the CLI is given as `ANTHROPIC_API_KEY`: good for this proxy only.
    pub fn placeholder(&self) -> &str {
        &self.placeholder
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
    // Server-sent events go through as they come.
    response.body(Body::from_stream(answer.bytes_stream())).unwrap_or_else(|_| {
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
        let proxy = ModelProxy::start(&upstream, "sk-real-key-0123456789").await.unwrap();
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
}
