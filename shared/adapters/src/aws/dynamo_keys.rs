use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;

use super::describe;
use runner_core::domain::{KeyHash, LimitOverrides, Owner};
use runner_core::ports::{ApiKeyStore, KeyGrant};
use runner_core::{Error, Result};

/// API keys by SHA-256 hash: `key_hash → owner, label, created_at, revoked`, and optionally the
/// key's own limits (`submit_burst`, `submits_per_minute`, `max_active_runs`, `connect_burst`,
/// `connects_per_minute`) and repositories (`repository_allowlist`, a string set).
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
    async fn grant_of(&self, key: &KeyHash) -> Result<Option<KeyGrant>> {
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
        // A key's own limits are plain numbers on its item, set by an operator (docs/operations.md).
        let number = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u32>().ok());
        let limits = LimitOverrides {
            submit_burst: number("submit_burst"),
            submits_per_minute: number("submits_per_minute"),
            max_active_runs: number("max_active_runs"),
            connect_burst: number("connect_burst"),
            max_connections: number("max_connections"),
            connects_per_minute: number("connects_per_minute"),
        };
        let owner = item.get("owner").and_then(|v| v.as_s().ok()).map(|s| Owner::new(s.clone()));
        // A string set or a list of strings.
        let repository_allowlist = item.get("repository_allowlist").map(|v| match v {
            AttributeValue::Ss(set) => set.clone(),
            AttributeValue::L(list) => list.iter().filter_map(|s| s.as_s().ok().cloned()).collect(),
            _ => Vec::new(),
        });
        Ok(owner.map(|owner| KeyGrant { key: key.clone(), owner, limits, repository_allowlist }))
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
