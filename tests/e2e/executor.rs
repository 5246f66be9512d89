//! The executor with the real `claude` binary, driven by the scripted model server.

use std::time::Duration;

use e2e::RunnerFixture;
use local::model::Turn;
use runner_adapters::{S3ObjectStore, aws};
use runner_core::ports::{ObjectStore, RunStore as _};
use serde_json::{Value, json};

fn s3(f: &RunnerFixture) -> S3ObjectStore {
    S3ObjectStore::new(aws::s3(&f.t.stack.sdk), &f.t.stack.settings.artifacts_bucket)
}

#[tokio::test]
async fn a_run_that_writes_a_file_completes_commits_pushes_and_keeps_every_frame() {
    let f = RunnerFixture::start(
        vec![Turn::write("hello.txt", "hello from the scripted model\n"), Turn::text("Wrote hello.txt.")],
        &[],
        true,
    )
    .await;
    let before = f.origin.head("main");
    let run_id = f.submit("implement", json!({"message": "Create hello.txt", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["result_summary"], "Wrote hello.txt.");
    assert_eq!(run["num_turns"], 2);
    assert!(run["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(run["session_id"].is_string());

    // Committed and pushed to the origin's branch.
    let after = f.origin.head("main");
    assert_ne!(after, before);
    assert_eq!(run["commits"], json!([after]));
    assert_eq!(f.origin.file("main", "hello.txt").as_deref(), Some("hello from the scripted model\n"));
    assert_eq!(run["diff_stats"]["files_changed"], 1);

    // Frames: gap-free from 1, init first, result last, in Postgres and in the S3 log alike.
    let frames = f.frames(&run_id).await;
    let seqs: Vec<i64> = frames.iter().map(|f| f.0).collect();
    assert_eq!(seqs, (1..=frames.len() as i64).collect::<Vec<_>>());
    assert_eq!((frames[0].1.as_str(), frames[0].2.as_deref()), ("system", Some("init")));
    assert_eq!(frames.last().unwrap().1, "result");
    assert!(frames.iter().any(|f| f.1 == "user"), "the tool result is a frame too");
    let log = s3(&f).get(&format!("runs/{run_id}/output.ndjson")).await.unwrap().expect("the S3 log exists");
    let logged: Vec<Value> =
        String::from_utf8(log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(logged.iter().map(|f| f["seq"].as_i64().unwrap()).collect::<Vec<_>>(), seqs);
    assert!(logged.iter().all(|f| f["run_id"] == run_id.as_str()));

    // Workspace archive and transcript kept; the workspace itself is gone.
    let objects = s3(&f);
    assert!(objects.get(&format!("runs/{run_id}/workspace.tar.zst")).await.unwrap().is_some());
    let session = run["session_id"].as_str().unwrap();
    assert!(objects.get(&format!("sessions/{session}/transcript.jsonl")).await.unwrap().is_some());
    let leftover: Vec<_> = std::fs::read_dir(f.workspace_root.path().join("runs")).unwrap().flatten().collect();
    assert!(leftover.is_empty(), "workspaces are cleaned up: {leftover:?}");

    // And the projector carried the outcome to Postgres.
    let projected = e2e::TestStack::eventually(Duration::from_secs(15), || async {
        let row: Option<(String, Vec<String>)> =
            sqlx::query_as("SELECT status, commits FROM claude_cli_runs WHERE run_id = $1 AND status = 'completed'")
                .bind(uuid::Uuid::parse_str(&run_id).unwrap())
                .fetch_optional(&f.t.stack.pool)
                .await
                .unwrap();
        row
    })
    .await;
    assert_eq!(projected.map(|r| r.1), Some(vec![after]));
    f.stop().await;
}

#[tokio::test]
async fn exhausting_max_turns_fails_the_run_with_that_reason() {
    let turns = (0..5).map(|i| Turn::write(&format!("f{i}.txt"), "x")).collect();
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", json!({"message": "Keep writing", "branch": "main", "max_turns": 1})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "max_turns_exhausted");
    assert!(f.origin.file("main", "f0.txt").is_none(), "a failed run pushes nothing");
    f.stop().await;
}

#[tokio::test]
async fn a_cli_that_exits_non_zero_without_a_result_fails_the_run() {
    // The real binary, refusing an option it does not know: it exits non-zero before any result.
    let dir = local::open_tempdir("wrapper-").unwrap();
    let wrapper = dir.path().join("claude-bad-flag");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec '{}' --no-such-option \"$@\"\n", e2e::claude_bin().display()))
        .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let f = RunnerFixture::start(vec![], &[("CLAUDE_BIN", wrapper.to_str().unwrap())], true).await;
    let run_id = f.submit("implement", json!({"message": "Anything", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "cli_exited");
    assert_ne!(run["exit_code"], 0);
    assert!(run["error"]["message"].as_str().unwrap().contains("no-such-option"), "stderr is quoted: {run}");
    f.stop().await;
}

#[tokio::test]
async fn a_stalled_model_times_the_run_out_and_leaves_no_process_behind() {
    let f = RunnerFixture::start(vec![Turn::Stall], &[("IDLE_TIMEOUT_SECONDS", "3")], true).await;
    let run_id = f.submit("implement", json!({"message": "Think forever", "branch": "main"})).await;
    f.wait_for(&run_id, &["running"], Duration::from_secs(30)).await;
    let alive = e2e::TestStack::eventually(Duration::from_secs(10), || async {
        let pids = f.processes_in_workspaces();
        (!pids.is_empty()).then_some(pids)
    })
    .await;
    assert!(alive.is_some(), "the CLI runs inside the workspace while the model stalls");
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["code"], "idle_timeout");
    assert_eq!(f.processes_in_workspaces(), Vec::<i32>::new(), "the whole process group is gone");
    f.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_run_stops_it_within_seconds() {
    let f = RunnerFixture::start(vec![Turn::Stall], &[], true).await;
    let run_id = f.submit("implement", json!({"message": "Take your time", "branch": "main"})).await;
    f.wait_for(&run_id, &["running"], Duration::from_secs(30)).await;
    let (status, body) = f.t.post_json(&format!("/agent/claude-code/run/{run_id}/cancel"), f.t.key()).await;
    assert_eq!((status, body["cancel_requested"].as_bool()), (200, Some(true)));
    // Heartbeats poll every second; the CLI gets two seconds of grace. Bounded wait, no timing assert.
    let run = f.wait_for(&run_id, &["cancelled", "completed", "failed", "timed_out"], Duration::from_secs(20)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(f.processes_in_workspaces(), Vec::<i32>::new());
    f.stop().await;
}

#[tokio::test]
async fn a_duplicate_delivery_executes_the_run_exactly_once() {
    let f = RunnerFixture::start(vec![Turn::Delayed(Duration::from_secs(2), Box::new(Turn::text("once")))], &[], false)
        .await;
    let run_id = f.submit("review", json!({"message": "Review once", "branch": "main"})).await;
    let executor = f.t.stack.executor(&f.executor).await.unwrap();
    let (first, second) = tokio::join!(executor::handle(&executor, e2e::run_message(&run_id)), async {
        // The duplicate arrives once the first delivery holds the run.
        f.wait_for(&run_id, &["preparing", "running"], Duration::from_secs(30)).await;
        executor::handle(&executor, e2e::run_message(&run_id)).await
    });
    assert!(first.batch_item_failures.is_empty(), "the first delivery runs it");
    assert_eq!(second.batch_item_failures.len(), 1, "the duplicate finds it claimed and asks to be retried later");
    let again = executor::handle(&executor, e2e::run_message(&run_id)).await;
    assert!(again.batch_item_failures.is_empty(), "a late duplicate of a finished run is acknowledged");
    let run = f.status(&run_id).await;
    assert_eq!((run["status"].as_str(), run["attempts"].as_u64()), (Some("completed"), Some(1)));
    let conversations =
        f.model.requests().iter().filter(|r| r["tools"].as_array().is_some_and(|t| !t.is_empty())).count();
    assert_eq!(conversations, 1, "the model was asked once");
    let inits = f.frames(&run_id).await.iter().filter(|fr| fr.2.as_deref() == Some("init")).count();
    assert_eq!(inits, 1);
    f.stop().await;
}

#[tokio::test]
async fn a_branch_that_does_not_exist_fails_with_branch_not_found() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    let run_id = f.submit("implement", json!({"message": "x", "branch": "feature/missing"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!((run["status"].as_str(), run["error"]["code"].as_str()), (Some("failed"), Some("branch_not_found")));
    let unreachable = f
        .submit(
            "implement",
            json!({"message": "x", "branch": "main", "repository_url": "file:///nonexistent/repo.git"}),
        )
        .await;
    let run = f.wait_until_finished(&unreachable).await;
    assert_eq!(run["error"]["code"], "repository_unavailable", "{run}");
    f.stop().await;
}

#[tokio::test]
async fn a_run_whose_executor_died_does_not_stay_running() {
    let f = RunnerFixture::start(vec![Turn::Stall], &[], false).await;
    let run_id = f.submit("implement", json!({"message": "x", "branch": "main"})).await;
    let executor = std::sync::Arc::new(f.t.stack.executor(&f.executor).await.unwrap());
    let doomed = {
        let (executor, event) = (executor.clone(), e2e::run_message(&run_id));
        tokio::spawn(async move { executor::handle(&executor, event).await })
    };
    f.wait_for(&run_id, &["running"], Duration::from_secs(30)).await;
    doomed.abort(); // the executor dies mid-run: no more heartbeats, its CLI is killed with it
    let _ = doomed.await;
    let still = f.status(&run_id).await;
    assert_eq!(still["status"], "running", "nothing has noticed yet");

    // The message comes back after its visibility timeout; by then the lease has expired.
    let store = runner_adapters::DynamoRunStore::new(
        aws::dynamodb(&f.t.stack.sdk),
        &f.t.stack.settings.runs_table,
        &f.t.stack.settings.idempotency_table,
    );
    let id: runner_core::domain::RunId = run_id.parse().unwrap();
    let expired = e2e::TestStack::eventually(Duration::from_secs(20), || async {
        let lease = store.get(id).await.unwrap().and_then(|run| run.lease_expires_at);
        lease.is_some_and(|until| until < chrono::Utc::now()).then_some(())
    })
    .await;
    assert!(expired.is_some(), "the dead executor's lease runs out");
    let redelivered = executor::handle(&executor, e2e::run_message(&run_id)).await;
    assert!(redelivered.batch_item_failures.is_empty());
    let run = f.status(&run_id).await;
    assert_eq!((run["status"].as_str(), run["error"]["code"].as_str()), (Some("failed"), Some("executor_lost")));
    assert_eq!(f.processes_in_workspaces(), Vec::<i32>::new());
    f.stop().await;
}

#[tokio::test]
async fn a_five_megabyte_line_is_stored_whole() {
    let big = "x".repeat(5 * 1024 * 1024);
    // One turn: the CLI itself refuses to send a conversation this large back to the model, so
    // the run stops after the tool ran, with every frame stored.
    let f = RunnerFixture::start(vec![Turn::write("big.txt", &big)], &[], true).await;
    let run_id = f.submit("implement", json!({"message": "Write a big file", "branch": "main", "max_turns": 1})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["error"]["code"], "max_turns_exhausted", "{run}");
    let frames = f.frames(&run_id).await;
    let huge: Vec<_> = frames.iter().filter(|fr| fr.3 > 5 * 1024 * 1024).collect();
    assert!(!huge.is_empty(), "the tool call is one frame above 5 MB: {frames:?}");
    assert!(huge.iter().all(|fr| !fr.4), "stored whole, not truncated");
    let stored: String = sqlx::query_scalar(
        "SELECT data #>> '{message,content,0,input,content}' FROM claude_cli_outputs \
         WHERE run_id = $1 AND output_type = 'assistant' AND byte_size > 5000000",
    )
    .bind(uuid::Uuid::parse_str(&run_id).unwrap())
    .fetch_one(&f.t.stack.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), big.len());
    let log = s3(&f).get(&format!("runs/{run_id}/output.ndjson")).await.unwrap().unwrap();
    assert!(String::from_utf8(log).unwrap().lines().any(|l| l.len() > big.len()), "the S3 log has the whole line");
    f.stop().await;
}

#[tokio::test]
async fn a_line_above_the_frame_cap_is_kept_truncated_and_marked() {
    let big = "y".repeat(2 * 1024 * 1024);
    let f = RunnerFixture::start(vec![Turn::write("big.txt", &big)], &[("MAX_FRAME_BYTES", "1048576")], true).await;
    let run_id = f.submit("implement", json!({"message": "Write a big file", "branch": "main", "max_turns": 1})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["error"]["code"], "max_turns_exhausted", "a truncated frame does not break the run: {run}");
    let truncated: Vec<(String, i64)> = sqlx::query_as(
        "SELECT output_type, (data->>'original_bytes')::bigint FROM claude_cli_outputs WHERE run_id = $1 AND truncated",
    )
    .bind(uuid::Uuid::parse_str(&run_id).unwrap())
    .fetch_all(&f.t.stack.pool)
    .await
    .unwrap();
    assert!(!truncated.is_empty());
    assert!(truncated.iter().all(|(_, bytes)| *bytes > 2 * 1024 * 1024), "{truncated:?}");
    f.stop().await;
}
