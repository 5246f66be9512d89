use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

use crate::domain::Workflow;

/// How the run relates to a conversation.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionMode {
    /// A new conversation with an id chosen up front (the caller knows it before the run starts).
    New(Uuid),
    /// Continue a conversation whose transcript was restored into this run's config dir.
    Resume(Uuid),
}

/// Everything one CLI execution needs, with no shell anywhere: `args()` is the argument vector,
/// the message goes on stdin.
#[derive(Clone, Debug)]
pub struct CliInvocation {
    /// The CLI's `--max-turns`: the most model turns the run may take.
    pub max_turns: u32,
    /// The CLI's `--model`; `None` leaves the CLI's default model.
    pub model: Option<String>,
    /// The CLI's `--permission-mode` value, from the workflow (`acceptEdits`, `plan`, …).
    pub permission_mode: String,
    /// The CLI's `--allowedTools`: tools the run may use without asking, from the workflow.
    pub allowed_tools: Vec<String>,
    /// The workflow's prompt, passed as `--append-system-prompt` on top of the CLI's own.
    pub append_system_prompt: String,
    /// Path of the MCP server config passed as `--mcp-config`, if the workflow has one.
    pub mcp_config: Option<PathBuf>,
    /// Whether to start the conversation under a fixed id or resume an earlier one.
    pub session: SessionMode,
    /// The caller's message, written to stdin so it can never be parsed as an argument.
    pub message: String,
    /// The CLI's `--max-budget-usd`: it stops the conversation once the model cost this much.
    pub max_budget_usd: Option<f64>,
    /// How long the run may take: no process of it needs more CPU time than this on every core.
    pub time_limit: Option<Duration>,
}

impl CliInvocation {
    /// The invocation for a run of `workflow`: its model, tools and prompt plus the run's settings.
    pub fn new(
        workflow: &Workflow,
        max_turns: u32,
        session: SessionMode,
        message: String,
        mcp_config: Option<PathBuf>,
    ) -> Self {
        Self {
            max_turns,
            model: workflow.config.model.clone(),
            permission_mode: workflow.config.permission_mode.as_cli_arg().to_owned(),
            allowed_tools: workflow.allowed_tools.clone(),
            append_system_prompt: workflow.prompt.clone(),
            mcp_config,
            session,
            message,
            max_budget_usd: None,
            time_limit: Some(Duration::from_secs(workflow.config.timeout_seconds)),
        }
    }

    /// The same invocation, stopped by the CLI once the model cost `usd`.
    pub fn with_budget(self, usd: Option<f64>) -> Self {
        Self { max_budget_usd: usd, ..self }
    }

    /// The argument vector for `claude` (program name excluded); the message is not in it.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose", "--max-turns"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.push(self.max_turns.to_string());
        match &self.session {
            SessionMode::New(id) => args.extend(["--session-id".to_owned(), id.to_string()]),
            SessionMode::Resume(id) => args.extend(["--resume".to_owned(), id.to_string()]),
        }
        if let Some(model) = &self.model {
            args.extend(["--model".to_owned(), model.clone()]);
        }
        args.extend(["--permission-mode".to_owned(), self.permission_mode.clone()]);
        if let Some(usd) = self.max_budget_usd {
            args.extend(["--max-budget-usd".to_owned(), usd.to_string()]);
        }
        if let Some(path) = &self.mcp_config {
            args.extend(["--mcp-config".to_owned(), path.display().to_string()]);
        }
        args.extend(["--append-system-prompt".to_owned(), self.append_system_prompt.clone()]);
        // Variadic: keep it last among the options so it cannot swallow anything that follows.
        if !self.allowed_tools.is_empty() {
            args.push("--allowedTools".to_owned());
            args.extend(self.allowed_tools.iter().cloned());
        }
        args
    }
}

/// Where the CLI keeps a session's transcript for a working directory: every character of the
/// cwd that is not ASCII alphanumeric becomes '-' (verified with claude 2.1.x).
pub fn encoded_project_dir(config_dir: &Path, cwd: &Path) -> PathBuf {
    let encoded: String =
        cwd.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    config_dir.join("projects").join(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WorkflowRegistry;

    fn invocation(session: SessionMode) -> CliInvocation {
        let registry = WorkflowRegistry::builtin();
        CliInvocation::new(
            registry.get("implement").unwrap(),
            7,
            session,
            "hello; rm -rf /".into(),
            Some("/r/mcp.json".into()),
        )
    }

    #[test]
    fn the_argument_vector_follows_the_cli_contract() {
        let id = Uuid::now_v7();
        let args = invocation(SessionMode::New(id)).args();
        assert_eq!(&args[..6], ["-p", "--output-format", "stream-json", "--verbose", "--max-turns", "7"]);
        let pos = |flag: &str| args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} missing"));
        assert_eq!(args[pos("--session-id") + 1], id.to_string());
        assert_eq!(args[pos("--permission-mode") + 1], "acceptEdits");
        assert_eq!(args[pos("--mcp-config") + 1], "/r/mcp.json");
        assert!(pos("--allowedTools") > pos("--append-system-prompt"), "the variadic flag comes last");
        assert!(!args.iter().any(|a| a.contains("rm -rf")), "the message never becomes an argument");
    }

    #[test]
    fn resuming_passes_resume_not_session_id() {
        let id = Uuid::now_v7();
        let args = invocation(SessionMode::Resume(id)).args();
        assert!(args.windows(2).any(|w| w[0] == "--resume" && w[1] == id.to_string()));
        assert!(!args.contains(&"--session-id".to_owned()));
    }

    #[test]
    fn project_dirs_encode_every_non_alphanumeric_character() {
        let dir = encoded_project_dir(Path::new("/cfg"), Path::new("/tmp/run_1/work.tree"));
        assert_eq!(dir, Path::new("/cfg/projects/-tmp-run-1-work-tree"));
    }
}
