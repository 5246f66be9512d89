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
