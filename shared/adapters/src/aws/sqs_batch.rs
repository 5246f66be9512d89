//! A standard (not FIFO) queue's batch, each message handled on its own: the ones whose handling
//! failed are reported (`ReportBatchItemFailures`), so SQS retries only those and dead-letters
//! them after the queue's `maxReceiveCount`.

use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::sqs::BatchItemFailure;

/// Runs `handle` on each message body of the batch and reports the ones it failed.
pub async fn each_message<F, Fut>(event: SqsEvent, what: &str, handle: F) -> SqsBatchResponse
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = runner_core::Result<()>>,
{
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        if let Err(err) = handle(record.body.unwrap_or_default()).await {
            tracing::warn!(message_id = %id, error = %err, "{what} not handled; SQS will retry it");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}
