//! The Genie function: one function, two event sources (`docs/genie.md`).
//!
//! - the requests queue (SQS, `ReportBatchItemFailures` on): each CloudEvent →
//!   `GenieService::handle_request`; a refused request is answered and deleted, a transient
//!   failure is reported so SQS retries it (and dead-letters it after a few receives);
//! - the runs table's stream (`NEW_AND_OLD_IMAGES`, `ReportBatchItemFailures` on): each change →
//!   `GenieService::announce_change`, so a run's replies follow whoever moved it. The first
//!   record whose reply could not be sent is reported, and Lambda retries from there in order.

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use runner_adapters::Wiring;
use runner_adapters::aws::sqs_batch::each_message;
use runner_core::domain::Run;
use runner_core::usecases::GenieService;

/// Builds the service once per cold start.
pub async fn build(wiring: &Wiring) -> runner_core::Result<GenieService> {
    wiring.genie_service()
}

/// Tells the two event sources apart by their records' `eventSource`.
pub async fn dispatch(
    genie: &GenieService,
    payload: serde_json::Value,
) -> Result<serde_json::Value, serde_json::Error> {
    let source = payload["Records"][0]["eventSource"].as_str().unwrap_or_default().to_owned();
    if source == "aws:dynamodb" {
        let response = handle_changes(genie, serde_json::from_value(payload)?).await;
        serde_json::to_value(response)
    } else {
        let response = handle_requests(genie, serde_json::from_value(payload)?).await;
        serde_json::to_value(response)
    }
}

/// A batch of requests; each fails or succeeds alone (the queue is not FIFO).
pub async fn handle_requests(genie: &GenieService, event: SqsEvent) -> SqsBatchResponse {
    each_message(event, "request", |body| async move { genie.handle_request(&body).await }).await
}

/// A batch of run changes, in shard order.
pub async fn handle_changes(genie: &GenieService, event: StreamEvent) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    for record in event.records {
        let Some((old, new)) = decode(&record) else { continue };
        if let Err(err) = genie.announce_change(old.as_ref(), &new).await {
            tracing::warn!(run_id = %new.run_id, error = %err, "reply not sent; the stream will retry from here");
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = record.change.sequence_number.clone();
            response.batch_item_failures.push(failure);
            break;
        }
    }
    response
}

/// The run before and after the change; `None` for anything that is not a run's insert or
/// modification (removals, other tables' records).
fn decode(record: &EventRecord) -> Option<(Option<Run>, Run)> {
    if record.event_name == "REMOVE" {
        return None;
    }
    let new: Run = serde_dynamo::from_item(record.change.new_image.clone()).ok()?;
    let old = (!record.change.old_image.is_empty())
        .then(|| serde_dynamo::from_item(record.change.old_image.clone()).ok())
        .flatten();
    Some((old, new))
}
