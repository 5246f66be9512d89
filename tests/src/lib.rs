//! Harness for the end-to-end tests: each test gets its own stack (own tables, queues, bucket
//! and database) on the moto and Postgres that `cargo xtask test` started once. Run directly
//! with `cargo nextest`, a test starts its own moto and Postgres instead (slower).

mod contract;
mod origin;
mod runner;
mod stack;
mod ws;

use std::path::{Path, PathBuf};

pub use contract::Contract;
pub use local;
pub use origin::GitOrigin;
pub use runner::RunnerFixture;
pub use stack::{ALLOWED_REPOSITORIES, DEFAULT_REPOSITORY, StackSetup, TestStack};
pub use ws::WsClient;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repo root")
}

/// The pinned `claude` binary (installed by `cargo xtask tools`).
pub fn claude_bin() -> PathBuf {
    std::env::var("CLAUDE_RUNNER_TEST_CLAUDE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".tools/npm/node_modules/.bin/claude"))
}

/// The runs-queue event Lambda would deliver for `run_id` (tests drive an executor with it).
pub fn run_message(run_id: &str) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut message = aws_lambda_events::event::sqs::SqsMessage::default();
    message.message_id = Some(format!("m-{run_id}"));
    message.body = Some(serde_json::json!({"run_id": run_id, "message_group": run_id}).to_string());
    let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
    event.records = vec![message];
    event
}
