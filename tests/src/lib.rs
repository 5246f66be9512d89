//! Harness for the end-to-end tests: each test gets its own stack (own tables, queues, bucket
//! and database) on the moto and Postgres that `cargo xtask test` started once. Run directly
//! with `cargo nextest`, a test starts its own moto and Postgres instead (slower).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use local::{Emulator, LocalStack, PgCluster, StackOptions, create_database};
use rand::Rng as _;

pub use local;

pub const DEFAULT_REPOSITORY: &str = "https://git.example.com/acme/app.git";
pub const ALLOWED_REPOSITORIES: &str = "https://git.example.com/acme/*";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repo root")
}

/// Services this test started itself because none were shared with it.
struct OwnServices {
    emulator: Emulator,
    postgres: PgCluster,
}

pub struct TestStack {
    pub stack: LocalStack,
    pub http: reqwest::Client,
    own: Option<OwnServices>,
}

impl TestStack {
    pub async fn start() -> Self {
        Self::start_with(HashMap::new()).await
    }

    /// A stack with template parameter overrides.
    pub async fn start_with(parameters: HashMap<String, String>) -> Self {
        Self::start_full(parameters, None).await
    }

    pub async fn start_full(parameters: HashMap<String, String>, executor: Option<local::ExecutorOptions>) -> Self {
        let shared = (
            std::env::var("CLAUDE_RUNNER_TEST_AWS_ENDPOINT").ok(),
            std::env::var("CLAUDE_RUNNER_TEST_DATABASE_URL").ok(),
        );
        let (endpoint, server_url, own) = match shared {
            (Some(endpoint), Some(db)) => (endpoint, db, None),
            _ => {
                let moto = std::env::var("CLAUDE_RUNNER_MOTO_SERVER")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| repo_root().join(".tools/venv/bin/moto_server"));
                let emulator = Emulator::start(&moto, None).await.expect("start moto (run `cargo xtask tools`)");
                let postgres = PgCluster::start().await.expect("start postgres");
                (emulator.endpoint.clone(), postgres.url.clone(), Some(OwnServices { emulator, postgres }))
            }
        };
        let name = format!("t{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff);
        let database_url = create_database(&server_url, &name).await.expect("create the test database");
        let mut params = HashMap::from([
            ("DefaultRepositoryUrl".to_owned(), DEFAULT_REPOSITORY.to_owned()),
            ("RepositoryAllowlist".to_owned(), ALLOWED_REPOSITORIES.to_owned()),
        ]);
        params.extend(parameters);
        let stack = LocalStack::start(StackOptions {
            aws_endpoint: endpoint,
            database_url,
            stack_name: name,
            http_port: 0,
            ws_port: 0,
            template: repo_root().join("template.yaml"),
            parameters: params,
            executor,
        })
        .await
        .expect("start the local stack");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        Self { stack, http, own }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.stack.http_url)
    }

    pub fn key(&self) -> &str {
        &self.stack.api_key
    }

    /// POST a JSON run request for `workflow` with the stack's key.
    pub async fn submit(&self, workflow: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/agent/claude-code/{workflow}/run")))
            .header("x-api-key", self.key())
            .json(&body)
            .send()
            .await
            .expect("submit")
    }

    pub async fn get_json(&self, path: &str, key: &str) -> (u16, serde_json::Value) {
        let response = self.http.get(self.url(path)).header("x-api-key", key).send().await.expect("get");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn post_json(&self, path: &str, key: &str) -> (u16, serde_json::Value) {
        let response = self.http.post(self.url(path)).header("x-api-key", key).send().await.expect("post");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Polls `probe` every 100 ms for up to `timeout`; a bounded wait, not a timing assertion.
    pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = probe().await {
                return Some(v);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) {
        self.stack.shutdown().await;
        if let Some(own) = self.own {
            own.postgres.stop().await;
            own.emulator.stop().await;
        }
    }
}

/// The pinned `claude` binary (installed by `cargo xtask tools`).
pub fn claude_bin() -> PathBuf {
    std::env::var("CLAUDE_RUNNER_TEST_CLAUDE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".tools/npm/node_modules/.bin/claude"))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare repository with a `main` branch, standing in for the remote runs clone and push to.
pub struct GitOrigin {
    dir: tempfile::TempDir,
    pub url: String,
}

impl GitOrigin {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("origin.git");
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        git(dir.path(), &["init", "--quiet", "--bare", "--initial-branch=main", bare.to_str().unwrap()]);
        git(&seed, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(seed.join("README.md"), "# sample\n").unwrap();
        git(&seed, &["add", "."]);
        git(&seed, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "initial"]);
        git(&seed, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
        let url = format!("file://{}", bare.display());
        Self { dir, url }
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    pub fn head(&self, branch: &str) -> String {
        git(&self.bare(), &["rev-parse", &format!("refs/heads/{branch}")])
    }

    /// A file's content at the tip of `branch`, if it exists there.
    pub fn file(&self, branch: &str, path: &str) -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(self.bare())
            .args(["show", &format!("{branch}:{path}")])
            .output()
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Default for GitOrigin {
    fn default() -> Self {
        Self::new()
    }
}

/// A stack whose executor runs the real CLI against a scripted model and a local origin.
pub struct RunnerFixture {
    pub t: TestStack,
    pub model: local::model::ScriptedModel,
    pub origin: GitOrigin,
    pub workspace_root: tempfile::TempDir,
    pub executor: local::ExecutorOptions,
}

impl RunnerFixture {
    /// `poll_queue: false` leaves the queue alone so a test can deliver messages itself.
    pub async fn start(turns: Vec<local::model::Turn>, env: &[(&str, &str)], poll_queue: bool) -> Self {
        let model = local::model::ScriptedModel::start(turns).await.expect("model server");
        let origin = GitOrigin::new();
        let workspace_root = tempfile::Builder::new().prefix("cr-ws-").tempdir().expect("tempdir");
        let mut environment = HashMap::from([
            ("CLAUDE_BIN".to_owned(), claude_bin().display().to_string()),
            ("ANTHROPIC_BASE_URL".to_owned(), model.url()),
            ("WORKSPACE_ROOT".to_owned(), workspace_root.path().join("runs").display().to_string()),
            ("FRAME_FLUSH_MS".to_owned(), "50".to_owned()),
            ("LEASE_SECONDS".to_owned(), "4".to_owned()),
            ("HEARTBEAT_SECONDS".to_owned(), "1".to_owned()),
            ("IDLE_TIMEOUT_SECONDS".to_owned(), "60".to_owned()),
            ("STOP_GRACE_SECONDS".to_owned(), "2".to_owned()),
        ]);
        environment.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let executor = local::ExecutorOptions { environment, concurrency: 4 };
        let parameters = HashMap::from([
            ("DefaultRepositoryUrl".to_owned(), origin.url.clone()),
            ("RepositoryAllowlist".to_owned(), "file:///*".to_owned()),
            ("AnthropicApiKey".to_owned(), "sk-test-scripted".to_owned()),
        ]);
        let t = TestStack::start_full(parameters, poll_queue.then(|| executor.clone())).await;
        Self { t, model, origin, workspace_root, executor }
    }

    /// Submits and returns the run id.
    pub async fn submit(&self, workflow: &str, body: serde_json::Value) -> String {
        let response = self.t.submit(workflow, body).await;
        assert_eq!(response.status().as_u16(), 202);
        let body: serde_json::Value = response.json().await.unwrap();
        body["run_id"].as_str().unwrap().to_owned()
    }

    pub async fn status(&self, run_id: &str) -> serde_json::Value {
        self.t.get_json(&format!("/agent/claude-code/run/{run_id}/status"), self.t.key()).await.1
    }

    /// Waits (bounded) until the run's status is one of `statuses`.
    pub async fn wait_for(&self, run_id: &str, statuses: &[&str], timeout: Duration) -> serde_json::Value {
        let found = TestStack::eventually(timeout, || async {
            let run = self.status(run_id).await;
            statuses.contains(&run["status"].as_str().unwrap_or_default()).then_some(run)
        })
        .await;
        found.unwrap_or_else(|| panic!("run {run_id} never reached {statuses:?}: {}", serde_json::json!(null)))
    }

    pub async fn wait_until_finished(&self, run_id: &str) -> serde_json::Value {
        self.wait_for(run_id, &["completed", "failed", "cancelled", "timed_out"], Duration::from_secs(90)).await
    }

    /// `(seq, output_type, subtype, byte_size, truncated)` of the run's frames in Postgres.
    pub async fn frames(&self, run_id: &str) -> Vec<(i64, String, Option<String>, i32, bool)> {
        sqlx::query_as(
            "SELECT sequence_number, output_type, subtype, byte_size, truncated FROM claude_cli_outputs \
             WHERE run_id = $1 ORDER BY sequence_number",
        )
        .bind(uuid::Uuid::parse_str(run_id).unwrap())
        .fetch_all(&self.t.stack.pool)
        .await
        .unwrap()
    }

    /// Processes whose working directory is inside this fixture's workspaces (the CLI and its tools).
    pub fn processes_in_workspaces(&self) -> Vec<i32> {
        let root = self.workspace_root.path().to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.to_string_lossy().starts_with(&root))
            })
            .collect()
    }

    pub async fn stop(self) {
        self.model.stop();
        self.t.stop().await;
    }
}

/// A WebSocket subscriber, as a client program would be.
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    parts: HashMap<u64, Vec<Option<String>>>,
    /// Every message received, as sent (for checks against the contract).
    pub messages: Vec<serde_json::Value>,
}

impl WsClient {
    /// Connects with an optional `x-api-key`; `Err(status)` when the handshake is refused.
    pub async fn connect(url: &str, key: Option<&str>) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = url.into_client_request().expect("ws url");
        if let Some(key) = key {
            request.headers_mut().insert("x-api-key", key.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Self { socket, parts: HashMap::new(), messages: Vec::new() }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("websocket connect failed: {other}"),
        }
    }

    pub async fn send(&mut self, message: serde_json::Value) {
        use futures_util::SinkExt as _;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(message.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn subscribe(&mut self, run_id: &str, after_seq: u64) {
        self.send(serde_json::json!({"action": "subscribe", "run_id": run_id, "after_seq": after_seq})).await;
    }

    /// The next message, or `None` after `timeout` (or when the server closed).
    pub async fn next_message(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        use futures_util::StreamExt as _;
        loop {
            let message = tokio::time::timeout(timeout, self.socket.next()).await.ok()??.ok()?;
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let value: serde_json::Value = serde_json::from_str(&text).expect("server messages are JSON");
                self.messages.push(value.clone());
                return Some(value);
            }
        }
    }

    /// The next whole frame (parts reassembled); other message types are skipped.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        loop {
            let message = self.next_message(timeout).await?;
            match message["type"].as_str() {
                Some("frame") => return Some(message),
                Some("frame_part") => {
                    let seq = message["seq"].as_u64().unwrap();
                    let total = message["parts"].as_u64().unwrap() as usize;
                    let slots = self.parts.entry(seq).or_insert_with(|| vec![None; total]);
                    slots[message["part"].as_u64().unwrap() as usize - 1] = message["data"].as_str().map(str::to_owned);
                    if slots.iter().all(Option::is_some) {
                        let whole: String = self.parts.remove(&seq).unwrap().into_iter().flatten().collect();
                        return Some(serde_json::from_str(&whole).expect("reassembled frame is JSON"));
                    }
                }
                _ => {}
            }
        }
    }

    /// Frames as they arrived until the `end` frame (inclusive), duplicates kept (the contract
    /// has none); bounded by `timeout` per frame.
    pub async fn frames_until_end(&mut self, timeout: Duration) -> Vec<serde_json::Value> {
        let mut frames: Vec<serde_json::Value> = Vec::new();
        while let Some(frame) = self.next_frame(timeout).await {
            let is_end = frame["kind"] == "end";
            frames.push(frame);
            if is_end {
                break;
            }
        }
        frames
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// `shared/asyncapi.yaml`, compiled: every server message must match the schema of its `type`.
pub struct Contract {
    schemas: HashMap<String, jsonschema::Validator>,
}

impl Contract {
    pub fn load() -> Self {
        let text = std::fs::read_to_string(repo_root().join("shared/asyncapi.yaml")).expect("asyncapi.yaml");
        let doc: serde_json::Value = serde_yaml::from_str(&text).expect("asyncapi.yaml is YAML");
        let messages = doc["components"]["messages"].as_object().expect("components.messages").clone();
        let schemas = messages
            .into_iter()
            .map(|(name, message)| {
                let validator =
                    jsonschema::validator_for(&message["payload"]).unwrap_or_else(|e| panic!("{name}: {e}"));
                (name, validator)
            })
            .collect();
        Self { schemas }
    }

    /// Panics with the violations when `message` does not match its documented schema.
    pub fn check(&self, message: &serde_json::Value) {
        let kind = message["type"].as_str().or(message["action"].as_str()).expect("a type");
        let schema = self.schemas.get(kind).unwrap_or_else(|| panic!("undocumented message type {kind}: {message}"));
        let errors: Vec<String> =
            schema.iter_errors(message).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{kind} message breaks the contract: {errors:?}\n{message}");
    }
}
