//! The projector function: DynamoDB Streams records of the runs, sessions and epics tables →
//! Postgres `claude_cli_runs`, `claude_cli_sessions` and `claude_cli_epics`.
//!
//! A run's end is also measured here (`RunsFinished`, `RunsFailed`, durations, cost): every run
//! passes through this table, whether an executor ended it, the janitor, a cancel while queued or
//! a failed enqueue, and the projection applies each version once.
//!
//! Records of one shard arrive in order; the first record that cannot be applied is reported as
//! the batch's failure so Lambda retries from there (ReportBatchItemFailures), and nothing after
//! it is applied out of order. Applying is idempotent, so the retry re-applies safely.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use std::sync::Arc;

use runner_adapters::Wiring;
use runner_core::domain::epic::Epic;
use runner_core::domain::{Run, Session};
use runner_core::ports::{Metrics, NoMetrics, RunProjection};
use runner_core::usecases::run_ended;

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

/// The read model, and where run ends are measured.
pub struct Projector {
    projection: Arc<dyn RunProjection>,
    metrics: Arc<dyn Metrics>,
}

impl Projector {
    /// Projects into `projection`, measuring nothing.
    pub fn new(projection: Arc<dyn RunProjection>) -> Self {
        Self { projection, metrics: Arc::new(NoMetrics) }
    }
}

/// Builds the projection once per cold start.
pub async fn build(wiring: &Wiring) -> runner_core::Result<Projector> {
    Ok(Projector { projection: Arc::new(wiring.projection().await?), metrics: wiring.metrics() })
}

/// Applies a batch of stream records in order; the first that fails is the batch's failure.
pub async fn handle(
    projector: &Projector,
    event: Event,
) -> Result<(DynamoDbEventResponse, BatchReport), ProjectorError> {
    let projection = projector.projection.as_ref();
    let mut response = DynamoDbEventResponse::default();
    let mut report = BatchReport::default();
    for record in event.records {
        let Some(change) = decode(&record) else {
            report.skipped += 1;
            continue;
        };
        let applied = match &change {
            Change::Run(run) => projection.apply(run).await,
            Change::Session(session) => projection.apply_session(session).await,
            Change::SessionRemoved(id) => projection.remove_session(*id).await,
            Change::Epic(epic) => projection.apply_epic(epic).await,
        };
        match applied {
            Ok(true) => {
                report.applied += 1;
                if let Change::Run(run) = &change
                    && run.status.is_terminal()
                    && !was_terminal(&record)
                {
                    projector.metrics.record(run_ended(run));
                }
            }
            Ok(false) => report.unchanged += 1,
            Err(err) => {
                tracing::error!(event_id = %record.event_id, error = %err, "projection failed");
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

enum Change {
    Run(Box<Run>),
    Session(Box<Session>),
    SessionRemoved(uuid::Uuid),
    Epic(Box<Epic>),
}

/// Whether the record's old image was already an ended run (its end was measured then).
fn was_terminal(record: &EventRecord) -> bool {
    serde_dynamo::from_item::<_, Run>(record.change.old_image.clone()).is_ok_and(|old| old.status.is_terminal())
}

/// What the record changed, told apart by its key. Removed runs keep their history in Postgres;
/// removed sessions (deleted, expired) go. An image that is neither is logged and skipped rather
/// than blocking the shard forever.
fn decode(record: &EventRecord) -> Option<Change> {
    let key: serde_json::Value = serde_dynamo::from_item(record.change.keys.clone()).unwrap_or_default();
    let removed = record.event_name == "REMOVE";
    let decoded = if key.get("session_id").is_some() {
        if removed {
            key["session_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .map(Change::SessionRemoved)
                .ok_or("bad session key".to_owned())
        } else {
            match serde_dynamo::from_item::<_, Session>(record.change.new_image.clone()) {
                // An alias (an id the CLI handed back) points at its lineage, whose record the
                // read model already has: projecting it would count its totals twice.
                Ok(session) if session.alias_of.is_some() => return None,
                Ok(session) => Ok(Change::Session(Box::new(session))),
                Err(err) => Err(err.to_string()),
            }
        }
    } else if removed {
        return None;
    } else if key.get("epic_id").is_some() {
        serde_dynamo::from_item::<_, Epic>(record.change.new_image.clone())
            .map(|epic| Change::Epic(Box::new(epic)))
            .map_err(|e| e.to_string())
    } else {
        serde_dynamo::from_item::<_, Run>(record.change.new_image.clone())
            .map(|run| Change::Run(Box::new(run)))
            .map_err(|e| e.to_string())
    };
    match decoded {
        Ok(change) => Some(change),
        Err(err) => {
            tracing::error!(event_id = %record.event_id, error = %err, "stream image is not a run, a session or an epic; skipped");
            None
        }
    }
}
