//! The janitor function: an EventBridge schedule → `Janitor::sweep`.

use std::sync::Arc;

use shared::adapters::{DynamoRunStore, DynamoSessionStore, S3ObjectStore, SqsRunQueue, aws};
use shared::config::Settings;
use shared::usecases::{Janitor, JanitorReport};

/// Items of each kind handled per invocation: a backlog drains over several runs of the schedule.
pub const BATCH: usize = 100;

pub fn build(sdk: &aws_config::SdkConfig, settings: &Settings) -> Janitor {
    let dynamodb = aws::dynamodb(sdk);
    Janitor::new(
        Arc::new(DynamoRunStore::new(dynamodb.clone(), &settings.runs_table, &settings.idempotency_table)),
        Arc::new(DynamoSessionStore::new(dynamodb, &settings.sessions_table)),
        Arc::new(S3ObjectStore::new(aws::s3(sdk), &settings.artifacts_bucket)),
        Arc::new(SqsRunQueue::new(aws::sqs(sdk), &settings.runs_queue_url)),
        BATCH,
    )
}

pub async fn handle(janitor: &Janitor) -> shared::Result<JanitorReport> {
    janitor.sweep(chrono::Utc::now()).await
}
