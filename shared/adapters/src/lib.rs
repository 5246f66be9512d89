//! The adapters: every port of `runner_core` implemented on the outside world — DynamoDB, SQS,
//! S3 and API Gateway (`aws`), Postgres (`postgres`), the `git` binary (`git`), the Claude CLI
//! as a child process (`claude_cli`), the local file system (`files`) and CloudWatch's embedded
//! metric format (`metrics`) — plus the settings
//! read from the environment (`config`) and the one place that wires them together (`wiring`).
//!
//! Adapters hold no domain rules: they translate between a port's types and a service's.

pub mod aws;
mod claude_cli;
pub mod config;
pub mod files;
mod git;
pub mod metrics;
mod model_proxy;
pub mod postgres;
mod processes;
mod run_users;
pub mod telemetry;
pub mod wiring;

pub use aws::{
    ApiGatewayConnections, DynamoApiKeyStore, DynamoBucketStore, DynamoConnectionStore, DynamoEpicStore,
    DynamoRunStore, DynamoSessionStore, S3ObjectStore, SqsReplies, SqsRunQueue, StepFunctionsEngine,
};
pub use claude_cli::{ClaudeCli, ClaudeCliConfig, harden_executor};
pub use git::{GitCredentials, GitWorkspaces, WorkspaceConfig};
pub use model_proxy::ModelProxy;
pub use postgres::{PgFrameStore, PgMemoryStore, PgRunProjection};
pub use run_users::{RunUserRange, RunUsers};
pub use wiring::Wiring;
