use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use e2e::TestStack;
use runner_adapters::DynamoRunStore;
use runner_core::domain::{RunId, RunStatus};
use runner_core::ports::RunStore;
use serde_json::{Value, json};

fn run_body() -> Value {
    json!({"message": "Add a /version endpoint", "branch": "feature/version"})
}

async fn projected_status(t: &TestStack, run_id: &str) -> Option<(String, i64)> {
    let id: uuid::Uuid = run_id.parse().unwrap();
    sqlx::query_as::<_, (String, i64)>("SELECT status, version FROM claude_cli_runs WHERE run_id = $1")
        .bind(id)
        .fetch_optional(&t.stack.pool)
        .await
        .unwrap()
}

fn store(t: &TestStack) -> DynamoRunStore {
    DynamoRunStore::new(
        aws_sdk_dynamodb::Client::new(&t.stack.sdk),
        &t.stack.settings.runs_table,
        &t.stack.settings.idempotency_table,
    )
}

#[tokio::test]
async fn a_submitted_run_is_recorded_in_dynamodb_queued_in_sqs_and_projected_to_postgres() {
    let t = TestStack::start().await;
    let response = t.submit("implement", run_body()).await;
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    let run_id = body["run_id"].as_str().unwrap().to_owned();
    assert_eq!(run_id.parse::<RunId>().unwrap().as_uuid().get_version_num(), 7);
    assert_eq!(body["status"], "queued");
    assert_eq!(body["status_url"], t.url(&format!("/agent/claude-code/run/{run_id}/status")));
    assert_eq!(body["stream"]["subscribe"], json!({"action": "subscribe", "run_id": run_id, "after_seq": 0}));

    let (status, run) = t.get_json(&format!("/agent/claude-code/run/{run_id}/status"), t.key()).await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "queued");
    assert_eq!(run["workflow"], "implement");
    assert_eq!(run["branch"], "feature/version");
    assert_eq!(run["repository_url"], e2e::DEFAULT_REPOSITORY);
    assert_eq!(run["max_turns"], 60, "the implement workflow's default");
    assert!(run.get("owner").is_none(), "owners stay internal");

    let item = aws_sdk_dynamodb::Client::new(&t.stack.sdk)
        .get_item()
        .table_name(&t.stack.settings.runs_table)
        .key("run_id", AttributeValue::S(run_id.clone()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the run is in DynamoDB");
    assert_eq!(item["owner"].as_s().unwrap(), "local");
    assert_eq!(item["status"].as_s().unwrap(), "queued");

    let messages = t.queued_run_messages().await;
    assert_eq!(messages.len(), 1);
    let message: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(message["run_id"], run_id);
    let group =
        messages[0].attributes().unwrap()[&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId].clone();
    assert_eq!(group, run_id, "a run without a session is its own message group");

    let projected = TestStack::eventually(Duration::from_secs(15), || projected_status(&t, &run_id)).await;
    assert_eq!(projected, Some(("queued".to_owned(), 1)));
    t.stop().await;
}

#[tokio::test]
async fn runs_of_one_session_share_a_message_group() {
    let t = TestStack::start().await;
    let reserved: Value = t
        .http
        .post(t.url("/agent/claude-code/sessions"))
        .header("x-api-key", t.key())
        .json(&json!({"workflow": "fix", "branch": "feature/version"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = reserved["session_id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let mut body = run_body();
        body["session_id"] = json!(session);
        assert_eq!(t.submit("fix", body).await.status().as_u16(), 202);
    }
    let messages = t.queued_run_messages().await;
    assert_eq!(messages.len(), 2);
    for m in messages {
        assert_eq!(m.attributes().unwrap()[&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId], session);
    }
    t.stop().await;
}

#[tokio::test]
async fn listing_is_newest_first_paginated_and_filtered() {
    let t = TestStack::start().await;
    let mut ids = Vec::new();
    for workflow in ["implement", "review", "implement", "test", "implement"] {
        let body: Value = t.submit(workflow, run_body()).await.json().await.unwrap();
        ids.push(body["run_id"].as_str().unwrap().to_owned());
    }
    ids.reverse();

    let (runs, pages) = t.every_page("/agent/claude-code/runs", "runs", t.key(), 2).await;
    assert!(pages.iter().all(|n| *n <= 2), "{pages:?}");
    let seen: Vec<String> = runs.iter().map(|r| r["run_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(seen, ids, "every run once, newest first");

    let (_, implement) = t.get_json("/agent/claude-code/runs?workflow=implement", t.key()).await;
    assert_eq!(implement["runs"].as_array().unwrap().len(), 3);
    assert!(implement["runs"].as_array().unwrap().iter().all(|r| r["workflow"] == "implement"));

    let (status, _) = t.post_json(&format!("/agent/claude-code/run/{}/cancel", ids[0]), t.key()).await;
    assert_eq!(status, 200);
    let (_, cancelled) = t.get_json("/agent/claude-code/runs?status=cancelled&limit=1", t.key()).await;
    let runs = cancelled["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run_id"], ids[0].as_str());
    let (_, queued) = t.get_json("/agent/claude-code/runs?status=queued&limit=100", t.key()).await;
    assert_eq!(queued["runs"].as_array().unwrap().len(), 4);
    assert!(queued["next_cursor"].is_null());
    t.stop().await;
}

#[tokio::test]
async fn cancel_ends_a_queued_run_flags_a_running_one_and_refuses_a_finished_one() {
    let t = TestStack::start().await;
    let queued: Value = t.submit("implement", run_body()).await.json().await.unwrap();
    let queued_id = queued["run_id"].as_str().unwrap();
    let (status, run) = t.post_json(&format!("/agent/claude-code/run/{queued_id}/cancel"), t.key()).await;
    assert_eq!((status, run["status"].as_str()), (200, Some("cancelled")));
    assert!(run["finished_at"].is_string());
    let (status, again) = t.post_json(&format!("/agent/claude-code/run/{queued_id}/cancel"), t.key()).await;
    assert_eq!(status, 409);
    assert_eq!(again["error"]["code"], "invalid_transition");

    // A run an executor has picked up: move it along the state machine as the executor would.
    let running: Value = t.submit("implement", run_body()).await.json().await.unwrap();
    let running_id: RunId = running["run_id"].as_str().unwrap().parse().unwrap();
    let store = store(&t);
    let mut run = store.get(running_id).await.unwrap().unwrap();
    for next in [RunStatus::Preparing, RunStatus::Running] {
        let expected = run.version;
        run.transition(next, Utc::now()).unwrap();
        store.update(&run, expected).await.unwrap();
    }
    let (status, flagged) = t.post_json(&format!("/agent/claude-code/run/{running_id}/cancel"), t.key()).await;
    assert_eq!(status, 200);
    assert_eq!(flagged["status"], "running");
    assert_eq!(flagged["cancel_requested"], true);
    let (status, _) = t.post_json(&format!("/agent/claude-code/run/{running_id}/cancel"), t.key()).await;
    assert_eq!(status, 200, "asking again is harmless");

    let mut run = store.get(running_id).await.unwrap().unwrap();
    assert!(run.cancel_requested);
    let expected = run.version;
    run.transition(RunStatus::Completed, Utc::now()).unwrap();
    store.update(&run, expected).await.unwrap();
    let (status, refused) = t.post_json(&format!("/agent/claude-code/run/{running_id}/cancel"), t.key()).await;
    assert_eq!(status, 409);
    assert_eq!(refused["error"]["code"], "invalid_transition");
    t.stop().await;
}

#[tokio::test]
async fn a_stale_version_is_refused_by_the_store() {
    let t = TestStack::start().await;
    let body: Value = t.submit("implement", run_body()).await.json().await.unwrap();
    let id: RunId = body["run_id"].as_str().unwrap().parse().unwrap();
    let store = store(&t);
    let mut first = store.get(id).await.unwrap().unwrap();
    let mut second = first.clone();
    first.transition(RunStatus::Preparing, Utc::now()).unwrap();
    store.update(&first, 1).await.unwrap();
    second.transition(RunStatus::Preparing, Utc::now()).unwrap();
    assert!(matches!(store.update(&second, 1).await, Err(runner_core::Error::Conflict)), "a duplicate claim loses");
    t.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_run_and_queues_it_once() {
    let t = TestStack::start().await;
    let send = |key: &'static str, body: Value, api_key: String| {
        let t = &t;
        async move { t.submit_keyed("implement", &body, &api_key, key).await }
    };
    let (s1, r1, first) = send("order-42", run_body(), t.key().to_owned()).await;
    let (s2, r2, second) = send("order-42", run_body(), t.key().to_owned()).await;
    assert_eq!((s1, r1.as_str()), (202, "false"));
    assert_eq!((s2, r2.as_str()), (202, "true"));
    assert_eq!(first["run_id"], second["run_id"]);
    // Counted where messages are sent: the FIFO queue would drop a second send silently.
    assert_eq!(t.stack.run_messages_sent(), 1, "a replay sends nothing");
    assert_eq!(t.queued_run_messages().await.len(), 1);

    // Two submits at once under a new key: one run, one message, one of them a replay.
    let ((sa, ra, a), (sb, rb, b)) = tokio::join!(
        send("order-43", run_body(), t.key().to_owned()),
        send("order-43", run_body(), t.key().to_owned())
    );
    assert_eq!((sa, sb), (202, 202));
    assert_eq!(a["run_id"], b["run_id"], "both name the one run");
    let mut replays = [ra.as_str(), rb.as_str()];
    replays.sort();
    assert_eq!(replays, ["false", "true"]);
    assert_eq!(t.stack.run_messages_sent(), 2, "the concurrent pair sent one message");

    let mut changed = run_body();
    changed["message"] = json!("something else");
    let (status, _, conflict) = send("order-42", changed, t.key().to_owned()).await;
    assert_eq!(status, 409);
    assert_eq!(conflict["error"]["code"], "idempotency_key_reused");

    let other_key = t.stack.issue_key("team-b").await.unwrap();
    let (status, _, other) = send("order-42", run_body(), other_key).await;
    assert_eq!(status, 202);
    assert_ne!(other["run_id"], first["run_id"], "keys are scoped per owner");
    t.stop().await;
}

#[tokio::test]
async fn another_keys_runs_are_invisible() {
    let t = TestStack::start().await;
    let body: Value = t.submit("implement", run_body()).await.json().await.unwrap();
    let run_id = body["run_id"].as_str().unwrap();
    let other = t.stack.issue_key("team-b").await.unwrap();

    let (status, err) = t.get_json(&format!("/agent/claude-code/run/{run_id}/status"), &other).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("run_not_found")));
    let (status, err) = t.post_json(&format!("/agent/claude-code/run/{run_id}/cancel"), &other).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("run_not_found")));
    let (status, list) = t.get_json("/agent/claude-code/runs", &other).await;
    assert_eq!(status, 200);
    assert_eq!(list["runs"], json!([]));

    let (_, mine) = t.get_json(&format!("/agent/claude-code/run/{run_id}/status"), t.key()).await;
    assert_eq!(mine["status"], "queued", "the owner still sees it, uncancelled");
    t.stop().await;
}

#[tokio::test]
async fn when_the_queue_refuses_the_run_is_marked_failed_not_left_queued() {
    let t = TestStack::start().await;
    let sqs = aws_sdk_sqs::Client::new(&t.stack.sdk);
    let queue_url = t.stack.settings.runs_queue_url.clone();
    sqs.delete_queue().queue_url(&queue_url).send().await.unwrap();
    let submit_with_key = || {
        t.http
            .post(t.url("/agent/claude-code/implement/run"))
            .header("x-api-key", t.key())
            .header("Idempotency-Key", "retry-me")
            .json(&run_body())
            .send()
    };
    let response = submit_with_key().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_unavailable");

    let (_, list) = t.get_json("/agent/claude-code/runs", t.key()).await;
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "the run was recorded before the send");
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["error"]["code"], "enqueue_failed");

    // The caller was told to retry: with the queue back, the same key makes a new, queued run.
    let name = queue_url.rsplit('/').next().unwrap();
    sqs.create_queue()
        .queue_name(name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap();
    let retried = submit_with_key().await.unwrap();
    assert_eq!(retried.status().as_u16(), 202);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["status"], "queued");
    assert_ne!(retried["run_id"], runs[0]["run_id"], "a new run, not a replay of the failed one");
    t.stop().await;
}

#[tokio::test]
async fn health_needs_no_key() {
    let t = TestStack::start().await;
    let response = t.http.get(t.url("/health")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ok");
    t.stop().await;
}
