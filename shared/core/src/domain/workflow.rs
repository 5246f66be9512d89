//! Workflows: named recipes (prompt, tools, MCP servers, defaults) that a run executes.
//!
//! Each lives in `workflows/<name>/` with `prompt.md`, `allowed_tools.json`, an optional
//! `.mcp.json` and an optional `config.json`. The shipped set is embedded in every binary, so
//! the API and the executor can never disagree about what exists.

use include_dir::{Dir, include_dir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../workflows");

/// How the CLI asks permission for edits and tools (its `--permission-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PermissionMode {
    /// File edits are accepted without asking (the default).
    #[default]
    #[serde(rename = "acceptEdits")]
    AcceptEdits,
    /// No permission checks at all.
    #[serde(rename = "bypassPermissions")]
    BypassPermissions,
    /// Plan only: the CLI may read and analyse but not change anything.
    #[serde(rename = "plan")]
    Plan,
    /// The CLI's standard behaviour: it asks permission on the first use of each tool.
    #[serde(rename = "default")]
    Default,
}

impl PermissionMode {
    /// The value of the CLI's `--permission-mode` flag.
    pub fn as_cli_arg(self) -> &'static str {
        match self {
            Self::AcceptEdits => "acceptEdits",
            Self::BypassPermissions => "bypassPermissions",
            Self::Plan => "plan",
            Self::Default => "default",
        }
    }
}

/// A run's time limit when the workflow's config.json sets none (15 minutes).
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 900;

/// A workflow's `config.json`: its defaults for runs. Unknown keys are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// What the workflow is for, for people choosing one.
    #[serde(default)]
    pub description: String,
    /// Turn limit for runs that do not set one; `None` means `DEFAULT_MAX_TURNS`.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// The CLI's `--model` for these runs; `None` leaves the CLI's default.
    #[serde(default)]
    pub model: Option<String>,
    /// The CLI's `--permission-mode` for these runs.
    #[serde(default)]
    pub permission_mode: PermissionMode,
    /// Wall-clock limit for a run, capped by the executor's own maximum.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// On success, commit and push what the run changed; a request may override it.
    #[serde(default)]
    pub auto_commit: bool,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECONDS
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            description: String::new(),
            max_turns: None,
            model: None,
            permission_mode: PermissionMode::default(),
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            auto_commit: false,
        }
    }
}

/// A named recipe a run executes: prompt, tools, MCP servers and defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    /// The workflow's name, as in `/agent/claude-code/{workflow}/run`.
    pub name: String,
    /// `prompt.md`, appended to the CLI's system prompt.
    pub prompt: String,
    /// `allowed_tools.json`: the tools runs may use without asking.
    pub allowed_tools: Vec<String>,
    /// The `.mcp.json` text, installed verbatim into the workspace.
    pub mcp_config: Option<String>,
    /// `config.json`, or the defaults when there is none.
    pub config: WorkflowConfig,
}

/// Why a workflow's files could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("workflow `{name}`: {problem}")]
pub struct WorkflowLoadError {
    /// The workflow that failed to load.
    pub name: String,
    /// What is wrong with its files.
    pub problem: String,
}

/// The workflows a deployment knows; any other name is unknown.
#[derive(Clone, Debug)]
pub struct WorkflowRegistry {
    workflows: BTreeMap<String, Workflow>,
}

impl WorkflowRegistry {
    /// The workflows shipped in `workflows/`, embedded at build time.
    pub fn builtin() -> Self {
        let mut workflows = BTreeMap::new();
        for dir in BUILTIN.dirs() {
            let name = dir.path().file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            let read =
                |file: &str| dir.get_file(dir.path().join(file)).and_then(|f| f.contents_utf8()).map(str::to_owned);
            let workflow = Workflow::from_files(&name, read).expect("shipped workflows are checked by tests");
            workflows.insert(name, workflow);
        }
        Self { workflows }
    }

    /// A registry of exactly these workflows (a deployment's own set, loaded by an adapter).
    pub fn from_workflows(workflows: impl IntoIterator<Item = Workflow>) -> Self {
        Self { workflows: workflows.into_iter().map(|w| (w.name.clone(), w)).collect() }
    }

    /// The workflow called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.workflows.get(name)
    }

    /// The names of all workflows, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.workflows.keys().map(String::as_str)
    }
}

impl Workflow {
    /// A workflow from its files, read by `read` (`prompt.md`, `allowed_tools.json`, and the
    /// optional `config.json` and `.mcp.json`), checked.
    pub fn from_files(name: &str, read: impl Fn(&str) -> Option<String>) -> Result<Self, WorkflowLoadError> {
        let problem = |p: String| WorkflowLoadError { name: name.to_owned(), problem: p };
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(problem("names are lowercase letters, digits, '-' and '_'".into()));
        }
        let prompt = read("prompt.md").ok_or_else(|| problem("prompt.md is missing".into()))?;
        if prompt.trim().is_empty() {
            return Err(problem("prompt.md is empty".into()));
        }
        let tools = read("allowed_tools.json").ok_or_else(|| problem("allowed_tools.json is missing".into()))?;
        let allowed_tools: Vec<String> =
            serde_json::from_str(&tools).map_err(|e| problem(format!("allowed_tools.json: {e}")))?;
        let config = match read("config.json") {
            Some(text) => serde_json::from_str(&text).map_err(|e| problem(format!("config.json: {e}")))?,
            None => WorkflowConfig::default(),
        };
        let mcp_config = read(".mcp.json");
        if let Some(text) = &mcp_config {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| problem(format!(".mcp.json: {e}")))?;
        }
        Ok(Self { name: name.to_owned(), prompt, allowed_tools, mcp_config, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: [&str; 8] = ["architect", "implement", "test", "review", "fix", "refactor", "document", "pr"];

    #[test]
    fn every_shipped_workflow_loads_with_a_real_prompt() {
        let registry = WorkflowRegistry::builtin();
        for name in SHIPPED {
            let wf = registry.get(name).unwrap_or_else(|| panic!("{name} is shipped"));
            assert!(wf.prompt.len() > 400, "{name}'s prompt is written for its job");
            assert!(!wf.allowed_tools.is_empty(), "{name} allows some tools");
            assert!(wf.config.max_turns.is_none_or(|t| (1..=200).contains(&t)));
            assert!(wf.config.timeout_seconds > 0);
        }
        assert_eq!(registry.names().count(), SHIPPED.len());
    }

    #[test]
    fn unknown_names_are_not_found() {
        let registry = WorkflowRegistry::builtin();
        for name in ["deploy", "", "Architect", "../architect"] {
            assert!(registry.get(name).is_none(), "{name}");
        }
    }
}
