//! `claude-runner` against the local stack with no executor: runs stay queued, so what the CLI
//! prints does not race a run. `--output json`, `logs` of a run that has not ended, `runs --watch`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use e2e::TestStack;

fn command(t: &TestStack, args: &[&str], dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_claude-runner"));
    command
        .args(["--url", &t.stack.http_url, "--ws-url", &t.stack.ws_url, "--api-key", t.key()])
        .args(args)
        .current_dir(dir.path()) // no .local/endpoints.json to pick up by accident
        .env_remove("RUST_BACKTRACE")
        .kill_on_drop(true);
    command
}

async fn claude_runner(t: &TestStack, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let run = command(t, args, &dir).output();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("the CLI finished").unwrap()
}

/// Every line of stdout, each parsed as JSON.
fn json_lines(output: &std::process::Output) -> Vec<Value> {
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{text}"))).collect()
}

/// The next page `runs --watch -o json` prints.
async fn next_page(pages: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(30), pages.next_line()).await.expect("a page in time");
    let line = line.unwrap().expect("a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

async fn queue_a_run(t: &TestStack, message: &str) -> String {
    let response = t.submit("implement", json!({"message": message, "branch": "main"})).await;
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    body["run_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn json_output_logs_not_ready_and_runs_watch_on_queued_runs() {
    let t = TestStack::start().await;
    let first = queue_a_run(&t, "First").await;
    let second = queue_a_run(&t, "Second").await;

    // status: the API's answer as-is, on one line.
    let output = claude_runner(&t, &["--output", "json", "status", &first]).await;
    assert!(output.status.success(), "{output:?}");
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (_, api_view) = t.get_json(&format!("/agent/claude-code/run/{first}/status"), t.key()).await;
    assert_eq!(lines[0], api_view, "the API's body, unchanged");
    assert_eq!(lines[0]["status"], "queued");

    // runs / list: the page as-is.
    let listed = json_lines(&claude_runner(&t, &["-o", "json", "list", "--limit", "5"]).await);
    let ids: Vec<&str> = listed[0]["runs"].as_array().unwrap().iter().filter_map(|r| r["run_id"].as_str()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first: {listed:?}");

    // An API error in json mode: one error object on stdout, exit 2.
    let unknown = "01900000-0000-7000-8000-000000000000";
    let output = claude_runner(&t, &["-o", "json", "status", unknown]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let error = &lines[0]["error"];
    assert_eq!(error["http_status"], 404, "{error}");
    assert!(error["code"].as_str().is_some_and(|c| !c.is_empty()) && error["message"].is_string(), "{error}");

    // logs of a run that has not ended: output_not_ready, said plainly.
    let output = claude_runner(&t, &["logs", &first]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("output_not_ready") && stderr.contains("has not ended yet"), "{stderr}");
    assert!(stderr.contains(&format!("claude-runner tail {first}")), "it says what to do instead: {stderr}");
    let output = claude_runner(&t, &["-o", "json", "logs", &first]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(json_lines(&output)[0]["error"]["code"], "output_not_ready");

    // runs --watch in text mode, off a terminal: the table once (it did not change), then the
    // hidden --watch-count stops it.
    let output =
        claude_runner(&t, &["runs", "--watch", "--interval", "1", "--watch-count", "2", "--status", "queued"]).await;
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.matches("RUN ").count(), 1, "one table while nothing changed: {text}");
    assert!(text.contains(&first) && text.contains(&second), "{text}");

    // In json mode: a page per change. Cancelling the first run changes the page.
    let dir = tempfile::tempdir().unwrap();
    let mut watch = command(&t, &["-o", "json", "runs", "--watch", "--interval", "1"], &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pages = BufReader::new(watch.stdout.take().unwrap()).lines();
    let page = next_page(&mut pages).await;
    assert_eq!(page["runs"][1]["status"], "queued", "{page}");
    let cancelled = claude_runner(&t, &["-o", "json", "cancel", &first]).await;
    assert!(cancelled.status.success(), "{cancelled:?}");
    assert_eq!(json_lines(&cancelled)[0]["run_id"], first.as_str());
    let page = next_page(&mut pages).await;
    assert_eq!(page["runs"][1]["run_id"], first.as_str(), "{page}");
    assert_eq!(page["runs"][1]["status"], "cancelled", "the changed page: {page}");

    // Ctrl-C stops it cleanly.
    let pid = watch.id().expect("still running").to_string();
    let interrupted = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(interrupted.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), watch.wait()).await.expect("it stopped").unwrap();
    assert!(exit.success(), "Ctrl-C ends the watch with success: {exit:?}");

    // A cancelled run cannot be cancelled again: the API's code comes through.
    let again = claude_runner(&t, &["-o", "json", "cancel", &first]).await;
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert_eq!(json_lines(&again)[0]["error"]["code"], "invalid_transition");
    t.stop().await;
}

/// `'text'` for `sh -c`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The CLI on a pseudo-terminal (util-linux `script`), where the progress line shows; what the
/// terminal receives is collected in the returned buffer.
fn on_terminal(
    t: &TestStack,
    args: &[&str],
    dir: &tempfile::TempDir,
) -> (tokio::process::Child, std::sync::Arc<tokio::sync::Mutex<String>>) {
    let endpoints = ["--url", &t.stack.http_url, "--ws-url", &t.stack.ws_url, "--api-key", t.key()];
    let cli: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_claude-runner"))
        .chain(endpoints)
        .chain(args.iter().copied())
        .map(quoted)
        .collect();
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", &cli.join(" "), "/dev/null"])
        .current_dir(dir.path())
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("util-linux script");
    let screen = std::sync::Arc::new(tokio::sync::Mutex::new(String::new()));
    let mut terminal = child.stdout.take().unwrap();
    tokio::spawn({
        let screen = screen.clone();
        async move {
            use tokio::io::AsyncReadExt as _;
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = terminal.read(&mut buffer).await {
                screen.lock().await.push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        }
    });
    (child, screen)
}

/// Waits (bounded) until the terminal shows `text`; what it showed by then.
async fn until_shown(screen: &tokio::sync::Mutex<String>, text: &str) -> String {
    let shown = TestStack::eventually(Duration::from_secs(30), || async {
        let screen = screen.lock().await;
        screen.contains(text).then(|| screen.clone())
    })
    .await;
    match shown {
        Some(shown) => shown,
        None => panic!("never showed {text:?}: {:?}", screen.lock().await),
    }
}

#[tokio::test]
async fn tail_on_a_terminal_says_how_long_the_run_has_been_queued() {
    let t = TestStack::start().await;
    let run_id = queue_a_run(&t, "Waits").await;
    let dir = tempfile::tempdir().unwrap();

    // `queued 2s…`, counted from when the run was queued, redrawn in place on stderr.
    let (mut tail, screen) = on_terminal(&t, &["tail", &run_id], &dir);
    let shown = until_shown(&screen, "queued 2s…").await;
    assert!(shown.contains("\r\u{1b}[2Kqueued "), "redrawn in place: {shown:?}");

    // Once the run is no longer queued the line clears itself and the wait for frames goes on.
    // (The `end` of a run cancelled while queued comes from the executor that takes its queue
    // message; this stack has none, so the tail is stopped here.)
    let (status, _) = t.post_json(&format!("/agent/claude-code/run/{run_id}/cancel"), t.key()).await;
    assert_eq!(status, 200);
    let shown = until_shown(&screen, "waiting for frames").await;
    let last_progress = shown.rfind("queued ").expect("the progress line");
    let spinner = shown.rfind("waiting for frames").expect("the spinner");
    assert!(last_progress < spinner, "{shown:?}");
    assert!(shown[last_progress..spinner].contains("\r\u{1b}[2K"), "the line was cleared: {shown:?}");
    tail.kill().await.unwrap();

    // A tail of the ended run: its end at once, no progress line, exit 1 (it did not complete).
    let (mut tail, screen) = on_terminal(&t, &["tail", &run_id], &dir);
    let exit = tokio::time::timeout(Duration::from_secs(30), tail.wait()).await.expect("tail ended").unwrap();
    let shown = until_shown(&screen, "■ run cancelled").await;
    assert_eq!(exit.code(), Some(1), "{shown:?}");
    assert!(!shown.contains("queued"), "{shown:?}");
    t.stop().await;
}
