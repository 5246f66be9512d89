//! Workflows from a folder on disk (`WORKFLOWS_DIR`), for deployments with their own set.

use std::path::Path;

use runner_core::domain::{Workflow, WorkflowLoadError, WorkflowRegistry};

/// Every `<name>/` folder under `root` as a workflow; the first broken one is an error.
pub fn load_workflows(root: &Path) -> Result<WorkflowRegistry, WorkflowLoadError> {
    let io_err = |name: &str, e: std::io::Error| WorkflowLoadError { name: name.to_owned(), problem: e.to_string() };
    let mut workflows = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| io_err("*", e))? {
        let entry = entry.map_err(|e| io_err("*", e))?;
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        workflows.push(Workflow::from_files(&name, |file| std::fs::read_to_string(dir.join(file)).ok())?);
    }
    Ok(WorkflowRegistry::from_workflows(workflows))
}

#[cfg(test)]
mod tests {
    use runner_core::domain::{DEFAULT_TIMEOUT_SECONDS, PermissionMode};

    use super::*;

    #[test]
    fn a_folder_on_disk_can_replace_the_shipped_set() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lint");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("prompt.md"), "Run the linters.").unwrap();
        std::fs::write(dir.join("allowed_tools.json"), r#"["Bash(cargo clippy:*)"]"#).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"max_turns": 5, "auto_commit": true}"#).unwrap();
        let registry = load_workflows(root.path()).unwrap();
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
        let err = load_workflows(root.path()).unwrap_err();
        assert!(err.to_string().contains("allowed_tools.json"), "{err}");
        std::fs::write(dir.join("allowed_tools.json"), "[]").unwrap();
        std::fs::write(dir.join("config.json"), r#"{"max_turn": 3}"#).unwrap();
        let err = load_workflows(root.path()).unwrap_err();
        assert!(err.to_string().contains("max_turn"), "{err}");
    }
}
