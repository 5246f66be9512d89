//! Epics: the epics table, the durable workflow engine that carries them (Step Functions), and
//! the git operation a rollback needs.

use async_trait::async_trait;

use super::Page;
use crate::Result;
use crate::domain::Owner;
use crate::domain::epic::{Epic, EpicId};

/// The epics table: written conditionally on each epic's version.
#[async_trait]
pub trait EpicStore: Send + Sync {
    /// Writes a new epic, never overwriting one.
    async fn create(&self, epic: &Epic) -> Result<()>;
    /// The epic, if it exists.
    async fn get(&self, epic_id: EpicId) -> Result<Option<Epic>>;
    /// Replaces the epic if its stored version is still `expected_version`; `Error::Conflict` if not.
    async fn update(&self, epic: &Epic, expected_version: u64) -> Result<()>;
    /// The owner's epics, newest first.
    async fn list(&self, owner: &Owner, limit: usize, cursor: Option<&str>) -> Result<Page<Epic>>;
}

/// What the engine did with a task callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskAnswer {
    /// The waiting task took it.
    Delivered,
    /// No task waits on this token any more (answered before, timed out, or its execution
    /// ended): nothing to do.
    Gone,
}

/// The durable workflow engine an epic runs on: executions of the epic state machine, and the
/// callbacks of their waiting tasks.
#[async_trait]
pub trait EpicEngine: Send + Sync {
    /// Starts an execution named `name` with this input and returns its id; starting a name
    /// that already ran returns that execution's id.
    async fn start(&self, name: &str, input: &serde_json::Value) -> Result<String>;
    /// Stops an execution (cancelling an epic).
    async fn stop(&self, execution_id: &str, cause: &str) -> Result<()>;
    /// Completes the task waiting on `token` with `output`.
    async fn succeed(&self, token: &str, output: &serde_json::Value) -> Result<TaskAnswer>;
    /// Fails the task waiting on `token`.
    async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<TaskAnswer>;
    /// Tells the task waiting on `token` that its work is still going.
    async fn heartbeat(&self, token: &str) -> Result<TaskAnswer>;
}

/// Moves a branch back to an earlier commit (rollbacks).
#[async_trait]
pub trait BranchMover: Send + Sync {
    /// Moves `branch` of `repository_url` to `to`, only if it still points at `expected`
    /// (`Error::RunFailed` with code `branch_moved` if not, `branch_not_found`,
    /// `repository_unavailable`). Returns the commits it no longer has, newest first.
    async fn move_branch(&self, repository_url: &str, branch: &str, to: &str, expected: &str) -> Result<Vec<String>>;
}
