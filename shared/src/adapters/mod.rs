//! Adapters: the ports implemented on AWS and Postgres.

pub mod aws;
mod dynamo_keys;
mod dynamo_runs;
pub mod postgres;
mod s3_objects;
mod sqs_queue;

pub use dynamo_keys::DynamoApiKeyStore;
pub use dynamo_runs::{DynamoRunStore, OWNER_INDEX};
pub use postgres::PgRunProjection;
pub use s3_objects::S3ObjectStore;
pub use sqs_queue::SqsRunQueue;
