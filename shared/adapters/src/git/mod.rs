//! Workspaces on local disk, with the `git` binary (what users' credential helpers and hooks
//! expect; no library pushes as reliably). One private directory per run; a mirror per
//! repository makes every clone after the first a cheap local one.

mod archive;
#[cfg(test)]
mod branch_names;
mod command;
mod mirror;
mod rollback;

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;

pub use self::command::GitCredentials;
use self::command::{CLONE_TIMEOUT, FETCH_TIMEOUT, Git, GitFailure, LOCAL_TIMEOUT};

use runner_core::domain::{DiffStats, Run, RunId, Workflow};
use runner_core::ports::{ObjectStore, PublishedChanges, Workspace, Workspaces};
use runner_core::{Error, Result};

const CLEANUP_ATTEMPTS: u32 = 3;

/// Where workspaces and mirrors go, and what every workspace gets.
#[derive(Clone, Debug)]
pub struct WorkspaceConfig {
    /// Parent of every run's directory.
    pub root: PathBuf,
    /// Where repository mirrors live; `None` clones straight from the remote every time.
    pub cache_dir: Option<PathBuf>,
    /// The author of the commits the runner makes.
    pub author_name: String,
    /// Their email.
    pub author_email: String,
    /// `.env` contents installed into every workspace (git-excluded, values redacted from frames).
    pub dotenv: Option<String>,
    /// Runs have users of their own, who must be able to pass through `root` (mode 0711, not
    /// 0700) to reach their workspaces; each workspace stays closed to the others.
    pub run_users: bool,
    /// For clones, fetches and pushes to remotes that ask for them.
    pub credentials: GitCredentials,
}

/// Workspaces cloned with the `git` binary, optionally through a mirror cache.
pub struct GitWorkspaces {
    config: WorkspaceConfig,
    /// Seeds a missing mirror from `cache/repos/<hash>.bundle` when present.
    bundles: Option<Arc<dyn ObjectStore>>,
    mirror_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    git: Git,
}

impl GitWorkspaces {
    /// Workspaces as `config` says; `bundles` seeds new mirrors when it has a bundle.
    pub fn new(config: WorkspaceConfig, bundles: Option<Arc<dyn ObjectStore>>) -> Self {
        let git = Git { credentials: config.credentials.clone() };
        Self { config, bundles, mirror_locks: Mutex::new(HashMap::new()), git }
    }

    /// Where a run's directories are under its directory `root` (nothing is created).
    fn layout(root: PathBuf) -> Workspace {
        Workspace {
            work_dir: root.join("work"),
            config_dir: root.join("claude"),
            home_dir: root.join("home"),
            tmp_dir: root.join("tmp"),
            mcp_config: None,
            root,
            base_commit: String::new(),
            secrets: Vec::new(),
        }
    }

    fn private_dir(path: &Path) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::dependency("create the workspace", format!("{}: {e}", path.display())))
    }
}

#[async_trait]
impl Workspaces for GitWorkspaces {
    async fn prepare(&self, run: &Run, workflow: &Workflow) -> Result<Workspace> {
        let result = self.prepare_in(run, workflow).await;
        if result.is_err() {
            // A half-made workspace (partial clone, .env) must not outlive the failure.
            let _ = tokio::fs::remove_dir_all(self.config.root.join(run.run_id.to_string())).await;
        }
        result
    }

    async fn publish_changes(&self, workspace: &Workspace, run: &Run, commit: bool) -> Result<PublishedChanges> {
        if !commit {
            return Ok(PublishedChanges::default());
        }
        self.restore_trusted_config(workspace)?;
        self.publish(workspace, run).await
    }

    async fn archive(&self, workspace: &Workspace) -> Result<PathBuf> {
        self.restore_trusted_config(workspace)?;
        let target = workspace.root.join("workspace.tar.zst");
        // A checkout that borrows the mirror's objects (`--shared`) takes its own copy first, so
        // the archive's repository stands on its own.
        let alternates = workspace.work_dir.join(ALTERNATES);
        if alternates.exists() {
            self.git
                .run(Some(&workspace.work_dir), &["repack", "-a", "-d", "-q"], CLONE_TIMEOUT)
                .await
                .map_err(|f| f.internal("copy the borrowed objects"))?;
            std::fs::remove_file(&alternates).map_err(|e| Error::dependency("archive the workspace", e))?;
        }
        let (source, output) = (workspace.work_dir.clone(), target.clone());
        tokio::task::spawn_blocking(move || archive::write_archive(source, output))
            .await
            .map_err(|e| Error::dependency("archive the workspace", e))?
            .map_err(|e| Error::dependency("archive the workspace", e))?;
        Ok(target)
    }

    async fn discard(&self, run_id: RunId) {
        let root = self.config.root.join(run_id.to_string());
        if !root.exists() {
            return;
        }
        let killed = kill_working_in(&root);
        tracing::warn!(%run_id, killed, path = %root.display(), "removing what a lost attempt of an ended run left");
        self.cleanup(&Self::layout(root), run_id).await;
    }

    async fn cleanup(&self, workspace: &Workspace, run_id: RunId) {
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=CLEANUP_ATTEMPTS {
            match tokio::fs::remove_dir_all(&workspace.root).await {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if attempt == CLEANUP_ATTEMPTS => {
                    tracing::error!(%run_id, path = %workspace.root.display(), error = %e, "workspace could not be removed");
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
            }
        }
    }
}

impl GitWorkspaces {
    async fn prepare_in(&self, run: &Run, workflow: &Workflow) -> Result<Workspace> {
        Self::private_dir(&self.config.root)?;
        if self.config.run_users {
            std::fs::set_permissions(&self.config.root, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| Error::dependency("open the workspaces to run users", e))?;
        }
        let root = self.config.root.join(run.run_id.to_string());
        // A retry after a crash finds the old directory: start clean.
        if root.exists() {
            let _ = tokio::fs::remove_dir_all(&root).await;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::dependency("create the workspace", format!("{}: {e}", root.display())))?;
        let mut workspace = Self::layout(root.clone());
        workspace.mcp_config = workflow.mcp_config.as_ref().map(|_| root.join("mcp.json"));
        for dir in [&workspace.config_dir, &workspace.home_dir, &workspace.tmp_dir] {
            Self::private_dir(dir)?;
        }
        let url = run.repository_url.as_str();
        let source = match &self.config.cache_dir {
            Some(cache) => self.mirror(cache, url, run.branch.as_str()).await?.to_string_lossy().into_owned(),
            None => url.to_owned(),
        };
        let branch_ref = format!("refs/heads/{}", run.branch);
        let heads = self
            .git
            .run(None, &["ls-remote", "--heads", "--", &source, &branch_ref], FETCH_TIMEOUT)
            .await
            .map_err(|f| f.unavailable(url))?;
        if heads.trim().is_empty() {
            return Err(Error::run_failed(
                "branch_not_found",
                format!("branch {} does not exist in {url}", run.branch),
            ));
        }
        let work = workspace.work_dir.to_string_lossy().into_owned();
        let mut clone = vec!["clone", "--quiet", "--single-branch", "--no-tags", "--branch", run.branch.as_str()];
        match self.config.cache_dir {
            None => clone.extend(["--depth", "1"]),
            // Objects shared with the mirror, not copied: only the checkout is written.
            Some(_) => clone.push("--shared"),
        }
        clone.extend(["--", source.as_str(), work.as_str()]);
        self.git.run(None, &clone, CLONE_TIMEOUT).await.map_err(|f| f.unavailable(url))?;
        let work_dir = workspace.work_dir.as_path();
        if self.config.cache_dir.is_some() {
            self.git
                .run(Some(work_dir), &["remote", "set-url", "origin", url], LOCAL_TIMEOUT)
                .await
                .map_err(|f| f.internal("set the remote"))?;
        }
        for (key, value) in [("user.name", &self.config.author_name), ("user.email", &self.config.author_email)] {
            self.git
                .run(Some(work_dir), &["config", key, value], LOCAL_TIMEOUT)
                .await
                .map_err(|f| f.internal("set the git identity"))?;
        }
        let base_commit = self
            .git
            .run(Some(work_dir), &["rev-parse", "HEAD"], LOCAL_TIMEOUT)
            .await
            .map_err(|f| f.internal("read HEAD"))?
            .trim()
            .to_owned();

        let mut secrets = Vec::new();
        if let Some(dotenv) = &self.config.dotenv {
            std::fs::write(workspace.work_dir.join(".env"), dotenv).map_err(|e| Error::dependency("write .env", e))?;
            // Never committed, whatever the repository's .gitignore says.
            let exclude = workspace.work_dir.join(".git/info/exclude");
            let mut excluded = std::fs::read_to_string(&exclude).unwrap_or_default();
            excluded.push_str("\n/.env\n");
            std::fs::write(&exclude, excluded).map_err(|e| Error::dependency("exclude .env", e))?;
            secrets.extend(dotenv_values(dotenv));
        }
        if let (Some(path), Some(text)) = (&workspace.mcp_config, &workflow.mcp_config) {
            std::fs::write(path, text).map_err(|e| Error::dependency("write the MCP config", e))?;
        }
        std::fs::copy(workspace.work_dir.join(".git/config"), workspace.root.join("git-config.trusted"))
            .map_err(|e| Error::dependency("keep the git config", e))?;
        let alternates = workspace.work_dir.join(ALTERNATES);
        if alternates.exists() {
            std::fs::copy(alternates, workspace.root.join("git-alternates.trusted"))
                .map_err(|e| Error::dependency("keep the git alternates", e))?;
        }
        Ok(Workspace { base_commit, secrets, ..workspace })
    }

    async fn publish(&self, workspace: &Workspace, run: &Run) -> Result<PublishedChanges> {
        let dir = workspace.work_dir.as_path();
        self.git.run(Some(dir), &["add", "--all"], LOCAL_TIMEOUT).await.map_err(|f| f.internal("stage changes"))?;
        let staged = self.git.run(Some(dir), &["diff", "--cached", "--quiet"], LOCAL_TIMEOUT).await;
        match staged {
            Ok(_) => {}
            Err(GitFailure { code: Some(1), .. }) => {
                let first_line = run.message.lines().next().unwrap_or_default();
                let subject: String = first_line.chars().take(72).collect();
                let message = format!(
                    "{}: {subject}\n\nclaude-runner workflow `{}`, run {}.\n",
                    run.workflow, run.workflow, run.run_id
                );
                self.git
                    .run(Some(dir), &["commit", "--quiet", "--no-verify", "-m", &message], LOCAL_TIMEOUT)
                    .await
                    .map_err(|f| f.internal("commit"))?;
            }
            Err(f) => return Err(f.internal("inspect changes")),
        }
        let range = format!("{}..HEAD", workspace.base_commit);
        let commits: Vec<String> = self
            .git
            .run(Some(dir), &["rev-list", "--reverse", &range], LOCAL_TIMEOUT)
            .await
            .map_err(|f| f.internal("list commits"))?
            .lines()
            .map(str::to_owned)
            .collect();
        if commits.is_empty() {
            return Ok(PublishedChanges::default());
        }
        let refspec = format!("HEAD:refs/heads/{}", run.branch);
        // To the URL the policy approved, whatever the checkout's remotes say by now.
        let push = ["push", "--quiet", run.repository_url.as_str(), refspec.as_str()];
        if let Err(failure) = self.git.run(Some(dir), &push, CLONE_TIMEOUT).await {
            let rejected = ["[rejected]", "non-fast-forward", "fetch first", "[remote rejected]"]
                .iter()
                .any(|marker| failure.stderr.contains(marker));
            let code = if rejected { "push_rejected" } else { "push_failed" };
            return Err(Error::run_failed(code, format!("pushing {} failed: {}", run.branch, failure.stderr)));
        }
        let stat = self
            .git
            .run(Some(dir), &["diff", "--shortstat", &workspace.base_commit, "HEAD"], LOCAL_TIMEOUT)
            .await
            .map_err(|f| f.internal("diff stats"))?;
        Ok(PublishedChanges { commits, diff_stats: Some(parse_shortstat(&stat)) })
    }

    /// Makes the checkout's repository one the executor can trust before it commits, pushes or
    /// archives: puts back the `.git/config` written at preparation (the CLI may have added
    /// remotes, `insteadOf` rewrites or helpers) and the alternates (which could name another
    /// run's objects), removes any hooks it planted, and removes every link inside `.git` (a
    /// `HEAD`, ref or object directory pointing elsewhere would have the executor read or write
    /// files the run could not). A `.git` that is no longer a directory is refused.
    fn restore_trusted_config(&self, workspace: &Workspace) -> Result<()> {
        let git_dir = workspace.work_dir.join(".git");
        let is_dir = std::fs::symlink_metadata(&git_dir).is_ok_and(|meta| meta.is_dir());
        if !is_dir {
            return Err(Error::run_failed(
                "workspace_tampered",
                "the checkout's .git is no longer a directory; nothing was committed or pushed",
            ));
        }
        remove_links_under(&git_dir).map_err(|e| Error::dependency("inspect the checkout's .git", e))?;
        std::fs::copy(workspace.root.join("git-config.trusted"), git_dir.join("config"))
            .map_err(|e| Error::dependency("restore the git config", e))?;
        let alternates = workspace.work_dir.join(ALTERNATES);
        let trusted_alternates = workspace.root.join("git-alternates.trusted");
        if trusted_alternates.exists() {
            std::fs::copy(trusted_alternates, &alternates)
                .map_err(|e| Error::dependency("restore the alternates", e))?;
        } else if alternates.exists() {
            std::fs::remove_file(&alternates).map_err(|e| Error::dependency("remove planted alternates", e))?;
        }
        let _ = std::fs::remove_dir_all(git_dir.join("hooks"));
        Ok(())
    }
}

/// Kills every process whose working directory is `dir` or below it; returns how many.
fn kill_working_in(dir: &Path) -> usize {
    let mut killed = 0;
    for pid in crate::processes::pids() {
        let inside = std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir));
        if inside && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// Where a `--shared` checkout names the mirror whose objects it borrows.
const ALTERNATES: &str = ".git/objects/info/alternates";

/// Removes every symbolic link under `dir` (git itself never makes one inside `.git`).
fn remove_links_under(dir: &Path) -> std::io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                tracing::warn!(path = %entry.path().display(), "removing a link planted in .git");
                std::fs::remove_file(entry.path())?;
            } else if kind.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// The values of `KEY=VALUE` lines (quotes stripped), which must never reach a frame.
fn dotenv_values(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export ").unwrap_or(line.trim()).split_once('='))
        .map(|(_, value)| value.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .filter(|value| !value.is_empty())
        .collect()
}

/// `" 3 files changed, 10 insertions(+), 2 deletions(-)"` → numbers.
fn parse_shortstat(text: &str) -> DiffStats {
    let mut stats = DiffStats::default();
    for part in text.split(',') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse().ok()), words.next()) else { continue };
        match what {
            w if w.starts_with("file") => stats.files_changed = n,
            w if w.starts_with("insertion") => stats.insertions = n,
            w if w.starts_with("deletion") => stats.deletions = n,
            _ => {}
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortstat_parses_every_form() {
        assert_eq!(
            parse_shortstat(" 3 files changed, 10 insertions(+), 2 deletions(-)\n"),
            DiffStats { files_changed: 3, insertions: 10, deletions: 2 }
        );
        assert_eq!(
            parse_shortstat(" 1 file changed, 1 insertion(+)"),
            DiffStats { files_changed: 1, insertions: 1, deletions: 0 }
        );
        assert_eq!(parse_shortstat(""), DiffStats::default());
    }

    #[test]
    fn dotenv_values_are_found_for_redaction() {
        let values = dotenv_values("# comment\nAPI_TOKEN=abc123\nexport DB=\"postgres://x\"\nEMPTY=\n");
        assert_eq!(values, vec!["abc123", "postgres://x"]);
    }
}
