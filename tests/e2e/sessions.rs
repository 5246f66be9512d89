//! Sessions with the real CLI: resume on a fresh workspace and config dir, history, validation.

use std::time::Duration;

use e2e::RunnerFixture;
use local::model::Turn;
use runner_adapters::{S3ObjectStore, aws};
use runner_core::ports::ObjectStore;
use serde_json::{Value, json};

/// Every user message text the model server was sent in its last agent-loop request.
/// A DynamoDB item as a Lambda stream image (`{"S": …}`, `{"N": …}`, …).
fn lambda_image(item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> Value {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    fn one(value: &A) -> Value {
        match value {
            A::S(s) => json!({"S": s}),
            A::N(n) => json!({"N": n}),
            A::Bool(b) => json!({"BOOL": b}),
            A::Null(_) => json!({"NULL": true}),
            A::L(items) => json!({"L": items.iter().map(one).collect::<Vec<_>>()}),
            A::M(map) => json!({"M": map.iter().map(|(k, v)| (k.clone(), one(v))).collect::<serde_json::Map<_, _>>()}),
            A::Ss(items) => json!({"SS": items}),
            A::Ns(items) => json!({"NS": items}),
            other => panic!("no Lambda shape for {other:?}"),
        }
    }
    Value::Object(item.iter().map(|(k, v)| (k.clone(), one(v))).collect())
}

fn last_conversation(f: &RunnerFixture) -> String {
    let requests = f.model.requests();
    let last = requests.iter().rev().find(|r| r["tools"].as_array().is_some_and(|t| !t.is_empty())).expect("a request");
    last["messages"].to_string()
}

async fn run_in_session(f: &RunnerFixture, session: Option<&str>, message: &str) -> Value {
    let mut body = json!({"message": message, "branch": "main"});
    if let Some(s) = session {
        body["session_id"] = json!(s);
    }
    let run_id = f.submit("implement", body).await;
    f.wait_until_finished(&run_id).await
}

#[tokio::test]
async fn a_second_run_continues_the_first_runs_conversation() {
    let turns = vec![Turn::write("a.txt", "alpha"), Turn::text("first done"), Turn::text("second done")];
    let f = RunnerFixture::start(turns, &[], true).await;
    let first = run_in_session(&f, None, "Create a.txt with alpha").await;
    assert_eq!(first["status"], "completed", "{first}");
    let session = first["session_id"].as_str().unwrap().to_owned();

    let second = run_in_session(&f, Some(&session), "What did you write?").await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["session_id"], session.as_str());
    let conversation = last_conversation(&f);
    assert!(conversation.contains("Create a.txt with alpha"), "the model sees the earlier messages: {conversation}");
    assert!(conversation.contains("What did you write?"));

    let (status, view) = f.t.get_json(&format!("/agent/claude-code/sessions/{session}"), f.t.key()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["runs"], 2);
    assert_eq!(view["run_ids"], json!([first["run_id"], second["run_id"]]));
    assert_eq!(view["resumable"], true);
    assert_eq!(view["total_turns"], first["num_turns"].as_u64().unwrap() + second["num_turns"].as_u64().unwrap());
    f.stop().await;
}

#[tokio::test]
async fn twenty_resumptions_in_a_row_all_succeed_and_the_history_lists_every_turn() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    let first = run_in_session(&f, None, "turn 0").await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    for i in 1..=20 {
        let run = run_in_session(&f, Some(&session), &format!("turn {i}")).await;
        assert_eq!(run["status"], "completed", "resumption {i}: {run}");
    }
    let mut texts = Vec::new();
    let mut offset = 0;
    loop {
        let (status, page) =
            f.t.get_json(&format!("/agent/claude-code/sessions/{session}/history?offset={offset}&limit=10"), f.t.key())
                .await;
        assert_eq!(status, 200, "{page}");
        for m in page["messages"].as_array().unwrap() {
            if m["role"] == "user" && m["text"].as_str().is_some_and(|t| t.starts_with("turn ")) {
                texts.push(m["text"].as_str().unwrap().to_owned());
            }
        }
        match page["next_offset"].as_u64() {
            Some(next) => offset = next as usize,
            None => break,
        }
    }
    let expected: Vec<String> = (0..=20).map(|i| format!("turn {i}")).collect();
    assert_eq!(texts, expected, "every turn, in order");
    f.stop().await;
}

#[tokio::test]
async fn two_submits_on_one_session_run_one_after_the_other() {
    let slow = |text: &str| Turn::Delayed(Duration::from_secs(2), Box::new(Turn::text(text)));
    let f = RunnerFixture::start(vec![Turn::text("start"), slow("one"), slow("two")], &[], true).await;
    let first = run_in_session(&f, None, "start").await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    let a = f.submit("implement", json!({"message": "one", "branch": "main", "session_id": session})).await;
    let b = f.submit("implement", json!({"message": "two", "branch": "main", "session_id": session})).await;
    let (ra, rb) = (f.wait_until_finished(&a).await, f.wait_until_finished(&b).await);
    assert_eq!((ra["status"].as_str(), rb["status"].as_str()), (Some("completed"), Some("completed")));
    let finished_a: chrono::DateTime<chrono::Utc> = ra["finished_at"].as_str().unwrap().parse().unwrap();
    let started_b: chrono::DateTime<chrono::Utc> = rb["started_at"].as_str().unwrap().parse().unwrap();
    assert!(started_b >= finished_a, "the second starts only after the first ends: {finished_a} vs {started_b}");
    f.stop().await;
}

#[tokio::test]
async fn bad_sessions_are_refused_at_submit_and_a_lost_transcript_fails_clearly() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    let submit = |session: String, workflow: &'static str| {
        let t = &f.t;
        async move {
            let response = t.submit(workflow, json!({"message": "m", "branch": "main", "session_id": session})).await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap()["error"]["code"].as_str().unwrap_or("").to_owned())
        }
    };
    assert_eq!(submit(uuid::Uuid::new_v4().to_string(), "implement").await, (404, "unknown_session".into()));

    let first = run_in_session(&f, None, "hello").await;
    let session = first["session_id"].as_str().unwrap().to_owned();
    assert_eq!(submit(session.clone(), "review").await, (409, "session_conflict".into()), "another workflow");

    // Another key's session is indistinguishable from an unknown one.
    let stranger = f.t.stack.issue_key("team-b").await.unwrap();
    let response =
        f.t.http
            .post(f.t.url("/agent/claude-code/implement/run"))
            .header("x-api-key", &stranger)
            .json(&json!({"message": "m", "branch": "main", "session_id": session}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let (status, _) = f.t.get_json(&format!("/agent/claude-code/sessions/{session}"), &stranger).await;
    assert_eq!(status, 404);

    // Expired: past its expiry, the session is gone for submit and read alike.
    let sessions = runner_adapters::DynamoSessionStore::new(
        aws_sdk_dynamodb::Client::new(&f.t.stack.sdk),
        &f.t.stack.settings.sessions_table,
    );
    use runner_core::ports::SessionStore as _;
    let id: uuid::Uuid = session.parse().unwrap();
    let mut stored = sessions.get(id).await.unwrap().unwrap();
    let expected = stored.version;
    stored.expires_at = chrono::Utc::now() - chrono::Duration::minutes(1);
    stored.version += 1;
    sessions.update(&stored, expected).await.unwrap();
    assert_eq!(submit(session.clone(), "implement").await, (404, "unknown_session".into()), "expired");

    // A transcript that went missing: the run fails with its own code, not the CLI's message.
    let fresh = run_in_session(&f, None, "again").await;
    let fresh_session = fresh["session_id"].as_str().unwrap().to_owned();
    let objects = S3ObjectStore::new(aws::s3(&f.t.stack.sdk), &f.t.stack.settings.artifacts_bucket);
    for key in objects.list(&format!("sessions/{fresh_session}/")).await.unwrap() {
        objects.delete(&key).await.unwrap();
    }
    let lost = run_in_session(&f, Some(&fresh_session), "do you remember?").await;
    assert_eq!((lost["status"].as_str(), lost["error"]["code"].as_str()), (Some("failed"), Some("transcript_missing")));
    f.stop().await;
}

#[tokio::test]
async fn a_reserved_session_id_names_the_first_run_and_delete_expires_it() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    let chosen = uuid::Uuid::new_v4().to_string();
    let response =
        f.t.http
            .post(f.t.url("/agent/claude-code/sessions"))
            .header("x-api-key", f.t.key())
            .json(&json!({"workflow": "implement", "branch": "main", "session_id": chosen}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let reserved: Value = response.json().await.unwrap();
    assert_eq!(
        (reserved["session_id"].as_str(), reserved["resumable"].as_bool()),
        (Some(chosen.as_str()), Some(false))
    );

    let run = run_in_session(&f, Some(&chosen), "first words").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["session_id"], chosen.as_str(), "the CLI ran under the id chosen up front");
    let (_, list) = f.t.get_json("/agent/claude-code/sessions", f.t.key()).await;
    assert!(list["sessions"].as_array().unwrap().iter().any(|s| s["session_id"] == chosen.as_str()));

    let deleted =
        f.t.http
            .delete(f.t.url(&format!("/agent/claude-code/sessions/{chosen}")))
            .header("x-api-key", f.t.key())
            .send()
            .await
            .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    let (status, _) = f.t.get_json(&format!("/agent/claude-code/sessions/{chosen}"), f.t.key()).await;
    assert_eq!(status, 404);
    let objects = S3ObjectStore::new(aws::s3(&f.t.stack.sdk), &f.t.stack.settings.artifacts_bucket);
    assert!(objects.list(&format!("sessions/{chosen}/")).await.unwrap().is_empty(), "its objects are gone");
    f.stop().await;
}

#[tokio::test]
async fn sessions_reach_postgres_through_the_projector_and_leave_with_their_deletion() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    let run = run_in_session(&f, None, "hello").await;
    let session: uuid::Uuid = run["session_id"].as_str().unwrap().parse().unwrap();
    let row = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (i32, i32)>("SELECT run_count, total_turns FROM claude_cli_sessions WHERE session_id = $1")
            .bind(session)
            .fetch_optional(&pool)
            .await
            .unwrap()
    };
    let projected = e2e::TestStack::eventually(Duration::from_secs(15), || async {
        row(f.t.stack.pool.clone()).await.filter(|r| r.0 == 1)
    })
    .await;
    assert_eq!(projected.map(|r| r.1 as u64), run["num_turns"].as_u64());
    let deleted =
        f.t.http
            .delete(f.t.url(&format!("/agent/claude-code/sessions/{session}")))
            .header("x-api-key", f.t.key())
            .send()
            .await
            .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    let gone = e2e::TestStack::eventually(Duration::from_secs(15), || async {
        row(f.t.stack.pool.clone()).await.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the row follows the session out");
    f.stop().await;
}

#[tokio::test]
async fn the_janitor_removes_expired_sessions_lost_runs_and_orphans_and_leaves_the_rest() {
    use runner_core::ports::{RunStore as _, SessionStore as _};
    let f = RunnerFixture::start(vec![], &[], true).await;
    let expired = run_in_session(&f, None, "old conversation").await;
    let live = run_in_session(&f, None, "live conversation").await;
    let (expired_id, live_id): (uuid::Uuid, uuid::Uuid) = (
        expired["session_id"].as_str().unwrap().parse().unwrap(),
        live["session_id"].as_str().unwrap().parse().unwrap(),
    );
    let dynamodb = aws_sdk_dynamodb::Client::new(&f.t.stack.sdk);
    let sessions = runner_adapters::DynamoSessionStore::new(dynamodb.clone(), &f.t.stack.settings.sessions_table);
    let mut old = sessions.get(expired_id).await.unwrap().unwrap();
    let expected = old.version;
    old.expires_at = chrono::Utc::now() - chrono::Duration::hours(1);
    old.version += 1;
    sessions.update(&old, expected).await.unwrap();

    // A run whose executor vanished mid-run, and objects that belong to no run.
    let runs = runner_adapters::DynamoRunStore::new(
        dynamodb,
        &f.t.stack.settings.runs_table,
        &f.t.stack.settings.idempotency_table,
    );
    let mut lost = runs.get(live["run_id"].as_str().unwrap().parse().unwrap()).await.unwrap().unwrap();
    lost.run_id = runner_core::domain::RunId::new();
    lost.status = runner_core::domain::RunStatus::Running;
    lost.finished_at = None;
    lost.lease_owner = Some("gone".into());
    lost.lease_expires_at = Some(chrono::Utc::now() - chrono::Duration::minutes(5));
    assert!(runs.create(&lost).await.unwrap());
    let objects = S3ObjectStore::new(aws::s3(&f.t.stack.sdk), &f.t.stack.settings.artifacts_bucket);
    let orphan = format!("runs/{}/workspace.tar.zst", uuid::Uuid::now_v7());
    objects.put(&orphan, vec![1, 2, 3], "application/zstd").await.unwrap();

    let report = f.t.stack.janitor().sweep(chrono::Utc::now()).await.unwrap();
    assert_eq!((report.expired_sessions, report.failed_runs, report.orphaned_objects), (1, 1, 1), "{report:?}");
    assert!(sessions.get(expired_id).await.unwrap().is_none());
    assert!(objects.list(&format!("sessions/{expired_id}/")).await.unwrap().is_empty());
    assert!(sessions.get(live_id).await.unwrap().is_some(), "a live session is untouched");
    assert!(!objects.list(&format!("sessions/{live_id}/")).await.unwrap().is_empty());
    let lost = runs.get(lost.run_id).await.unwrap().unwrap();
    assert_eq!(
        (lost.status, lost.error.unwrap().code.as_str()),
        (runner_core::domain::RunStatus::Failed, "executor_lost")
    );
    assert_eq!(objects.get(&orphan).await.unwrap(), None);
    let real_log = format!("runs/{}/output.ndjson", live["run_id"].as_str().unwrap());
    assert!(objects.get(&real_log).await.unwrap().is_some(), "a real run's objects stay");

    let again = f.t.stack.janitor().sweep(chrono::Utc::now()).await.unwrap();
    assert_eq!(again, runner_core::usecases::JanitorReport::default(), "a second sweep finds nothing: idempotent");
    f.stop().await;
}

#[tokio::test]
async fn an_id_the_cli_handed_back_names_the_same_lineage() {
    use runner_core::ports::SessionStore as _;
    let t = e2e::TestStack::start().await;
    let store = runner_adapters::DynamoSessionStore::new(
        aws_sdk_dynamodb::Client::new(&t.stack.sdk),
        &t.stack.settings.sessions_table,
    );
    let lineage = runner_core::domain::Session::reserve(
        uuid::Uuid::now_v7(),
        runner_core::domain::Owner::new("local"),
        "implement",
        e2e::DEFAULT_REPOSITORY,
        "main",
        chrono::Utc::now(),
        chrono::Duration::days(1),
    );
    assert!(store.create(&lineage).await.unwrap());
    let cli_id = uuid::Uuid::new_v4();
    assert!(store.create(&lineage.alias(cli_id)).await.unwrap());
    assert_eq!(store.get(cli_id).await.unwrap().map(|s| s.session_id), Some(lineage.session_id));
    // A run naming the alias is accepted and carries the lineage id.
    let response =
        t.submit("implement", json!({"message": "m", "branch": "main", "session_id": cli_id.to_string()})).await;
    assert_eq!(response.status().as_u16(), 202);
    let run_id = response.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_owned();
    let (_, run) = t.get_json(&format!("/agent/claude-code/run/{run_id}/status"), t.key()).await;
    assert_eq!(run["session_id"], lineage.session_id.to_string());
    let (_, list) = t.get_json("/agent/claude-code/sessions", t.key()).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "aliases are not listed as sessions");

    // The read model has the lineage, never the alias (it would count the totals twice). Shown
    // on the alias's own stream image rather than on the stream's order: real DynamoDB Streams
    // order records per item only.
    let item = aws_sdk_dynamodb::Client::new(&t.stack.sdk)
        .get_item()
        .table_name(&t.stack.settings.sessions_table)
        .key("session_id", aws_sdk_dynamodb::types::AttributeValue::S(cli_id.to_string()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the alias is stored");
    let event: aws_lambda_events::dynamodb::Event = serde_json::from_value(json!({"Records": [{
        "eventID": "alias", "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/s/stream/x",
        "dynamodb": {"Keys": {"session_id": {"S": cli_id.to_string()}}, "NewImage": lambda_image(&item),
                     "SequenceNumber": "1", "SizeBytes": 100, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    }]}))
    .unwrap();
    let projection =
        projector::Projector::new(std::sync::Arc::new(runner_adapters::PgRunProjection::new(t.stack.pool.clone())));
    let (_, report) = projector::handle(&projection, event).await.unwrap();
    assert_eq!((report.applied, report.skipped), (0, 1), "the alias record is skipped");
    let projected = |id: uuid::Uuid| {
        let pool = t.stack.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM claude_cli_sessions WHERE session_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let lineage_seen = e2e::TestStack::eventually(Duration::from_secs(15), || async {
        (projected(lineage.session_id).await == 1).then_some(())
    })
    .await;
    assert!(lineage_seen.is_some(), "the lineage reaches the read model");
    assert_eq!(projected(cli_id).await, 0, "aliases stay out of claude_cli_sessions");
    t.stop().await;
}
