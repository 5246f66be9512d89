//! Promises of the executor with the real `claude` and a scripted model that no other test
//! holds it to: the total time limit, push refusals and push failures, the request's
//! `auto_commit` over the workflow's, a cancel while the workspace is still being prepared, the
//! CLI's whole process group going with the run, and a session that vanished before execution.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use e2e::{RunnerFixture, TestStack};
use local::model::Turn;
use runner_core::ports::SessionStore as _;
use serde_json::{Value, json};

fn message_for(run_id: &str) -> SqsEvent {
    let mut message = SqsMessage::default();
    message.message_id = Some(format!("m-{run_id}"));
    message.body = Some(json!({"run_id": run_id, "message_group": run_id}).to_string());
    let mut event = SqsEvent::default();
    event.records = vec![message];
    event
}

/// How many requests of the CLI's agent loop (those offering tools) the model has received.
fn agent_loop_requests(f: &RunnerFixture) -> usize {
    f.model.requests().iter().filter(|r| r["tools"].as_array().is_some_and(|t| !t.is_empty())).count()
}

/// Every `tool_result` block of the run's stored `user` frames, in order.
async fn tool_results(f: &RunnerFixture, run_id: &str) -> Vec<Value> {
    let frames: Vec<String> = sqlx::query_scalar(
        "SELECT data::text FROM claude_cli_outputs WHERE run_id = $1 AND output_type = 'user' \
         ORDER BY sequence_number",
    )
    .bind(uuid::Uuid::parse_str(run_id).unwrap())
    .fetch_all(&f.t.stack.pool)
    .await
    .unwrap();
    frames
        .iter()
        .filter_map(|text| serde_json::from_str::<Value>(text).ok())
        .flat_map(|frame| frame["message"]["content"].as_array().cloned().unwrap_or_default())
        .filter(|block| block["type"] == "tool_result")
        .collect()
}

/// Asserts the CLI's `Write` tool call succeeded in this run (the file really was written).
async fn assert_the_tool_wrote(f: &RunnerFixture, run_id: &str) {
    let results = tool_results(f, run_id).await;
    assert!(
        !results.is_empty() && results.iter().all(|r| r["is_error"] != true),
        "the model's Write went through: {results:?}"
    );
}

fn executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

async fn workspaces_left(f: &RunnerFixture) -> Vec<std::path::PathBuf> {
    let runs = f.workspace_root.path().join("runs");
    let gone = TestStack::eventually(Duration::from_secs(15), || async {
        let left: Vec<_> =
            std::fs::read_dir(&runs).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        left.is_empty().then_some(())
    })
    .await;
    match gone {
        Some(()) => Vec::new(),
        None => std::fs::read_dir(&runs).unwrap().flatten().map(|e| e.path()).collect(),
    }
}

#[tokio::test]
async fn a_run_past_its_total_time_limit_times_out_with_run_timeout_and_leaves_no_process() {
    // The model keeps its first answer far longer than the run may last; the idle watchdog
    // (60 s in the fixture) stays out of it.
    let f = RunnerFixture::start(
        vec![Turn::Delayed(Duration::from_secs(120), Box::new(Turn::text("too late")))],
        &[("MAX_RUN_SECONDS", "12")],
        true,
    )
    .await;
    let run_id = f.submit("implement", json!({"message": "Take all the time you need", "branch": "main"})).await;
    let asked =
        TestStack::eventually(Duration::from_secs(30), || async { (agent_loop_requests(&f) > 0).then_some(()) }).await;
    assert!(asked.is_some(), "the CLI reached the model before the limit: {}", f.status(&run_id).await);
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["code"], "run_timeout", "{run}");
    assert!(run["error"]["message"].as_str().unwrap().contains("12 s"), "the smaller limit applies: {run}");
    assert!(run["result_summary"].is_null(), "{run}");
    let left = TestStack::eventually(Duration::from_secs(10), || async {
        f.processes_in_workspaces().is_empty().then_some(())
    })
    .await;
    assert!(left.is_some(), "the whole process group is gone: {:?}", f.processes_in_workspaces());
    f.stop().await;
}

#[tokio::test]
async fn a_push_the_origin_refuses_fails_the_run_with_push_rejected() {
    let f = RunnerFixture::start(vec![Turn::write("refused.txt", "never lands\n"), Turn::text("Wrote it.")], &[], true)
        .await;
    executable(&f.origin.bare().join("hooks/pre-receive"), "#!/bin/sh\necho 'no pushes today' >&2\nexit 1\n");
    let before = f.origin.head("main");
    let run_id = f.submit("implement", json!({"message": "Create refused.txt", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(
        (run["status"].as_str(), run["error"]["code"].as_str()),
        (Some("failed"), Some("push_rejected")),
        "{run}"
    );
    assert!(
        run["error"]["message"].as_str().unwrap().contains("pre-receive hook declined"),
        "git's reason is quoted: {run}"
    );
    assert_the_tool_wrote(&f, &run_id).await;
    assert_eq!(f.origin.head("main"), before, "the origin's branch is unchanged");
    assert_eq!(f.origin.file("main", "refused.txt"), None);
    assert_eq!(run["commits"], json!([]), "{run}");
    f.stop().await;
}

#[tokio::test]
async fn a_push_to_an_origin_that_vanished_fails_the_run_with_push_failed() {
    // The first answer is slow, so the origin is gone long before the run gets to push.
    let f = RunnerFixture::start(
        vec![
            Turn::Delayed(Duration::from_secs(4), Box::new(Turn::write("orphan.txt", "nowhere to go\n"))),
            Turn::text("Wrote it."),
        ],
        &[],
        true,
    )
    .await;
    let before = f.origin.head("main");
    let run_id = f.submit("implement", json!({"message": "Create orphan.txt", "branch": "main"})).await;
    // A model request means the CLI runs: the clone is done.
    let asked =
        TestStack::eventually(Duration::from_secs(30), || async { (!f.model.requests().is_empty()).then_some(()) })
            .await;
    assert!(asked.is_some(), "the CLI started: {}", f.status(&run_id).await);
    let bare = f.origin.bare();
    let moved = bare.with_file_name("moved-away.git");
    std::fs::rename(&bare, &moved).unwrap();

    let run = f.wait_until_finished(&run_id).await;
    assert_eq!((run["status"].as_str(), run["error"]["code"].as_str()), (Some("failed"), Some("push_failed")), "{run}");
    assert_the_tool_wrote(&f, &run_id).await;
    assert_eq!(run["commits"], json!([]), "{run}");
    std::fs::rename(&moved, &bare).unwrap();
    assert_eq!(f.origin.head("main"), before, "nothing reached the origin");
    assert_eq!(f.origin.file("main", "orphan.txt"), None);
    f.stop().await;
}

#[tokio::test]
async fn the_requests_auto_commit_overrides_the_workflows_either_way() {
    // `implement` commits by default and `review` does not (workflows/*/config.json).
    let f = RunnerFixture::start(
        vec![
            Turn::write("kept-local.txt", "not for the origin\n"),
            Turn::text("Wrote it, no commit."),
            Turn::write("review-notes.txt", "pushed after all\n"),
            Turn::text("Reviewed."),
        ],
        &[],
        true,
    )
    .await;
    let before = f.origin.head("main");
    let quiet = f
        .submit("implement", json!({"message": "Create kept-local.txt", "branch": "main", "auto_commit": false}))
        .await;
    let run = f.wait_until_finished(&quiet).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_the_tool_wrote(&f, &quiet).await;
    assert_eq!(run["commits"], json!([]), "{run}");
    assert!(run["diff_stats"].is_null(), "{run}");
    assert_eq!(f.origin.head("main"), before, "auto_commit: false leaves the origin untouched");
    assert_eq!(f.origin.file("main", "kept-local.txt"), None);

    let pushed =
        f.submit("review", json!({"message": "Write review-notes.txt", "branch": "main", "auto_commit": true})).await;
    let run = f.wait_until_finished(&pushed).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_the_tool_wrote(&f, &pushed).await;
    let after = f.origin.head("main");
    assert_ne!(after, before, "auto_commit: true pushes even for a workflow that does not commit");
    assert_eq!(run["commits"], json!([after]), "{run}");
    assert_eq!(f.origin.file("main", "review-notes.txt").as_deref(), Some("pushed after all\n"));
    assert_eq!(f.origin.file("main", "kept-local.txt"), None, "the first run's file never travelled");
    f.stop().await;
}

/// One commit on the origin's `main` adding `files` small files, written straight into the bare
/// repository with `git fast-import` (quick to make, slow to check out).
fn add_bulk_commit(bare: &Path, files: usize) {
    let message = "bulk files";
    let mut stream = Vec::new();
    write!(
        stream,
        "commit refs/heads/main\ncommitter t <t@example.com> 1700000000 +0000\ndata {}\n{message}\nfrom refs/heads/main^0\n",
        message.len()
    )
    .unwrap();
    for n in 0..files {
        let content = format!("file {n}\n").repeat(40);
        write!(stream, "M 100644 inline bulk/d{:03}/f{:03}.txt\ndata {}\n{content}\n", n / 100, n % 100, content.len())
            .unwrap();
    }
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("git fast-import runs");
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git fast-import: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_run_cancelled_while_preparing_ends_cancelled_without_starting_the_cli() {
    let f = RunnerFixture::start(vec![Turn::text("should never be asked")], &[], true).await;
    // 30 000 files: the first clone's checkout takes seconds, a window to cancel in.
    let before = f.origin.head("main");
    let bare = f.origin.bare();
    tokio::task::spawn_blocking(move || add_bulk_commit(&bare, 30_000)).await.unwrap();
    assert_ne!(f.origin.head("main"), before);
    assert!(f.origin.file("main", "bulk/d299/f099.txt").is_some());

    let run_id = f.submit("implement", json!({"message": "Anything", "branch": "main"})).await;
    let seen = f
        .wait_for(
            &run_id,
            &["preparing", "running", "completed", "failed", "cancelled", "timed_out"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(seen["status"], "preparing", "the run was caught while preparing: {seen}");
    let (status, body) = f.t.post_json(&format!("/agent/claude-code/run/{run_id}/cancel"), f.t.key()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["cancel_requested"].as_bool()),
        (Some("preparing"), Some(true)),
        "the cancel landed while the workspace was still being prepared: {body}"
    );

    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(run["error"].is_null(), "{run}");
    assert_eq!(agent_loop_requests(&f), 0, "the model was never asked");
    assert!(f.frames(&run_id).await.is_empty(), "the CLI never ran, so it wrote no frame");
    assert_eq!(workspaces_left(&f).await, Vec::<std::path::PathBuf>::new(), "the workspace is cleaned up");
    f.stop().await;
}

/// True while `pid` is a `sleep` that has not died (a dead but unreaped child is `Z`).
fn sleep_alive(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let zombie = status
        .lines()
        .find_map(|line| line.strip_prefix("State:"))
        .is_some_and(|state| state.trim_start().starts_with('Z'));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !zombie && cmdline.starts_with(b"sleep")
}

#[tokio::test]
async fn the_clis_whole_process_group_dies_with_the_run() {
    // A wrapper that leaves a child behind in its (the CLI's) process group, then becomes the
    // real CLI. The child's output goes nowhere, so the CLI's stdout still ends when it exits.
    // Open like /tmp: the CLI may run as a user of its own, who writes the pid here.
    let dir = local::open_tempdir("wrapper-").unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let pid_file = dir.path().join("child.pid");
    let wrapper = dir.path().join("claude-with-a-child");
    executable(
        &wrapper,
        &format!(
            "#!/bin/sh\nsleep 600 </dev/null >/dev/null 2>&1 &\necho $! > '{}'\nexec '{}' \"$@\"\n",
            pid_file.display(),
            e2e::claude_bin().display()
        ),
    );
    let f = RunnerFixture::start(
        vec![Turn::Delayed(Duration::from_secs(3), Box::new(Turn::text("done")))],
        &[("CLAUDE_BIN", wrapper.to_str().unwrap())],
        true,
    )
    .await;
    let run_id = f.submit("review", json!({"message": "Look around", "branch": "main"})).await;
    let child = TestStack::eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(&pid_file).ok().and_then(|text| text.trim().parse::<i32>().ok())
    })
    .await
    .expect("the wrapper wrote its child's pid");
    assert!(sleep_alive(child), "the child runs alongside the CLI");

    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let gone = TestStack::eventually(Duration::from_secs(10), || async { (!sleep_alive(child)).then_some(()) }).await;
    assert!(gone.is_some(), "the child in the CLI's process group died with the run (pid {child})");
    assert_eq!(f.processes_in_workspaces(), Vec::<i32>::new());
    f.stop().await;
}

#[tokio::test]
async fn a_session_deleted_after_submit_fails_the_run_with_unknown_session() {
    let f = RunnerFixture::start(vec![], &[], false).await;
    let response =
        f.t.http
            .post(f.t.url("/agent/claude-code/sessions"))
            .header("x-api-key", f.t.key())
            .json(&json!({"workflow": "implement", "branch": "main"}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let session = response.json::<Value>().await.unwrap()["session_id"].as_str().unwrap().to_owned();
    let run_id = f.submit("implement", json!({"message": "m", "branch": "main", "session_id": session})).await;

    // The record goes while the run waits in the queue.
    let sessions = runner_adapters::DynamoSessionStore::new(
        aws_sdk_dynamodb::Client::new(&f.t.stack.sdk),
        &f.t.stack.settings.sessions_table,
    );
    let id: uuid::Uuid = session.parse().unwrap();
    sessions.delete(id).await.unwrap();
    assert!(sessions.get(id).await.unwrap().is_none());

    let executor = f.t.stack.executor(&f.executor).await.unwrap();
    let response = executor::handle(&executor, message_for(&run_id)).await;
    assert!(response.batch_item_failures.is_empty(), "a run that fails is handled, not retried");
    let run = f.status(&run_id).await;
    assert_eq!(
        (run["status"].as_str(), run["error"]["code"].as_str()),
        (Some("failed"), Some("unknown_session")),
        "{run}"
    );
    assert!(run["error"]["message"].as_str().unwrap().contains(&session), "{run}");
    assert!(f.model.requests().is_empty(), "the CLI never started");
    assert!(f.frames(&run_id).await.is_empty());
    assert_eq!(workspaces_left(&f).await, Vec::<std::path::PathBuf>::new(), "the workspace is cleaned up");
    f.stop().await;
}
