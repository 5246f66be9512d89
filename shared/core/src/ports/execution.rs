//! Execution: the workspace a run works in, the CLI it runs, and the session transcripts it
//! continues from and leaves behind.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::Result;
use crate::claude::CliInvocation;
use crate::domain::{DiffStats, Redactor, Run, RunId, Session, Workflow};

/// A prepared, isolated workspace for one run.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The run's private directory (mode 0700); everything below is removed by cleanup.
    pub root: PathBuf,
    /// The checkout the CLI works in.
    pub work_dir: PathBuf,
    /// The CLI's own `CLAUDE_CONFIG_DIR` (transcripts land here).
    pub config_dir: PathBuf,
    /// The CLI's `HOME`.
    pub home_dir: PathBuf,
    /// The CLI's `TMPDIR`.
    pub tmp_dir: PathBuf,
    /// The workflow's MCP configuration, installed for `--mcp-config`.
    pub mcp_config: Option<PathBuf>,
    /// HEAD right after the clone: the base for the commits and diff stats of the run.
    pub base_commit: String,
    /// Secret values installed into the workspace; never to appear in a frame or a log.
    pub secrets: Vec<String>,
}

/// What publishing a run's changes did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishedChanges {
    /// The commits pushed, oldest first.
    pub commits: Vec<String>,
    /// Files, insertions and deletions from the base commit to the pushed head.
    pub diff_stats: Option<DiffStats>,
}

/// Creates, publishes, archives and removes workspaces. Failures a caller should see come back
/// as `Error::RunFailed` with their code (`branch_not_found`, `repository_unavailable`,
/// `push_rejected`).
#[async_trait]
pub trait Workspaces: Send + Sync {
    /// Clones the run's branch into a new private workspace and installs the workflow's files.
    async fn prepare(&self, run: &Run, workflow: &Workflow) -> Result<Workspace>;
    /// Commits anything the CLI left uncommitted and pushes the branch, when there is anything.
    async fn publish_changes(&self, workspace: &Workspace, run: &Run, commit: bool) -> Result<PublishedChanges>;
    /// The checkout as tar + zstd, written to a file inside the workspace root.
    async fn archive(&self, workspace: &Workspace) -> Result<PathBuf>;
    /// Removes the workspace (bounded retries; a failure is logged, not returned).
    async fn cleanup(&self, workspace: &Workspace, run_id: RunId);
    /// Removes what an attempt of an ended run left on this machine when its executor died
    /// mid-way: the processes working in its workspace, and the workspace.
    async fn discard(&self, run_id: RunId);
}

/// Session transcripts: where the CLI keeps a conversation, and the copy the artifact store
/// keeps between runs.
#[async_trait]
pub trait Transcripts: Send + Sync {
    /// Puts the session's stored transcript where the CLI looks for it: under this workspace's
    /// config dir and encoded cwd. Returns the id to `--resume`; `Error::RunFailed`
    /// (`transcript_missing`) when the store no longer has it.
    async fn restore(&self, session: &Session, workspace: &Workspace) -> Result<Uuid>;
    /// Uploads what the CLI wrote for `cli_session` in this workspace as the latest transcript of
    /// the `lineage`, with every secret `redactor` knows masked (tool results hold what commands
    /// printed, `.env` values included). False if any of it could not be kept (the run still
    /// stands).
    async fn keep(&self, lineage: Uuid, cli_session: Uuid, workspace: &Workspace, redactor: &Redactor) -> bool;
}

/// One line of CLI output. `total_bytes` above `bytes.len()` means the line was cut at the cap.
#[derive(Clone, Debug)]
pub struct OutputLine {
    /// The line, without its newline, at most the cap long.
    pub bytes: Vec<u8>,
    /// How long the line really was.
    pub total_bytes: usize,
}

/// Starts the agent CLI.
#[async_trait]
pub trait Cli: Send + Sync {
    /// Starts the CLI in the workspace; the message goes on its stdin.
    async fn start(&self, workspace: &Workspace, invocation: &CliInvocation) -> Result<Box<dyn CliProcess>>;
}

/// A started CLI and every process it started.
#[async_trait]
pub trait CliProcess: Send {
    /// The next stdout line; `None` at end of output.
    async fn next_line(&mut self) -> Result<Option<OutputLine>>;
    /// SIGTERM to everything it started, SIGKILL after `grace`; returns once nothing is left.
    async fn stop(&mut self, grace: Duration);
    /// Waits for the exit; `None` when killed by a signal.
    async fn wait(&mut self) -> Option<i32>;
    /// The last part of what it wrote to stderr.
    fn stderr_tail(&self) -> String;
    /// The model calls of the run as its model endpoint counted them, where it has one of its
    /// own (the CLI's figures are the CLI's word; these include calls made around it).
    fn model_usage(&self) -> Option<ModelUsage> {
        None
    }
}

/// Model calls counted at a run's model endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelUsage {
    /// Messages requests answered.
    pub requests: u64,
    /// Input tokens, not counting cache writes and reads.
    pub input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// What they cost at list prices (an unknown model at the dearest).
    pub cost_usd: f64,
    /// Requests refused because the run's budget was spent.
    pub refused_over_budget: u64,
}
