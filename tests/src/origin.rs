//! A local bare repository standing in for the remote that runs clone and push to.

use std::path::{Path, PathBuf};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare repository with a `main` branch, standing in for the remote runs clone and push to.
pub struct GitOrigin {
    dir: tempfile::TempDir,
    pub url: String,
}

impl GitOrigin {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("origin.git");
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        git(dir.path(), &["init", "--quiet", "--bare", "--initial-branch=main", bare.to_str().unwrap()]);
        git(&seed, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(seed.join("README.md"), "# sample\n").unwrap();
        git(&seed, &["add", "."]);
        git(&seed, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "initial"]);
        git(&seed, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
        let url = format!("file://{}", bare.display());
        Self { dir, url }
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    pub fn head(&self, branch: &str) -> String {
        git(&self.bare(), &["rev-parse", &format!("refs/heads/{branch}")])
    }

    /// A file's content at the tip of `branch`, if it exists there.
    pub fn file(&self, branch: &str, path: &str) -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(self.bare())
            .args(["show", &format!("{branch}:{path}")])
            .output()
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl GitOrigin {
    /// Pushes a commit adding `path` to `branch` from outside the service (someone else's
    /// push); returns the new head.
    pub fn push_commit(&self, branch: &str, path: &str, content: &str) -> String {
        let work = self.dir.path().join(format!("outside-{}", rand_suffix()));
        let bare = self.bare();
        git(self.dir.path(), &["clone", "--quiet", "--branch", branch, bare.to_str().unwrap(), work.to_str().unwrap()]);
        std::fs::write(work.join(path), content).unwrap();
        git(&work, &["add", "."]);
        git(&work, &["-c", "user.name=o", "-c", "user.email=o@example.com", "commit", "--quiet", "-m", "outside"]);
        git(&work, &["push", "--quiet", "origin", branch]);
        self.head(branch)
    }
}

fn rand_suffix() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

impl Default for GitOrigin {
    fn default() -> Self {
        Self::new()
    }
}
