//! Running `git`: bounded in time, never prompting, never with system or global configuration,
//! and never with hooks or an fsmonitor that a checkout could have planted.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use runner_core::Error;

/// A clone or push over the network.
pub(super) const CLONE_TIMEOUT: Duration = Duration::from_secs(300);
/// A fetch or `ls-remote`.
pub(super) const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Anything that stays on this machine.
pub(super) const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);

/// A git command that failed: its exit code (none if it never ran or timed out) and stderr.
pub(super) struct GitFailure {
    pub code: Option<i32>,
    pub stderr: String,
}

impl GitFailure {
    /// The repository could not be reached or read: the run's caller should hear why.
    pub fn unavailable(self, url: &str) -> Error {
        Error::run_failed("repository_unavailable", format!("{url}: {}", self.stderr))
    }

    /// A local git step failed: ours to fix, not the caller's.
    pub fn internal(self, what: &str) -> Error {
        Error::dependency("git", format!("{what}: {}", self.stderr))
    }
}

/// Runs `git [-C dir] args…` and returns its stdout.
pub(super) async fn git(
    dir: Option<&Path>,
    args: &[&str],
    timeout: Duration,
) -> std::result::Result<String, GitFailure> {
    let mut command = Command::new("git");
    // The CLI can write anything into the checkout, .git included: never run its hooks or
    // an fsmonitor command with the executor's environment.
    command.args(["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]);
    // A checkout writes its files with as many workers as there are cores.
    command.args(["-c", "checkout.workers=0"]);
    // A checkout a run's own user owned is the executor's to commit and push: git's ownership
    // check guards against configuration a checkout carries, which never applies here (see
    // `restore_trusted_config`).
    command.args(["-c", "safe.directory=*"]);
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        // Only configuration the executor owns: none from /etc/gitconfig or a $HOME/.gitconfig
        // (HOME may be a shared /tmp a run can write to); the checkout's own is restored before
        // commit and push.
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => {
            return Err(GitFailure { code: None, stderr: format!("git {} timed out after {timeout:?}", args[0]) });
        }
        Ok(Err(e)) => return Err(GitFailure { code: None, stderr: format!("could not run git: {e}") }),
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(GitFailure {
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
