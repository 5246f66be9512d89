//! Polls a queue and invokes a function's handler as Lambda's SQS event source mapping would
//! (the local stack's event sources, and the long-runs worker on ECS):
//! batches of one, the message deleted only when the handler did not report it, a reported one
//! left to reappear after its visibility timeout (and redriven to the DLQ by SQS after
//! `maxReceiveCount`).

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, watch};

/// A function's handler for SQS batches.
pub type QueueHandler = Arc<dyn Fn(SqsEvent) -> BoxFuture<'static, SqsBatchResponse> + Send + Sync>;
use tokio::task::JoinSet;

/// How long in-flight invocations (runs) get to finish when the stack stops, before they are
/// aborted (a run's CLI process group is killed with it).
const DRAIN: Duration = Duration::from_secs(10);

/// Polls until `shutdown` turns true, running up to `concurrency` invocations at once; then lets
/// the ones in flight finish (bounded).
pub async fn poll_queue(
    sqs: Client,
    queue_url: String,
    handler: QueueHandler,
    concurrency: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .ok()
        .and_then(|out| out.attributes)
        .and_then(|mut attrs| attrs.remove(&QueueAttributeName::QueueArn));
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut running = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore open"),
            _ = shutdown.changed() => break,
        };
        let received = tokio::select! {
            out = sqs.receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(1)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send() => out,
            _ = shutdown.changed() => break,
        };
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let event = lambda_event(messages, queue_arn.as_deref());
        let (sqs, queue_url, handler) = (sqs.clone(), queue_url.clone(), handler.clone());
        running.spawn(async move {
            let receipts: Vec<(String, String)> = event
                .records
                .iter()
                .map(|m| (m.message_id.clone().unwrap_or_default(), m.receipt_handle.clone().unwrap_or_default()))
                .collect();
            let response = handler(event).await;
            for (id, receipt) in receipts {
                if response.batch_item_failures.iter().any(|f| f.item_identifier == id) {
                    continue;
                }
                if let Err(err) = sqs.delete_message().queue_url(&queue_url).receipt_handle(receipt).send().await {
                    tracing::warn!(message_id = %id, error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "delete failed");
                }
            }
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    if tokio::time::timeout(DRAIN, async { while running.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("aborting invocations still in flight");
        running.shutdown().await;
    }
}

/// The messages in the shape Lambda delivers them.
pub fn lambda_event(messages: Vec<aws_sdk_sqs::types::Message>, queue_arn: Option<&str>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .into_iter()
        .map(|m| {
            let mut out = SqsMessage::default();
            out.message_id = m.message_id;
            out.receipt_handle = m.receipt_handle;
            out.body = m.body;
            out.md5_of_body = m.md5_of_body;
            out.attributes =
                m.attributes.unwrap_or_default().into_iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect();
            out.event_source = Some("aws:sqs".into());
            out.event_source_arn = queue_arn.map(str::to_owned);
            out.aws_region = Some("us-east-1".into());
            out
        })
        .collect();
    event
}
