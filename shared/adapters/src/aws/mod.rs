//! The AWS adapters (DynamoDB, SQS, S3, Step Functions, API Gateway's management API) and their clients, built
//! from one `SdkConfig` per process that honours `AWS_ENDPOINT_URL`, so the same binaries talk
//! to moto or LocalStack locally.

mod apigw_connections;
mod dynamo;
mod dynamo_buckets;
mod dynamo_connections;
mod dynamo_epics;
mod dynamo_keys;
mod dynamo_runs;
mod dynamo_sessions;
pub mod queue_poller;
mod s3_objects;
pub mod secrets;
mod sfn_engine;
pub mod sqs_batch;
mod sqs_queue;
mod sqs_replies;

pub use apigw_connections::ApiGatewayConnections;
pub use dynamo_buckets::DynamoBucketStore;
pub use dynamo_connections::DynamoConnectionStore;
pub use dynamo_epics::DynamoEpicStore;
pub use dynamo_keys::DynamoApiKeyStore;
pub use dynamo_runs::DynamoRunStore;
pub use dynamo_sessions::DynamoSessionStore;
pub use s3_objects::S3ObjectStore;
pub use sfn_engine::StepFunctionsEngine;
pub use sqs_queue::SqsRunQueue;
pub use sqs_replies::SqsReplies;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts()).load().await
}

/// Bounded waits on every AWS call (the SDK sets none by default); retries stay the SDK's
/// standard three attempts with backoff.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// S3 with path-style addressing whenever an endpoint is configured: emulators serve one host,
/// and `force_path_style` is not read from the environment.
pub fn s3(config: &SdkConfig) -> aws_sdk_s3::Client {
    // An emulator's endpoint (set for all services, or for S3 alone as `AWS_ENDPOINT_URL_S3`
    // does) takes bucket names in the path.
    let key = aws_types::service_config::ServiceConfigKey::builder()
        .service_id("S3")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok();
    let s3_endpoint = key.and_then(|key| config.service_config()?.load_config(key));
    let emulated = config.endpoint_url().is_some() || s3_endpoint.is_some();
    let s3_config = aws_sdk_s3::config::Builder::from(config).force_path_style(emulated).build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// Renders an SDK error with its whole source chain (the default Display says only "service error").
pub(crate) fn describe(err: &(impl std::error::Error + 'static)) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string()
}
