//! The epics function: the epic state machine's tasks, from the epic tasks queue
//! (`ReportBatchItemFailures` on) → `EpicService::handle_task`. A transient failure is reported,
//! so SQS retries the message (and dead-letters it after a few receives); the state machine's
//! own timeouts bound what a lost message can hold up.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use runner_adapters::Wiring;
use runner_adapters::aws::sqs_batch::each_message;
use runner_core::usecases::EpicService;

/// Builds the service once per cold start: with git, for rollbacks, and with the memory that
/// keeps every approval decision, when the function has a database.
pub async fn build(wiring: &Wiring) -> runner_core::Result<EpicService> {
    let epics = wiring.epic_service(true)?;
    Ok(match wiring.memory_store(1).await? {
        Some(memory) => epics.with_memory(memory),
        None => epics,
    })
}

/// A batch of tasks; each fails or succeeds alone (the queue is not FIFO).
pub async fn handle(epics: &EpicService, event: SqsEvent) -> SqsBatchResponse {
    each_message(event, "epic task", |body| async move { epics.handle_task(&body).await }).await
}
