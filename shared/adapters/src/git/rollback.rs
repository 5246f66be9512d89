//! Moving a branch back to a rollback point: a push of an older commit, lease-protected against
//! the head the epic recorded, so a branch that moved since is refused rather than clobbered.

use async_trait::async_trait;

use super::GitWorkspaces;
use super::command::{CLONE_TIMEOUT, FETCH_TIMEOUT, LOCAL_TIMEOUT};
use runner_core::ports::BranchMover;
use runner_core::{Error, Result};

#[async_trait]
impl BranchMover for GitWorkspaces {
    async fn move_branch(&self, url: &str, branch: &str, to: &str, expected: &str) -> Result<Vec<String>> {
        let branch_ref = format!("refs/heads/{branch}");
        let listed = self
            .git
            .run(None, &["ls-remote", "--", url, &branch_ref], FETCH_TIMEOUT)
            .await
            .map_err(|f| f.unavailable(url))?;
        let Some(current) = listed.split_whitespace().next().map(str::to_owned) else {
            return Err(Error::run_failed("branch_not_found", format!("{url} has no branch {branch}")));
        };
        if current == to {
            // Already there (a retried rollback): nothing more to discard.
            return Ok(Vec::new());
        }
        if current != expected {
            return Err(moved(branch, &current, expected));
        }
        // The commits to discard and the target must be known locally: the mirror has them.
        let mut scratch = None;
        let repo = match &self.config.cache_dir {
            Some(cache) => self.mirror(cache, url, branch).await?,
            None => {
                let dir = self.config.root.join(format!("rollback-{}.git", uuid::Uuid::new_v4()));
                scratch = Some(Scratch(dir.clone()));
                let dir_arg = dir.to_string_lossy().into_owned();
                self.git
                    .run(None, &["clone", "--mirror", "--quiet", "--", url, &dir_arg], CLONE_TIMEOUT)
                    .await
                    .map_err(|f| f.unavailable(url))?;
                dir
            }
        };
        let result = self.push_back(&repo, url, &branch_ref, to, expected).await;
        drop(scratch);
        result
    }
}

/// A throwaway clone, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl GitWorkspaces {
    async fn push_back(
        &self,
        repo: &std::path::Path,
        url: &str,
        branch_ref: &str,
        to: &str,
        expected: &str,
    ) -> Result<Vec<String>> {
        let branch = branch_ref.trim_start_matches("refs/heads/");
        let repo = repo.to_path_buf();
        self.git.run(Some(&repo), &["cat-file", "-e", &format!("{to}^{{commit}}")], LOCAL_TIMEOUT).await.map_err(
            |_| Error::run_failed("rollback_point_missing", format!("{url} no longer has the rollback point {to}")),
        )?;
        let not_to = format!("^{to}");
        let discarded = self
            .git
            .run(Some(&repo), &["rev-list", expected, &not_to], LOCAL_TIMEOUT)
            .await
            .map_err(|f| f.internal("list the commits a rollback discards"))?;
        let lease = format!("--force-with-lease={branch_ref}:{expected}");
        let refspec = format!("{to}:{branch_ref}");
        if let Err(failure) =
            self.git.run(Some(&repo), &["push", "--quiet", &lease, url, &refspec], CLONE_TIMEOUT).await
        {
            let stale = failure.stderr.contains("stale info") || failure.stderr.contains("rejected");
            return Err(if stale {
                moved(branch, "a newer commit", expected)
            } else {
                Error::run_failed("push_failed", format!("moving {branch} back failed: {}", failure.stderr))
            });
        }
        Ok(discarded.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
    }
}

fn moved(branch: &str, current: &str, expected: &str) -> Error {
    Error::run_failed(
        "branch_moved",
        format!(
            "{branch} is at {current}, not at {expected} as the epic recorded: someone pushed since; nothing was moved"
        ),
    )
}
