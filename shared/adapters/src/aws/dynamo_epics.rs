use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::describe;
use super::dynamo::applied;
use runner_core::domain::epic::{Epic, EpicId};
use runner_core::domain::{Owner, ValidationError};
use runner_core::ports::{EpicStore, Page};
use runner_core::{Error, Result};

/// Epics by id, with a GSI `by_owner` (owner, epic_id) for listings: ids are UUID v7, so the
/// index's sort order is newest first when read backwards.
pub struct DynamoEpicStore {
    client: Client,
    table: String,
}

impl DynamoEpicStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    fn item(epic: &Epic) -> Result<HashMap<String, AttributeValue>> {
        serde_dynamo::to_item(epic).map_err(|e| Error::dependency("encode epic", e))
    }
}

#[async_trait]
impl EpicStore for DynamoEpicStore {
    async fn create(&self, epic: &Epic) -> Result<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(epic)?))
            .condition_expression("attribute_not_exists(epic_id)")
            .send()
            .await;
        applied(result, "dynamodb put epic")?.map(drop).ok_or(Error::Conflict)
    }

    async fn get(&self, epic_id: EpicId) -> Result<Option<Epic>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("epic_id", AttributeValue::S(epic_id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb get epic", describe(&e)))?;
        out.item.map(|i| serde_dynamo::from_item(i).map_err(|e| Error::dependency("decode epic", e))).transpose()
    }

    async fn update(&self, epic: &Epic, expected_version: u64) -> Result<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(epic)?))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(expected_version.to_string()))
            .send()
            .await;
        applied(result, "dynamodb update epic")?.map(drop).ok_or(Error::Conflict)
    }

    async fn list(&self, owner: &Owner, limit: usize, cursor: Option<&str>) -> Result<Page<Epic>> {
        let start = cursor
            .map(|c| {
                let id = URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .and_then(|s| s.parse::<EpicId>().ok())
                    .ok_or(ValidationError::InvalidCursor)?;
                Ok::<_, Error>(HashMap::from([
                    ("epic_id".to_owned(), AttributeValue::S(id.to_string())),
                    ("owner".to_owned(), AttributeValue::S(owner.as_str().to_owned())),
                ]))
            })
            .transpose()?;
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by_owner")
            .key_condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.as_str().to_owned()))
            .scan_index_forward(false)
            .limit(limit as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb list epics", describe(&e)))?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|i| serde_dynamo::from_item(i).map_err(|e| Error::dependency("decode epic", e)))
            .collect::<Result<Vec<Epic>>>()?;
        let next_cursor = out
            .last_evaluated_key
            .and_then(|key| key.get("epic_id").and_then(|v| v.as_s().ok()).cloned())
            .map(|id| URL_SAFE_NO_PAD.encode(id));
        Ok(Page { items, next_cursor })
    }
}
