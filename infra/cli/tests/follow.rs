//! `claude-runner submit --follow` against the local stack, as a person runs it.

use tokio::process::Command;

use e2e::RunnerFixture;
use local::model::Turn;

async fn claude_runner(f: &RunnerFixture, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap(); // no .local/endpoints.json to pick up by accident
    Command::new(env!("CARGO_BIN_EXE_claude-runner"))
        .args(["--url", &f.t.stack.http_url, "--ws-url", &f.t.stack.ws_url, "--api-key", f.t.key()])
        .args(args)
        .current_dir(dir.path())
        .env_remove("RUST_BACKTRACE")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn submit_follow_prints_the_run_through_to_its_result() {
    let turns = vec![Turn::write("notes.md", "# Notes\n"), Turn::text("I added notes.md.")];
    let f = RunnerFixture::start(turns, &[], true).await;
    let output = claude_runner(&f, &["submit", "implement", "Add notes", "--follow"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].parse::<uuid_like::Id>().is_ok(), "the run id comes first: {stdout}");
    assert!(stdout.contains("● session"), "{stdout}");
    assert!(stdout.contains("→ Write("), "tool calls are shown: {stdout}");
    assert!(stdout.contains("I added notes.md."), "{stdout}");
    assert!(stdout.contains("✔ done in 2 turns"), "the result with turns and cost: {stdout}");
    assert_eq!(lines.last().copied(), Some("■ run completed"));

    let run_id = lines[0];
    let status = claude_runner(&f, &["status", run_id]).await;
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"completed\""));
    let list = claude_runner(&f, &["list"]).await;
    assert!(String::from_utf8_lossy(&list.stdout).contains(run_id));
    let cancel = claude_runner(&f, &["cancel", run_id]).await;
    assert_eq!(cancel.status.code(), Some(2), "cancelling a finished run is an error");
    assert!(String::from_utf8_lossy(&cancel.stderr).contains("invalid_transition"));
    f.stop().await;
}

mod uuid_like {
    pub struct Id;
    impl std::str::FromStr for Id {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            (s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4).then_some(Id).ok_or(())
        }
    }
}
