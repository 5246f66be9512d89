//! How workspaces are made: a shallow clone without a cache, a mirror seeded from a bundle in
//! the artifact store with one. Each test has its own cache folder.

use std::path::Path;
use std::time::Duration;

use e2e::RunnerFixture;
use local::model::Turn;
use runner_adapters::{S3ObjectStore, aws};
use runner_core::ports::ObjectStore;
use serde_json::json;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The text of the run's tool results (the `user` frames' `tool_result` blocks).
async fn tool_results(f: &RunnerFixture, run_id: &str) -> String {
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT data FROM claude_cli_outputs WHERE run_id = $1 AND output_type = 'user' ORDER BY sequence_number",
    )
    .bind(uuid::Uuid::parse_str(run_id).unwrap())
    .fetch_all(&f.t.stack.pool)
    .await
    .unwrap();
    let blocks = rows.iter().flat_map(|row| row["message"]["content"].as_array().cloned().unwrap_or_default());
    blocks.filter(|b| b["type"] == "tool_result").map(|b| b["content"].to_string()).collect::<Vec<_>>().join("\n")
}

/// Asks git, inside the run's checkout, whether it is shallow (the review workflow may run it).
async fn shallowness(f: &RunnerFixture) -> String {
    let run_id = f.submit("review", json!({"message": "Is this checkout shallow?", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    tool_results(f, &run_id).await
}

fn asks_git() -> Vec<Turn> {
    vec![Turn::tool("Bash", json!({"command": "git rev-parse --is-shallow-repository"})), Turn::text("answered")]
}

#[tokio::test]
async fn without_a_cache_a_run_clones_shallow_and_with_one_it_does_not() {
    let shallow = RunnerFixture::start(asks_git(), &[("REPO_CACHE_DIR", "")], true).await;
    let said = shallowness(&shallow).await;
    assert!(said.contains("true") && !said.contains("false"), "a depth-1 clone: {said}");
    assert!(!shallow.workspace_root.path().join("cache").exists(), "no mirror was made");
    shallow.stop().await;

    let cached = RunnerFixture::start(asks_git(), &[], true).await;
    let said = shallowness(&cached).await;
    assert!(said.contains("false") && !said.contains("true"), "a full local clone from the mirror: {said}");
    cached.stop().await;
}

#[tokio::test]
async fn a_missing_mirror_is_seeded_from_the_bundle_in_the_artifact_store() {
    let f = RunnerFixture::start(vec![Turn::text("looked")], &[], true).await;
    // A bundle that holds the origin's history plus a commit the origin never had: finding that
    // commit in the mirror proves the mirror came from the bundle.
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    git(scratch.path(), &["clone", "--quiet", &f.origin.url, work.to_str().unwrap()]);
    git(&work, &["checkout", "--quiet", "-b", "only-in-the-bundle"]);
    std::fs::write(work.join("bundled.txt"), "from the bundle\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "bundled"]);
    let bundled = git(&work, &["rev-parse", "HEAD"]);
    let bundle = scratch.path().join("repo.bundle");
    git(&work, &["bundle", "create", "--quiet", bundle.to_str().unwrap(), "--all"]);
    let digest = std::process::Command::new("sh")
        .args(["-c", "printf %s \"$1\" | sha256sum", "sh", &f.origin.url])
        .output()
        .unwrap();
    let hash = String::from_utf8_lossy(&digest.stdout)[..24].to_owned();
    let objects = S3ObjectStore::new(aws::s3(&f.t.stack.sdk), &f.t.stack.settings.artifacts_bucket);
    objects
        .put(&format!("cache/repos/{hash}.bundle"), std::fs::read(&bundle).unwrap(), "application/octet-stream")
        .await
        .unwrap();

    let run_id = f.submit("review", json!({"message": "Look around", "branch": "main"})).await;
    let run = f.wait_for(&run_id, &["completed", "failed"], Duration::from_secs(90)).await;
    assert_eq!(run["status"], "completed", "{run}");
    let mirror = f.workspace_root.path().join("cache").join(format!("{hash}.git"));
    assert!(mirror.join("HEAD").exists(), "the mirror is where the executor keeps it");
    let found = std::process::Command::new("git")
        .arg("-C")
        .arg(&mirror)
        .args(["cat-file", "-e", &format!("{bundled}^{{commit}}")])
        .status()
        .unwrap();
    assert!(found.success(), "the mirror holds the bundle's own commit: it was seeded from the bundle");
    assert!(!f.workspace_root.path().join("cache").join(format!("{hash}.bundle")).exists(), "the download is gone");
    f.stop().await;
}
