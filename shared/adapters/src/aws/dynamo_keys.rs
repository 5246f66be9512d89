use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;

use super::describe;
use runner_core::domain::{KeyHash, Owner};
use runner_core::ports::ApiKeyStore;
use runner_core::{Error, Result};

/// API keys by SHA-256 hash: `key_hash → owner, label, created_at, revoked`.
pub struct DynamoApiKeyStore {
    client: Client,
    table: String,
}

impl DynamoApiKeyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

#[async_trait]
impl ApiKeyStore for DynamoApiKeyStore {
    async fn owner_of(&self, key: &KeyHash) -> Result<Option<Owner>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key_hash", AttributeValue::S(key.as_str().to_owned()))
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb get api key", describe(&e)))?;
        let Some(item) = out.item else { return Ok(None) };
        if item.get("revoked").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false) {
            return Ok(None);
        }
        Ok(item.get("owner").and_then(|v| v.as_s().ok()).map(|s| Owner::new(s.clone())))
    }

    async fn register(&self, key: &KeyHash, owner: &Owner, label: &str) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("key_hash", AttributeValue::S(key.as_str().to_owned()))
            .item("owner", AttributeValue::S(owner.as_str().to_owned()))
            .item("label", AttributeValue::S(label.to_owned()))
            .item("created_at", AttributeValue::S(Utc::now().to_rfc3339()))
            .item("revoked", AttributeValue::Bool(false))
            .condition_expression("attribute_not_exists(key_hash)")
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb put api key", describe(&e)))?;
        Ok(())
    }
}
