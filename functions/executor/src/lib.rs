//! The executor function: runs-queue messages → `RunExecutor::execute`.
//!
//! The event source mapping must have `ReportBatchItemFailures` on: a message reported here is
//! retried (and after a few receives lands in the DLQ) while the rest of the batch is deleted.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::sqs::BatchItemFailure;
use runner_adapters::Wiring;
use runner_core::ports::RunMessage;
use runner_core::usecases::{Disposition, RunExecutor};

/// Builds the executor once per cold start.
pub async fn build(wiring: &Wiring) -> runner_core::Result<RunExecutor> {
    wiring.run_executor().await
}

/// The long-running worker (ECS): polls `RUNS_QUEUE_URL` — the long-runs queue in its task
/// definition — and hands each message to the same handler as Lambda's, until SIGTERM. A run
/// still going when the task is stopped loses its lease and is ended `executor_lost`.
pub async fn work(executor: RunExecutor, wiring: &Wiring) -> runner_core::Result<()> {
    use runner_adapters::aws::queue_poller::{QueueHandler, poll_queue};
    let settings = wiring.settings()?;
    let executor = std::sync::Arc::new(executor);
    let handler: QueueHandler = std::sync::Arc::new(move |event| {
        let executor = executor.clone();
        Box::pin(async move { handle(&executor, event).await })
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
            let _ = stop.send(true);
        }
    });
    tracing::info!(queue = %settings.runs_queue_url, "worker polling");
    poll_queue(wiring.sqs(), settings.runs_queue_url, handler, 1, stopped).await;
    Ok(())
}

/// Handles a batch in order. On a FIFO queue, once one message fails every later one is
/// reported too, so nothing in a message group overtakes a message that will be retried.
pub async fn handle(executor: &RunExecutor, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut failed = false;
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        if failed {
            response.batch_item_failures.push(failure(id));
            continue;
        }
        let ok = match serde_json::from_str::<RunMessage>(record.body.as_deref().unwrap_or_default()) {
            Err(err) => {
                // Not ours to drop silently: retried until the redrive moves it to the DLQ.
                tracing::error!(message_id = %id, error = %err, "malformed runs-queue message");
                false
            }
            Ok(message) => match executor.execute(message.run_id).await {
                Ok(Disposition::Done) => true,
                Ok(Disposition::Retry) => {
                    tracing::info!(run_id = %message.run_id, "run held by another executor; retry later");
                    false
                }
                Err(err) => {
                    tracing::error!(run_id = %message.run_id, error = %err, "execution failed; retry later");
                    false
                }
            },
        };
        if !ok {
            failed = true;
            response.batch_item_failures.push(failure(id));
        }
    }
    response
}

fn failure(id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = id;
    failure
}
