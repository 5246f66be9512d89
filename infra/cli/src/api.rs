//! The HTTP API with the caller's key: where it is, and one call to it.
//!
//! Endpoint and key come from flags, then `CLAUDE_RUNNER_URL` / `CLAUDE_RUNNER_WS_URL` /
//! `CLAUDE_RUNNER_API_KEY`, then `.local/endpoints.json` (the local stack's) in the current
//! directory or a parent.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// How long one HTTP call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The API's base URL, without a trailing `/`.
    pub http: String,
    pub ws: Option<String>,
    pub key: String,
}

impl Endpoints {
    /// Resolves the endpoints from what was given, falling back to the local stack's file.
    pub fn resolve(url: Option<String>, ws_url: Option<String>, api_key: Option<String>) -> Result<Self> {
        let local = local_endpoints();
        let from_local = |name: &str| local.as_ref().and_then(|l| l[name].as_str().map(str::to_owned));
        let http = url.or_else(|| from_local("http_url")).ok_or_else(|| {
            Error::config(
                "no_endpoint",
                "no endpoint: pass --url, set CLAUDE_RUNNER_URL, or start the local stack (cargo xtask up)",
            )
        })?;
        let key = api_key
            .or_else(|| from_local("api_key"))
            .ok_or_else(|| Error::config("no_api_key", "no API key: pass --api-key or set CLAUDE_RUNNER_API_KEY"))?;
        let ws = ws_url.or_else(|| from_local("ws_url"));
        Ok(Self { http: http.trim_end_matches('/').to_owned(), ws, key })
    }

    /// The WebSocket URL, or why there is none.
    pub fn ws(&self) -> Result<&str> {
        self.ws.as_deref().ok_or_else(|| {
            Error::config("no_ws_endpoint", "no WebSocket URL: pass --ws-url or set CLAUDE_RUNNER_WS_URL")
        })
    }
}

/// `.local/endpoints.json` in this directory or the nearest parent that has one.
fn local_endpoints() -> Option<Value> {
    let mut dir: Option<PathBuf> = std::env::current_dir().ok();
    while let Some(d) = dir {
        if let Ok(bytes) = std::fs::read(d.join(".local/endpoints.json")) {
            return serde_json::from_slice(&bytes).ok();
        }
        dir = d.parent().map(PathBuf::from);
    }
    None
}

/// The API with the caller's key. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    endpoints: Endpoints,
}

impl Api {
    pub fn new(endpoints: Endpoints) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| Error::config("http_client", format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { client, endpoints })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request to `path` (which starts with `/`) with the key set.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.endpoints.http)).header("x-api-key", &self.endpoints.key)
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn get_query(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.send(self.request(reqwest::Method::GET, path).query(query)).await
    }

    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut request = self.request(reqwest::Method::POST, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// Sends the request; the body of a success, or the API's error.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let response = request.send().await.map_err(|e| Error::Unreachable(format!("the API did not answer: {e}")))?;
        let status = response.status();
        let bytes =
            response.bytes().await.map_err(|e| Error::Unreachable(format!("the API's answer was cut off: {e}")))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let code = match body["error"]["code"].as_str() {
            Some(code) => code.to_owned(),
            None => format!("http_{}", status.as_u16()),
        };
        let message = match body["error"]["message"].as_str() {
            Some(message) => message.to_owned(),
            None => String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        };
        Err(Error::Api { status, code, message })
    }
}

/// `/agent/claude-code/run/{run_id}/{action}`, the id escaped as a path segment.
pub fn run_path(run_id: &str, action: &str) -> String {
    format!("/agent/claude-code/run/{}/{action}", segment(run_id))
}

/// `text` as one URL path segment: anything but unreserved characters percent-encoded, so an id
/// cannot climb to another route.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_stays_one_path_segment() {
        assert_eq!(run_path("0192-ab", "status"), "/agent/claude-code/run/0192-ab/status");
        assert_eq!(run_path("../runs?x=1", "output"), "/agent/claude-code/run/..%2Fruns%3Fx%3D1/output");
    }
}
