//! A stack whose executor runs the real `claude` against a scripted model.

use std::collections::HashMap;
use std::time::Duration;

use crate::{GitOrigin, StackSetup, TestStack, claude_bin};

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
        Self::start_setup(turns, env, poll_queue, StackSetup::default()).await
    }

    /// `start`, on a stack set up as `setup` says (its parameters and executor are added to the
    /// fixture's own).
    pub async fn start_setup(
        turns: Vec<local::model::Turn>,
        env: &[(&str, &str)],
        poll_queue: bool,
        setup: StackSetup,
    ) -> Self {
        let model = local::model::ScriptedModel::start(turns).await.expect("model server");
        let origin = GitOrigin::new();
        let workspace_root = local::open_tempdir("cr-ws-").expect("tempdir");
        let mut environment = HashMap::from([
            ("CLAUDE_BIN".to_owned(), claude_bin().display().to_string()),
            ("ANTHROPIC_BASE_URL".to_owned(), model.url()),
            ("WORKSPACE_ROOT".to_owned(), workspace_root.path().join("runs").display().to_string()),
            // Each test its own mirror cache: nothing leaks between tests through it.
            ("REPO_CACHE_DIR".to_owned(), workspace_root.path().join("cache").display().to_string()),
            ("LEASE_SECONDS".to_owned(), "4".to_owned()),
            ("HEARTBEAT_SECONDS".to_owned(), "1".to_owned()),
            ("IDLE_TIMEOUT_SECONDS".to_owned(), "60".to_owned()),
            ("STOP_GRACE_SECONDS".to_owned(), "2".to_owned()),
        ]);
        environment.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let executor = local::ExecutorOptions { environment, concurrency: 4 };
        let mut parameters = HashMap::from([
            ("DefaultRepositoryUrl".to_owned(), origin.url.clone()),
            ("RepositoryAllowlist".to_owned(), "file:///*".to_owned()),
            ("RepositorySchemes".to_owned(), "https,file".to_owned()),
            ("AnthropicApiKey".to_owned(), "sk-test-scripted".to_owned()),
        ]);
        parameters.extend(setup.parameters.clone());
        let t =
            TestStack::start_setup(StackSetup { parameters, executor: poll_queue.then(|| executor.clone()), ..setup })
                .await;
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
        let last = std::sync::Mutex::new(serde_json::Value::Null);
        let found = TestStack::eventually(timeout, || async {
            let run = self.status(run_id).await;
            let reached = statuses.contains(&run["status"].as_str().unwrap_or_default());
            *last.lock().unwrap() = run.clone();
            reached.then_some(run)
        })
        .await;
        found.unwrap_or_else(|| panic!("run {run_id} never reached {statuses:?}; last seen: {}", last.lock().unwrap()))
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
