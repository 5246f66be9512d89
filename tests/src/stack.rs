//! A stack of the service per test, on shared (or, run alone, its own) moto and Postgres.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use local::{Emulator, LocalStack, PgCluster, StackOptions, create_database};
use rand::Rng as _;

use crate::repo_root;

pub const DEFAULT_REPOSITORY: &str = "https://git.example.com/acme/app.git";
pub const ALLOWED_REPOSITORIES: &str = "https://git.example.com/acme/*";

/// Services this test started itself because none were shared with it.
struct OwnServices {
    emulator: Emulator,
    postgres: PgCluster,
}

/// How a test's stack differs from the default one.
#[derive(Clone, Debug, Default)]
pub struct StackSetup {
    /// Template parameter overrides.
    pub parameters: HashMap<String, String>,
    /// Run an executor on the runs queue.
    pub executor: Option<local::ExecutorOptions>,
    /// Messages a WebSocket client may have waiting (the gateway's default when `None`).
    pub ws_client_buffer: Option<usize>,
    /// Sweep with the janitor this often (never when `None`).
    pub janitor_every: Option<Duration>,
    /// Start a Postgres and an emulator of its own even when the test run shares them (a
    /// test that stops them must not stop its neighbours').
    pub own_services: bool,
}

/// Services `cargo xtask test --localstack` put on LocalStack (`SQS=http://…,S3=http://…`).
fn aws_services() -> std::collections::BTreeMap<String, String> {
    let routes = std::env::var("CLAUDE_RUNNER_TEST_AWS_SERVICES").unwrap_or_default();
    routes.split(',').filter_map(|route| route.split_once('=')).map(|(s, url)| (s.to_owned(), url.to_owned())).collect()
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

    /// A stack with template parameter overrides and, optionally, an executor on its queue.
    pub async fn start_full(parameters: HashMap<String, String>, executor: Option<local::ExecutorOptions>) -> Self {
        Self::start_setup(StackSetup { parameters, executor, ..StackSetup::default() }).await
    }

    /// A stack set up as `setup` says.
    pub async fn start_setup(setup: StackSetup) -> Self {
        let StackSetup { parameters, executor, ws_client_buffer, janitor_every, own_services } = setup;
        let shared = (
            std::env::var("CLAUDE_RUNNER_TEST_AWS_ENDPOINT").ok().filter(|_| !own_services),
            std::env::var("CLAUDE_RUNNER_TEST_DATABASE_URL").ok().filter(|_| !own_services),
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
            aws_services: aws_services(),
            database_url,
            stack_name: name,
            http_port: 0,
            ws_port: 0,
            template: repo_root().join("template.yaml"),
            parameters: params,
            ws_client_buffer: ws_client_buffer.unwrap_or(local::websocket::DEFAULT_CLIENT_BUFFER),
            // Off unless a test asks: a sweep in the middle of a test would be luck, not design.
            janitor_every,
            executor,
        })
        .await
        .expect("start the local stack");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        Self { stack, http, own }
    }

    /// Stops this test's own Postgres for `outage`, then starts it again (`own_services` only).
    pub async fn postgres_outage(&mut self, outage: Duration) {
        let own = self.own.as_mut().expect("a Postgres outage needs the test's own services");
        own.postgres.outage(outage).await.expect("restart postgres");
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

    /// The messages waiting on the runs queue (with their group id), hidden for a minute so a
    /// second look does not count them again.
    pub async fn queued_run_messages(&self) -> Vec<aws_sdk_sqs::types::Message> {
        let sqs = aws_sdk_sqs::Client::new(&self.stack.sdk);
        let mut all = Vec::new();
        for _ in 0..5 {
            let out = sqs
                .receive_message()
                .queue_url(&self.stack.settings.runs_queue_url)
                .max_number_of_messages(10)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                .visibility_timeout(60)
                .send()
                .await
                .unwrap();
            let batch = out.messages.unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            all.extend(batch);
        }
        all
    }

    /// Submits `body` to `workflow` with an `Idempotency-Key`, as `api_key`: the status, the
    /// `idempotent-replayed` header and the body.
    pub async fn submit_keyed(
        &self,
        workflow: &str,
        body: &serde_json::Value,
        api_key: &str,
        idempotency_key: &str,
    ) -> (u16, String, serde_json::Value) {
        let response = self
            .http
            .post(self.url(&format!("/agent/claude-code/{workflow}/run")))
            .header("x-api-key", api_key)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await
            .unwrap();
        let replayed =
            response.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (response.status().as_u16(), replayed, response.json().await.unwrap())
    }

    /// Every item of a listing followed page by page through `next_cursor`, `limit` a page, as
    /// `key` sees it; with each page's size. Panics on an error page or a listing that does not end.
    pub async fn every_page(
        &self,
        path: &str,
        field: &str,
        key: &str,
        limit: usize,
    ) -> (Vec<serde_json::Value>, Vec<usize>) {
        let (mut items, mut sizes) = (Vec::new(), Vec::new());
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}?limit={limit}&cursor={c}"),
                None => format!("{path}?limit={limit}"),
            };
            let (status, page) = self.get_json(&page_path, key).await;
            assert_eq!(status, 200, "{page}");
            let found = page[field].as_array().unwrap_or_else(|| panic!("a `{field}` list: {page}"));
            sizes.push(found.len());
            items.extend(found.iter().cloned());
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                return (items, sizes);
            }
            assert!(sizes.len() < 50, "pagination terminates");
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
