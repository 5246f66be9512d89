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

/// Credentials for remotes: git-credential-store lines (`https://user:token@host`), one per
/// host. Each becomes an `insteadOf` rewrite in git's own environment: never on its command
/// line (every user may read that) nor in a file (a run may read files of the executor's user
/// where runs have no user of their own), and never written into a checkout or mirror.
#[derive(Clone, Debug, Default)]
pub struct GitCredentials {
    /// `(with credentials, without)` URL prefixes.
    rewrites: Vec<(String, String)>,
    /// The passwords and tokens, masked in whatever git prints.
    secrets: Vec<String>,
}

impl GitCredentials {
    /// Parses credential-store lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut credentials = Self::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let invalid =
                |why: &str| Error::Config(format!("GIT_CREDENTIALS: a line {why} (expected https://user:token@host)"));
            let url = url::Url::parse(line).map_err(|_| invalid("is not a URL"))?;
            if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
                return Err(invalid("is not an http(s) URL"));
            }
            let password = url.password().filter(|p| !p.is_empty()).ok_or_else(|| invalid("has no token"))?;
            let host = match url.port() {
                Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_owned(),
            };
            let plain = format!("{}://{host}/", url.scheme());
            let with = format!("{}://{}:{password}@{host}/", url.scheme(), url.username());
            credentials.secrets.push(password.to_owned());
            credentials.rewrites.push((with, plain));
        }
        Ok(credentials)
    }

    /// Passes the rewrites to git as command-scope configuration in its environment.
    fn apply(&self, command: &mut Command) {
        if self.rewrites.is_empty() {
            return;
        }
        command.env("GIT_CONFIG_COUNT", self.rewrites.len().to_string());
        for (i, (with, plain)) in self.rewrites.iter().enumerate() {
            command.env(format!("GIT_CONFIG_KEY_{i}"), format!("url.{with}.insteadOf"));
            command.env(format!("GIT_CONFIG_VALUE_{i}"), plain);
        }
    }

    /// `text` with every password and token masked.
    fn mask(&self, text: String) -> String {
        self.secrets.iter().fold(text, |text, secret| text.replace(secret.as_str(), "[REDACTED]"))
    }
}

/// Runs git: bounded in time, with the executor's credentials and nothing else of its own.
#[derive(Clone, Debug, Default)]
pub(super) struct Git {
    pub credentials: GitCredentials,
}

impl Git {
    /// Runs `git [-C dir] args…` and returns its stdout.
    pub async fn run(
        &self,
        dir: Option<&Path>,
        args: &[&str],
        timeout: Duration,
    ) -> std::result::Result<String, GitFailure> {
        git(dir, args, timeout, &self.credentials).await
    }
}

/// Runs `git [-C dir] args…` and returns its stdout.
async fn git(
    dir: Option<&Path>,
    args: &[&str],
    timeout: Duration,
    credentials: &GitCredentials,
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
    credentials.apply(&mut command);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => {
            return Err(GitFailure { code: None, stderr: format!("git {} timed out after {timeout:?}", args[0]) });
        }
        Ok(Err(e)) => return Err(GitFailure { code: None, stderr: format!("could not run git: {e}") }),
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        Ok(credentials.mask(String::from_utf8_lossy(&output.stdout).into_owned()))
    } else {
        Err(GitFailure {
            code: output.status.code(),
            stderr: credentials.mask(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credentials_rewrite_the_url_git_uses_and_never_show() {
        let credentials = GitCredentials::parse(
            "# the bot\nhttps://x-access-token:ghp_s3cret@github.com\n\nhttp://ci:pw9@git.local:8080\n",
        )
        .unwrap();
        let git = Git { credentials };
        // `ls-remote --get-url` prints the URL after git's rewrites, i.e. what it would fetch.
        let url = git
            .run(None, &["ls-remote", "--get-url", "https://github.com/acme/app.git"], LOCAL_TIMEOUT)
            .await
            .unwrap_or_else(|f| panic!("{}", f.stderr));
        assert_eq!(url.trim(), "https://x-access-token:[REDACTED]@github.com/acme/app.git", "rewritten, and masked");
        let other = git.run(None, &["ls-remote", "--get-url", "https://gitlab.com/acme/app.git"], LOCAL_TIMEOUT).await;
        assert_eq!(
            other.ok().as_deref().map(str::trim),
            Some("https://gitlab.com/acme/app.git"),
            "other hosts untouched"
        );
        let port = git.run(None, &["ls-remote", "--get-url", "http://git.local:8080/x.git"], LOCAL_TIMEOUT).await;
        assert_eq!(port.ok().as_deref().map(str::trim), Some("http://ci:[REDACTED]@git.local:8080/x.git"));
    }

    #[test]
    fn credential_lines_without_a_token_or_scheme_are_refused() {
        for bad in
            ["github.com", "https://github.com", "https://user@github.com", "ssh://git:x@github.com", "file:///x"]
        {
            assert!(GitCredentials::parse(bad).is_err(), "{bad}");
        }
        assert!(GitCredentials::parse("# none yet\n").unwrap().rewrites.is_empty());
    }
}
