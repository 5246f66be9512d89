//! The repository cache: one bare mirror per repository URL, created (or seeded from a bundle in
//! the artifact store) on first use and fetched before every clone, so every clone after the
//! first is a local one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::GitWorkspaces;
use super::command::{CLONE_TIMEOUT, FETCH_TIMEOUT, LOCAL_TIMEOUT};
use runner_core::domain::object_keys;
use runner_core::{Error, Result};

impl GitWorkspaces {
    /// The local mirror of `url`, created (or seeded from a bundle) if missing, then fetched —
    /// unless `branch` has not moved, which one round trip tells.
    pub(super) async fn mirror(&self, cache: &Path, url: &str, branch: &str) -> Result<PathBuf> {
        let hash = hex::encode(&Sha256::digest(url.as_bytes())[..12]);
        let lock = self.mirror_locks.lock().await.entry(hash.clone()).or_default().clone();
        let _guard = lock.lock().await;
        let mirror = cache.join(format!("{hash}.git"));
        if mirror.join("HEAD").exists() {
            let branch_ref = format!("refs/heads/{branch}");
            let remote = self
                .git
                .run(Some(&mirror), &["ls-remote", "origin", &branch_ref], FETCH_TIMEOUT)
                .await
                .map_err(|f| f.unavailable(url))?;
            let local =
                self.git.run(Some(&mirror), &["rev-parse", "--verify", "--quiet", &branch_ref], LOCAL_TIMEOUT).await;
            let remote_head = remote.split_whitespace().next().unwrap_or_default();
            if local.as_ref().is_ok_and(|head| head.trim() == remote_head) {
                return Ok(mirror);
            }
            self.git
                .run(Some(&mirror), &["fetch", "--prune", "--quiet", "origin"], FETCH_TIMEOUT)
                .await
                .map_err(|f| f.unavailable(url))?;
            return Ok(mirror);
        }
        std::fs::create_dir_all(cache).map_err(|e| Error::dependency("create the repository cache", e))?;
        let _ = std::fs::remove_dir_all(&mirror);
        let mirror_arg = mirror.to_string_lossy().into_owned();
        if let Some(bundle) = self.seed_bundle(&hash, cache).await {
            let bundle_arg = bundle.to_string_lossy().into_owned();
            let seeded =
                self.git.run(None, &["clone", "--mirror", "--quiet", &bundle_arg, &mirror_arg], CLONE_TIMEOUT).await;
            let _ = std::fs::remove_file(&bundle);
            if seeded.is_ok() {
                self.git
                    .run(Some(&mirror), &["remote", "set-url", "origin", url], LOCAL_TIMEOUT)
                    .await
                    .map_err(|f| f.internal("point the mirror at its remote"))?;
                self.git
                    .run(Some(&mirror), &["fetch", "--prune", "--quiet", "origin"], FETCH_TIMEOUT)
                    .await
                    .map_err(|f| f.unavailable(url))?;
                return Ok(mirror);
            }
            let _ = std::fs::remove_dir_all(&mirror);
        }
        self.git
            .run(None, &["clone", "--mirror", "--quiet", "--", url, &mirror_arg], CLONE_TIMEOUT)
            .await
            .map_err(|f| f.unavailable(url))?;
        Ok(mirror)
    }

    async fn seed_bundle(&self, hash: &str, cache: &Path) -> Option<PathBuf> {
        let objects = self.bundles.as_ref()?;
        let path = cache.join(format!("{hash}.bundle"));
        match objects.get_file(&object_keys::repository_bundle(hash), &path).await {
            Ok(true) => Some(path),
            Ok(false) => None,
            Err(err) => {
                tracing::warn!(error = %err, "reading the repository bundle failed; cloning from the remote");
                None
            }
        }
    }
}
