//! The executor function: runs-queue messages → `RunExecutor::execute`.
//!
//! The event source mapping must have `ReportBatchItemFailures` on: a message reported here is
//! retried (and after a few receives lands in the DLQ) while the rest of the batch is deleted.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::sqs::BatchItemFailure;
use shared::adapters::{
    ApiGatewayConnections, ClaudeCli, DynamoConnectionStore, DynamoRunStore, DynamoSessionStore, GitWorkspaces,
    PgFrameStore, S3ObjectStore, WorkspaceConfig, aws, postgres,
};
use shared::config::{ExecutorConfig, Settings};
use shared::ports::{FrameSink, ObjectStore, RunMessage};
use shared::usecases::{Delivery, ExecutorPorts, RunExecutor, WebSocketFanout};

/// Builds the executor once per cold start.
pub async fn build(
    sdk: &aws_config::SdkConfig,
    settings: &Settings,
    config: &ExecutorConfig,
) -> shared::Result<RunExecutor> {
    let workflows = settings.workflow_registry()?;
    let pool = postgres::connect(&config.database_url, config.pg_pool_size).await?;
    let objects: Arc<dyn ObjectStore> = Arc::new(S3ObjectStore::new(aws::s3(sdk), &settings.artifacts_bucket));
    let workspaces = GitWorkspaces::new(
        WorkspaceConfig {
            root: config.workspace_root.clone(),
            cache_dir: config.repo_cache_dir.clone(),
            author_name: config.author_name.clone(),
            author_email: config.author_email.clone(),
            dotenv: config.workspace_dotenv.clone(),
        },
        Some(objects.clone()),
    );
    let frames = Arc::new(PgFrameStore::new(pool));
    let mut sinks: Vec<Arc<dyn FrameSink>> = vec![frames.clone()];
    // After the frame store: a frame is stored before any subscriber sees it, so a subscriber
    // that catches up from the store misses nothing.
    if let (Some(table), Some(management_url)) = (&config.connections_table, &config.management_url) {
        sinks.push(Arc::new(WebSocketFanout::new(
            Arc::new(DynamoConnectionStore::new(aws::dynamodb(sdk), table)),
            Arc::new(ApiGatewayConnections::new(sdk, management_url)),
            frames,
        )));
    }
    let ports = ExecutorPorts {
        store: Arc::new(DynamoRunStore::new(aws::dynamodb(sdk), &settings.runs_table, &settings.idempotency_table)),
        workflows: Arc::new(workflows),
        workspaces: Arc::new(workspaces),
        cli: Arc::new(ClaudeCli::new(config.cli.clone())),
        objects,
        sessions: Arc::new(DynamoSessionStore::new(aws::dynamodb(sdk), &settings.sessions_table)),
        sinks,
    };
    Ok(RunExecutor::new(ports, config.run.clone()))
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
                Ok(Delivery::Done) => true,
                Ok(Delivery::Retry) => {
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
