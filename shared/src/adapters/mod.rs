//! Adapters: the ports implemented on AWS and Postgres.

mod apigw_connections;
pub mod aws;
mod claude_process;
mod dynamo;
mod dynamo_connections;
mod dynamo_keys;
mod dynamo_runs;
mod dynamo_sessions;
mod git_workspace;
pub mod postgres;
mod s3_objects;
mod sqs_queue;

pub use apigw_connections::ApiGatewayConnections;
pub use claude_process::{ClaudeCli, ClaudeCliConfig, DEFAULT_MAX_FRAME_BYTES};
pub use dynamo_connections::{DynamoConnectionStore, RUN_INDEX};
pub use dynamo_keys::DynamoApiKeyStore;
pub use dynamo_runs::{DynamoRunStore, OWNER_INDEX};
pub use dynamo_sessions::DynamoSessionStore;
pub use git_workspace::{GitWorkspaces, WorkspaceConfig};
pub use postgres::{PgFrameStore, PgRunProjection};
pub use s3_objects::S3ObjectStore;
pub use sqs_queue::SqsRunQueue;
