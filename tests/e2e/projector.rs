//! The projector against real Postgres, fed Lambda-shaped DynamoDB stream events.

use aws_lambda_events::dynamodb::Event;
use e2e::TestStack;
use runner_adapters::PgRunProjection;
use serde_json::{Value, json};

fn image(run_id: &str, status: &str, version: u64) -> Value {
    json!({
        "run_id": {"S": run_id},
        "owner": {"S": "local"},
        "workflow": {"S": "implement"},
        "branch": {"S": "main"},
        "repository_url": {"S": "https://git.example.com/acme/app.git"},
        "message": {"S": "hello"},
        "max_turns": {"N": "5"},
        "status": {"S": status},
        "cancel_requested": {"BOOL": false},
        "version": {"N": version.to_string()},
        "created_at": {"S": "2026-11-27T10:00:00Z"},
        "updated_at": {"S": format!("2026-11-27T10:00:{version:02}Z")}
    })
}

fn record(sequence: u64, name: &str, new_image: Value) -> Value {
    json!({
        "eventID": format!("e{sequence}"),
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/runs/stream/x",
        "dynamodb": {
            "ApproximateCreationDateTime": 1764237600,
            "Keys": {"run_id": new_image.get("run_id").cloned().unwrap_or(json!({"S": "k"}))},
            "NewImage": new_image,
            "SequenceNumber": sequence.to_string(),
            "SizeBytes": 100,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        }
    })
}

fn event(records: Vec<Value>) -> Event {
    serde_json::from_value(json!({"Records": records})).expect("a Lambda-shaped DynamoDB event")
}

async fn row(t: &TestStack, run_id: &str) -> Option<(String, i64)> {
    sqlx::query_as("SELECT status, version FROM claude_cli_runs WHERE run_id = $1")
        .bind(uuid::Uuid::parse_str(run_id).unwrap())
        .fetch_optional(&t.stack.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn replays_and_out_of_order_versions_change_nothing() {
    let t = TestStack::start().await;
    let projection = projector::Projector::new(std::sync::Arc::new(PgRunProjection::new(t.stack.pool.clone())));
    let id = uuid::Uuid::now_v7().to_string();

    let (response, report) = projector::handle(
        &projection,
        event(vec![record(1, "INSERT", image(&id, "queued", 1)), record(2, "MODIFY", image(&id, "preparing", 2))]),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((report.applied, report.unchanged), (2, 0));
    assert_eq!(row(&t, &id).await, Some(("preparing".into(), 2)));

    // The same record again, then an older version after the newer one.
    let (_, report) = projector::handle(
        &projection,
        event(vec![record(2, "MODIFY", image(&id, "preparing", 2)), record(1, "INSERT", image(&id, "queued", 1))]),
    )
    .await
    .unwrap();
    assert_eq!((report.applied, report.unchanged), (0, 2));
    assert_eq!(row(&t, &id).await, Some(("preparing".into(), 2)));

    let (_, report) =
        projector::handle(&projection, event(vec![record(3, "MODIFY", image(&id, "running", 3))])).await.unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(row(&t, &id).await, Some(("running".into(), 3)));
    t.stop().await;
}

#[tokio::test]
async fn removals_and_foreign_images_are_skipped_without_blocking_the_shard() {
    let t = TestStack::start().await;
    let projection = projector::Projector::new(std::sync::Arc::new(PgRunProjection::new(t.stack.pool.clone())));
    let id = uuid::Uuid::now_v7().to_string();
    let (response, report) = projector::handle(
        &projection,
        event(vec![
            record(1, "MODIFY", json!({"run_id": {"S": "not-a-run"}})),
            record(2, "REMOVE", json!({})),
            record(3, "INSERT", image(&id, "queued", 1)),
        ]),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((report.skipped, report.applied), (2, 1));
    assert_eq!(row(&t, &id).await, Some(("queued".into(), 1)));
    t.stop().await;
}

#[tokio::test]
async fn a_database_failure_reports_the_first_unapplied_record() {
    let t = TestStack::start().await;
    let pool = runner_adapters::postgres::connect(&t.stack.database_url, 1).await.unwrap();
    let projection = projector::Projector::new(std::sync::Arc::new(PgRunProjection::new(pool.clone())));
    pool.close().await;
    let id = uuid::Uuid::now_v7().to_string();
    let (response, report) = projector::handle(
        &projection,
        event(vec![record(7, "INSERT", image(&id, "queued", 1)), record(8, "MODIFY", image(&id, "preparing", 2))]),
    )
    .await
    .unwrap();
    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    assert_eq!(failed, vec![Some("7".to_owned())], "retry resumes at the first record; nothing after it is applied");
    assert_eq!(report.applied, 0);
    t.stop().await;
}
