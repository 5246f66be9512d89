//! The README's commands work as written: its `sh` blocks run, in order, in one shell beside a
//! stack started the README's way (`cargo xtask up`). Blocks marked `sh aws` (an AWS account),
//! `sh setup` (the two commands that start it all) and `sh interactive` (two terminals) are not
//! run; everything else is.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::Duration;

use e2e::{TestStack, repo_root};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The blocks of `markdown` whose info string is exactly `sh`.
fn runnable_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_marks_every_shell_block() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let allowed = ["```sh", "```sh setup", "```sh aws", "```sh interactive"];
    for line in readme.lines().filter(|l| l.starts_with("```sh")) {
        assert!(allowed.contains(&line.trim_end()), "unknown block kind {line:?}: say whether the README test runs it");
    }
    assert!(runnable_blocks(&readme).len() >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_command_that_runs_offline_works_as_written() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let script = runnable_blocks(&readme).join("\n");
    for tool in ["jq", "curl", "psql"] {
        let found = std::process::Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap();
        assert!(found.status.success(), "the README's commands need {tool}");
    }
    // The client the README puts on PATH.
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "claude-runner-cli", "--bin", "claude-runner"])
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(built.success());

    // A folder inside the repository, so cargo and the client find what they look for from it,
    // whose `.local` is this stack's.
    let dir = tempfile::Builder::new().prefix("readme-").tempdir_in(repo_root().join("target")).unwrap();
    let state = dir.path().join(".local");
    let mut up = std::process::Command::new(env!("CARGO"));
    up.args(["xtask", "up", "--state-dir"])
        .arg(&state)
        .args(["--http-port", "0", "--ws-port", "0"])
        .current_dir(dir.path())
        // The stack's own emulator, database and offline model, whatever the test run shares.
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("DATABASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(std::process::Stdio::null())
        .process_group(0);
    let mut stack = Stack(up.spawn().expect("cargo xtask up"));
    let endpoints = state.join("endpoints.json");
    let ready = TestStack::eventually(Duration::from_secs(180), || async { endpoints.exists().then_some(()) }).await;
    assert!(ready.is_some(), "cargo xtask up wrote no endpoints.json within 3 minutes");

    let path = format!("{}:{}", repo_root().join("target/debug").display(), std::env::var("PATH").unwrap_or_default());
    let run = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the README's commands finish within 5 minutes")
        .unwrap();
    stack.stop();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the README's commands failed:\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // What the blocks print, as the README says.
    for expected in ["■ run completed", "claude_runner_runs_finished_total", "claude-runner"] {
        assert!(stdout.contains(expected), "{expected:?} not in the output:\n{stdout}");
    }
    assert!(!Path::new(&state).join("endpoints.json").exists(), "the stack cleans up its endpoints on exit");
}

/// `cargo xtask up`, which execs the stack: stopped with SIGTERM as Ctrl-C would.
struct Stack(std::process::Child);

impl Stack {
    fn stop(&mut self) {
        let group = Pid::from_raw(self.0.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        for _ in 0..300 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}
