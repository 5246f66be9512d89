//! Rate-limit buckets in DynamoDB: one item per bucket, written conditionally on its version so
//! every instance of every function shares one level. Items expire (TTL) a day after their last
//! write: by then any bucket is full again, which is what a missing item means.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::describe;
use super::dynamo::applied;
use runner_core::domain::BucketLevel;
use runner_core::ports::{BucketStore, StoredBucket};
use runner_core::{Error, Result};

/// `bucket → tokens, at, version, expires_at_epoch`.
pub struct DynamoBucketStore {
    client: Client,
    table: String,
}

impl DynamoBucketStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

#[async_trait]
impl BucketStore for DynamoBucketStore {
    async fn get(&self, bucket: &str) -> Result<Option<StoredBucket>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("bucket", AttributeValue::S(bucket.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb get rate-limit bucket", describe(&e)))?;
        let Some(item) = out.item else { return Ok(None) };
        let number = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<f64>().ok());
        let at = item.get("at").and_then(|v| v.as_s().ok()).and_then(|s| s.parse::<DateTime<Utc>>().ok());
        Ok(match (number("tokens"), at, number("version")) {
            (Some(tokens), Some(at), Some(version)) => {
                Some(StoredBucket { level: BucketLevel { tokens, at }, version: version as u64 })
            }
            // Unreadable: treat it as full, and overwrite it.
            _ => None,
        })
    }

    async fn put(&self, bucket: &str, level: BucketLevel, expected: Option<u64>) -> Result<bool> {
        let next = expected.map_or(1, |v| v + 1);
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("bucket", AttributeValue::S(bucket.to_owned()))
            .item("tokens", AttributeValue::N(format!("{:.6}", level.tokens.max(0.0))))
            .item("at", AttributeValue::S(level.at.to_rfc3339()))
            .item("version", AttributeValue::N(next.to_string()))
            .item("expires_at_epoch", AttributeValue::N((level.at.timestamp() + 86_400).to_string()));
        put = match expected {
            Some(version) => put
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(version.to_string())),
            None => put
                .condition_expression("attribute_not_exists(#bucket)")
                .expression_attribute_names("#bucket", "bucket"),
        };
        Ok(applied(put.send().await, "dynamodb put rate-limit bucket")?.is_some())
    }
}
