//! The projector function: DynamoDB Streams records of the runs table → Postgres `claude_cli_runs`.
//!
//! Records of one shard arrive in order; the first record that cannot be applied is reported as
//! the batch's failure so Lambda retries from there (ReportBatchItemFailures), and nothing after
//! it is applied out of order. Applying is idempotent, so the retry re-applies safely.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use shared::domain::Run;
use shared::ports::RunProjection;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("record {0} has no sequence number, so a failure could not be reported")]
    MissingSequenceNumber(String),
}

/// What happened to one batch, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub applied: usize,
    pub unchanged: usize,
    pub skipped: usize,
}

pub async fn handle(
    projection: &dyn RunProjection,
    event: Event,
) -> Result<(DynamoDbEventResponse, BatchReport), ProjectorError> {
    let mut response = DynamoDbEventResponse::default();
    let mut report = BatchReport::default();
    for record in event.records {
        let Some(run) = decode(&record) else {
            report.skipped += 1;
            continue;
        };
        match projection.apply(&run).await {
            Ok(true) => report.applied += 1,
            Ok(false) => report.unchanged += 1,
            Err(err) => {
                tracing::error!(run_id = %run.run_id, version = run.version, error = %err, "projection failed");
                let sequence = record
                    .change
                    .sequence_number
                    .clone()
                    .ok_or_else(|| ProjectorError::MissingSequenceNumber(record.event_id.clone()))?;
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(sequence);
                response.batch_item_failures.push(failure);
                break;
            }
        }
    }
    tracing::info!(?report, failed = response.batch_item_failures.len(), "projected batch");
    Ok((response, report))
}

/// The run in the record's new image. Removals (TTL) keep their history in Postgres; an image
/// that is not a run is logged and skipped rather than blocking the shard forever.
fn decode(record: &EventRecord) -> Option<Run> {
    if record.event_name == "REMOVE" {
        return None;
    }
    match serde_dynamo::from_item::<_, Run>(record.change.new_image.clone()) {
        Ok(run) => Some(run),
        Err(err) => {
            tracing::error!(event_id = %record.event_id, error = %err, "stream image is not a run; skipped");
            None
        }
    }
}
