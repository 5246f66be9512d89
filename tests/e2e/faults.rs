//! Faults that must neither lose a run nor leave one stuck: a run whose queue message is lost (or
//! dead-lettered) is sent again, and failed as `dead_lettered` after the last resend.

use std::sync::Arc;

use chrono::{Duration, Utc};
use e2e::TestStack;
use runner_core::domain::{MAX_REQUEUES, QUEUED_GRACE_SECONDS};
use serde_json::json;

#[tokio::test]
async fn a_run_whose_message_was_lost_is_sent_again_then_failed_as_dead_lettered_and_never_stays_queued() {
    let t = TestStack::start().await;
    let response = t.submit("implement", json!({"message": "lost in the queue", "branch": "main"})).await;
    assert_eq!(response.status().as_u16(), 202);
    let run_id = response.json::<serde_json::Value>().await.unwrap()["run_id"].as_str().unwrap().to_owned();
    let sqs = aws_sdk_sqs::Client::new(&t.stack.sdk);
    // Nothing consumes the queue here: take the message out and drop it, as a lost one would be.
    let drain = || async {
        let mut taken = Vec::new();
        for message in t.queued_run_messages().await {
            let body: serde_json::Value = serde_json::from_str(message.body().unwrap_or("{}")).unwrap();
            taken.push(body["run_id"].as_str().unwrap_or_default().to_owned());
            let receipt = message.receipt_handle().unwrap_or_default();
            sqs.delete_message()
                .queue_url(&t.stack.settings.runs_queue_url)
                .receipt_handle(receipt)
                .send()
                .await
                .unwrap();
        }
        taken
    };
    assert_eq!(drain().await, vec![run_id.clone()]);

    let janitor = t.stack.janitor();
    // Not yet: a queued run may be waiting behind its session's runs.
    let report = janitor.sweep(Utc::now()).await.unwrap();
    assert_eq!((report.resent_runs, report.dead_lettered_runs), (0, 0));
    let limit = 900; // the workflow's time limit
    let bound = Duration::seconds(QUEUED_GRACE_SECONDS + limit) + Duration::seconds(1);
    let mut at = Utc::now();
    for resend in 1..=MAX_REQUEUES {
        at += bound;
        let report = janitor.sweep(at).await.unwrap();
        assert_eq!(report.resent_runs, 1, "resend {resend}");
        assert_eq!(drain().await, vec![run_id.clone()], "a new message for the run, resend {resend}");
        let (_, run) = t.get_json(&format!("/agent/claude-code/run/{run_id}/status"), t.key()).await;
        assert_eq!(run["status"], "queued");
    }
    at += bound;
    let report = janitor.sweep(at).await.unwrap();
    assert_eq!(report.dead_lettered_runs, 1);
    let (_, run) = t.get_json(&format!("/agent/claude-code/run/{run_id}/status"), t.key()).await;
    assert_eq!(
        (run["status"].as_str(), run["error"]["code"].as_str()),
        (Some("failed"), Some("dead_lettered")),
        "{run}"
    );
    // Its last message tells whoever subscribed meanwhile that it ended.
    assert_eq!(drain().await, vec![run_id.clone()]);
    t.stop().await;
}

/// A stand-in for `claude` that prints `lines` (with this run's session id) and then does `then`.
fn fake_cli(dir: &std::path::Path, lines: &[&str], then: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let printed: String = lines.iter().map(|line| format!("echo '{line}'\n")).collect();
    let script = format!(
        "#!/bin/sh\nsid=00000000-0000-4000-8000-000000000001\n\
         while [ $# -gt 0 ]; do case \"$1\" in --session-id|--resume) sid=\"$2\"; shift;; esac; shift; done\n\
         cat > /dev/null\n{}{then}\n",
        printed.replace("SID", "'\"$sid\"'")
    );
    let path = dir.join("claude");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

const INIT: &str = r#"{"type":"system","subtype":"init","session_id":"SID","tools":[],"mcp_servers":[]}"#;
const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"done; a tool lingers","session_id":"SID","num_turns":1,"total_cost_usd":0.001,"duration_ms":5,"usage":{"input_tokens":1,"output_tokens":1}}"#;

#[tokio::test]
async fn a_cli_that_hangs_after_its_result_is_stopped_and_the_run_completes_from_the_result() {
    let bin = local::open_tempdir("fake-cli-").unwrap();
    let cli = fake_cli(bin.path(), &[INIT, RESULT], "sleep 600");
    let f = e2e::RunnerFixture::start(vec![], &[("CLAUDE_BIN", cli.to_str().unwrap())], true).await;
    let run_id = f.submit("implement", json!({"message": "finish, then hang", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "finished from its result, not by the idle timeout: {run}");
    assert_eq!(run["result_summary"], "done; a tool lingers");
    assert!(f.processes_in_workspaces().is_empty(), "the lingering process was stopped with the run");
    f.stop().await;
}

#[tokio::test]
async fn a_cli_that_exits_without_a_result_fails_the_run_with_cli_exited() {
    let bin = local::open_tempdir("fake-cli-").unwrap();
    let cli = fake_cli(bin.path(), &[INIT], "exit 0");
    let f = e2e::RunnerFixture::start(vec![], &[("CLAUDE_BIN", cli.to_str().unwrap())], true).await;
    let run_id = f.submit("implement", json!({"message": "no result", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!((run["status"].as_str(), run["error"]["code"].as_str()), (Some("failed"), Some("cli_exited")), "{run}");
    f.stop().await;
}

/// The real CLI for about 12 s, a file written every second (each a few frames), then its
/// answer: a run that goes on printing through the outage.
fn ticking_turns() -> Vec<local::model::Turn> {
    use local::model::Turn;
    let mut turns: Vec<Turn> = (1..=12)
        .map(|i| {
            Turn::Delayed(std::time::Duration::from_secs(1), Box::new(Turn::write(&format!("tick{i}.txt"), "tick\n")))
        })
        .collect();
    turns.push(Turn::text("ticked through an outage"));
    turns
}

#[tokio::test]
async fn a_postgres_outage_mid_run_loses_no_frame_and_strands_no_run() {
    let setup = e2e::StackSetup { own_services: true, ..e2e::StackSetup::default() };
    let mut f = e2e::RunnerFixture::start_setup(ticking_turns(), &[], true, setup).await;
    let run_id = f.submit("implement", json!({"message": "tick through an outage", "branch": "main"})).await;
    let id = uuid::Uuid::parse_str(&run_id).unwrap();
    let frames = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT sequence_number FROM claude_cli_outputs WHERE run_id = $1 ORDER BY 1")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap_or_default()
    };
    let pool = f.t.stack.pool.clone();
    let started = TestStack::eventually(std::time::Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { (!frames(pool).await.is_empty()).then_some(()) }
    })
    .await;
    assert!(started.is_some(), "the run's first frames reached Postgres");
    // Down for 10 s while the run goes on printing.
    f.t.postgres_outage(std::time::Duration::from_secs(10)).await;

    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "the run went on through the outage: {run}");
    assert_eq!(run["result_summary"], "ticked through an outage");
    // Every line the CLI printed is a frame in Postgres, in order and without a gap, as in the
    // run's log in S3.
    let log = runner_adapters::aws::s3(&f.t.stack.sdk)
        .get_object()
        .bucket(&f.t.stack.settings.artifacts_bucket)
        .key(format!("runs/{run_id}/output.ndjson"))
        .send()
        .await
        .expect("the frame log is in S3");
    let log = log.body.collect().await.unwrap().into_bytes();
    let logged = log.split(|b| *b == b'\n').filter(|line| !line.is_empty()).count() as i64;
    assert!(logged > 12 * 2, "every tick is in the log: {logged} lines");
    let stored = TestStack::eventually(std::time::Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { Some(frames(pool).await).filter(|seqs| seqs.len() as i64 == logged) }
    })
    .await
    .unwrap_or_else(|| panic!("Postgres holds all {logged} frames of the log"));
    assert_eq!(stored, (1..=logged).collect::<Vec<_>>(), "no frame lost or repeated");
    // The run's copy in Postgres ended too: nothing stuck.
    let status = TestStack::eventually(std::time::Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM claude_cli_runs WHERE run_id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
                .filter(|status| status == "completed")
        }
    })
    .await;
    assert_eq!(status.as_deref(), Some("completed"), "the run's row in Postgres is not stuck");
    f.stop().await;
}

/// The executor dies mid-run with everything it ran — its runtime is shut down, as its process
/// would end — so nothing renews its lease or its hold on the run's subscriber. Given the run's
/// message again, another executor ends the run `executor_lost`, takes the subscriber over and
/// sends it its end: the client is not left waiting for API Gateway's idle timeout, no run is
/// stuck, no frame missing.
#[tokio::test]
async fn a_crashed_executors_subscriber_is_taken_over_and_gets_the_end_of_the_run() {
    use runner_core::ports::ConnectionStore as _;
    let f = e2e::RunnerFixture::start(vec![local::model::Turn::Stall], &[], false).await;
    let run_id = f.submit("implement", json!({"message": "never answered", "branch": "main"})).await;
    let id: runner_core::domain::RunId = run_id.parse().unwrap();
    let doomed = Arc::new(f.t.stack.executor(&f.executor).await.unwrap());
    let host = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let event = e2e::run_message(&run_id);
    host.spawn(async move { executor::handle(&doomed, event).await });
    f.wait_for(&run_id, &["running"], std::time::Duration::from_secs(30)).await;

    let mut client = e2e::WsClient::connect(&f.t.stack.ws_url, Some(f.t.key())).await.expect("connect");
    client.subscribe(&run_id, 0).await;
    let first = client.next_frame(std::time::Duration::from_secs(30)).await.expect("the run's first frame");
    assert_eq!(first["seq"], 1);
    // The executor holds the subscription now (a hold as long as its lease, not the handler's).
    let connections = runner_adapters::DynamoConnectionStore::new(
        runner_adapters::aws::dynamodb(&f.t.stack.sdk),
        &f.t.stack.resources["ConnectionsTable"].reference,
    );
    let held = TestStack::eventually(std::time::Duration::from_secs(30), || async {
        let soon = (Utc::now() + Duration::seconds(10)).timestamp();
        let subscribers = connections.subscribers(id).await.unwrap_or_default();
        subscribers.into_iter().find(|s| s.subscription.adopted && s.subscription.held_until.is_some_and(|t| t < soon))
    })
    .await;
    assert!(held.is_some(), "the executor adopted the subscriber");

    // The crash.
    host.shutdown_background();
    let lapsed = TestStack::eventually(std::time::Duration::from_secs(30), || async {
        let subscribers = connections.subscribers(id).await.unwrap_or_default();
        let lapsed = !subscribers.is_empty() && subscribers.iter().all(|s| s.subscription.lapsed(Utc::now()));
        lapsed.then_some(())
    })
    .await;
    assert!(lapsed.is_some(), "the dead executor's hold lapses");
    assert_eq!(f.status(&run_id).await["status"], "running", "nothing else has noticed yet");
    let runs = runner_adapters::DynamoRunStore::new(
        runner_adapters::aws::dynamodb(&f.t.stack.sdk),
        &f.t.stack.settings.runs_table,
        &f.t.stack.settings.idempotency_table,
    );
    let expired = TestStack::eventually(std::time::Duration::from_secs(30), || async {
        use runner_core::ports::RunStore as _;
        let lease = runs.get(id).await.unwrap().and_then(|run| run.lease_expires_at);
        lease.is_some_and(|until| until < Utc::now()).then_some(())
    })
    .await;
    assert!(expired.is_some(), "the dead executor's lease runs out");

    // The message comes back; another executor takes it.
    let successor = f.t.stack.executor(&f.executor).await.unwrap();
    let handled = executor::handle(&successor, e2e::run_message(&run_id)).await;
    assert!(handled.batch_item_failures.is_empty());
    let rest = client.frames_until_end(std::time::Duration::from_secs(30)).await;
    let end = rest.last().unwrap_or_else(|| panic!("the subscriber got the rest of the run: {rest:?}"));
    assert_eq!((end["kind"].as_str(), end["status"].as_str()), (Some("end"), Some("failed")), "{end}");
    let run = f.status(&run_id).await;
    assert_eq!((run["status"].as_str(), run["error"]["code"].as_str()), (Some("failed"), Some("executor_lost")));
    assert_eq!(f.processes_in_workspaces(), Vec::<i32>::new(), "nothing of the dead executor's run is left");
    let workspace = f.workspace_root.path().join("runs").join(&run_id);
    assert!(!workspace.exists(), "the dead attempt's workspace was removed by its successor");
    f.stop().await;
}
