//! Workflows: named recipes (prompt, tools, MCP servers, defaults) that a run executes.
//!
//! Each lives in `workflows/<name>/` with `prompt.md`, `allowed_tools.json`, an optional
//! `.mcp.json` and an optional `config.json`. The shipped set is embedded in every binary, so
//! the API and the executor can never disagree about what exists.

use std::collections::BTreeMap;
use std::path::Path;

use include_dir::{Dir, include_dir};
use serde::{Deserialize, Serialize};

static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../workflows");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PermissionMode {
    #[default]
    #[serde(rename = "acceptEdits")]
    AcceptEdits,
    #[serde(rename = "bypassPermissions")]
    BypassPermissions,
    #[serde(rename = "plan")]
    Plan,
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

pub const DEFAULT_TIMEOUT_SECONDS: u64 = 900;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub max_turns: Option<u32>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub permission_mode: PermissionMode,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
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

#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub name: String,
    pub prompt: String,
    pub allowed_tools: Vec<String>,
    /// The `.mcp.json` text, installed verbatim into the workspace.
    pub mcp_config: Option<String>,
    pub config: WorkflowConfig,
}

#[derive(Debug, thiserror::Error)]
#[error("workflow `{name}`: {problem}")]
pub struct WorkflowLoadError {
    pub name: String,
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

    /// Workflows from a folder on disk (`WORKFLOWS_DIR`), for deployments with their own set.
    pub fn from_dir(root: &Path) -> Result<Self, WorkflowLoadError> {
        let io_err =
            |name: &str, e: std::io::Error| WorkflowLoadError { name: name.to_owned(), problem: e.to_string() };
        let mut workflows = BTreeMap::new();
        for entry in std::fs::read_dir(root).map_err(|e| io_err("*", e))? {
            let entry = entry.map_err(|e| io_err("*", e))?;
            if !entry.path().is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            let workflow = Workflow::from_files(&name, |file| std::fs::read_to_string(dir.join(file)).ok())?;
            workflows.insert(name, workflow);
        }
        Ok(Self { workflows })
    }

    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.workflows.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.workflows.keys().map(String::as_str)
    }
}

impl Workflow {
    fn from_files(name: &str, read: impl Fn(&str) -> Option<String>) -> Result<Self, WorkflowLoadError> {
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

    #[test]
    fn a_folder_on_disk_can_replace_the_shipped_set() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lint");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("prompt.md"), "Run the linters.").unwrap();
        std::fs::write(dir.join("allowed_tools.json"), r#"["Bash(cargo clippy:*)"]"#).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"max_turns": 5, "auto_commit": true}"#).unwrap();
        let registry = WorkflowRegistry::from_dir(root.path()).unwrap();
        let lint = registry.get("lint").unwrap();
        assert_eq!(lint.config.max_turns, Some(5));
        assert!(lint.config.auto_commit);
        assert_eq!(lint.config.permission_mode, PermissionMode::AcceptEdits);
        assert_eq!(lint.config.timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
        assert!(registry.get("implement").is_none());
    }

    #[test]
    fn broken_workflow_folders_are_reported() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("bad");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("prompt.md"), "x").unwrap();
        let err = WorkflowRegistry::from_dir(root.path()).unwrap_err();
        assert!(err.to_string().contains("allowed_tools.json"), "{err}");
        std::fs::write(dir.join("allowed_tools.json"), "[]").unwrap();
        std::fs::write(dir.join("config.json"), r#"{"max_turn": 3}"#).unwrap();
        let err = WorkflowRegistry::from_dir(root.path()).unwrap_err();
        assert!(err.to_string().contains("max_turn"), "{err}");
    }
}
