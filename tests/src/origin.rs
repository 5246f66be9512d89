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

impl Default for GitOrigin {
    fn default() -> Self {
        Self::new()
    }
}
