use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use super::describe;
use super::dynamo::{applied, scan_up_to};
use runner_core::domain::{Owner, Session, ValidationError};
use runner_core::ports::{Page, SessionStore};
use runner_core::{Error, Result};

/// Sessions by id, a GSI `by_owner` (owner, created_at) for listings, and a TTL on `expires_at_epoch`
/// as the backstop to the janitor.
pub struct DynamoSessionStore {
    client: Client,
    table: String,
}

impl DynamoSessionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn get_record(&self, session_id: Uuid) -> Result<Option<Session>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("session_id", AttributeValue::S(session_id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb get session", describe(&e)))?;
        out.item.map(|i| serde_dynamo::from_item(i).map_err(|e| Error::dependency("decode session", e))).transpose()
    }

    async fn update_record(&self, session: &Session, expected_version: u64) -> Result<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(session)?))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(expected_version.to_string()))
            .send()
            .await;
        applied(result, "dynamodb update session")?.map(drop).ok_or(Error::Conflict)
    }

    fn item(session: &Session) -> Result<HashMap<String, AttributeValue>> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(session).map_err(|e| Error::dependency("encode session", e))?;
        item.insert("expires_at_epoch".into(), AttributeValue::N(session.expires_at.timestamp().to_string()));
        Ok(item)
    }
}

#[async_trait]
impl SessionStore for DynamoSessionStore {
    async fn create(&self, session: &Session) -> Result<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(session)?))
            .condition_expression("attribute_not_exists(session_id)")
            .send()
            .await;
        Ok(applied(result, "dynamodb put session")?.is_some())
    }

    async fn get(&self, session_id: Uuid) -> Result<Option<Session>> {
        match self.get_record(session_id).await? {
            // One hop: an alias always points at a lineage record.
            Some(Session { alias_of: Some(lineage), .. }) => self.get_record(lineage).await,
            other => Ok(other),
        }
    }

    async fn update(&self, session: &Session, expected_version: u64) -> Result<()> {
        self.update_record(session, expected_version).await
    }

    async fn delete(&self, session_id: Uuid) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("session_id", AttributeValue::S(session_id.to_string()))
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb delete session", describe(&e)))?;
        Ok(())
    }

    async fn expired(&self, now: chrono::DateTime<chrono::Utc>, limit: usize) -> Result<Vec<Session>> {
        let scan = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("expires_at_epoch < :now")
            .expression_attribute_values(":now", AttributeValue::N(now.timestamp().to_string()));
        scan_up_to(scan, limit, "dynamodb scan sessions").await
    }

    async fn list(&self, owner: &Owner, limit: usize, cursor: Option<&str>) -> Result<Page<Session>> {
        let start = match cursor {
            None => None,
            Some(c) => {
                let key: HashMap<String, String> = URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    // Only a key this listing issued: the caller's own, in the index's shape (a
                    // forged one would reach DynamoDB and fail there, as a 503).
                    .filter(|key: &HashMap<String, String>| {
                        key.len() == 3
                            && key.get("owner").is_some_and(|o| o == owner.as_str())
                            && key.get("session_id").is_some_and(|id| id.parse::<uuid::Uuid>().is_ok())
                            && key.get("created_at").is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok())
                    })
                    .ok_or(ValidationError::InvalidCursor)?;
                Some(key.into_iter().map(|(k, v)| (k, AttributeValue::S(v))).collect::<HashMap<_, _>>())
            }
        };
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
            .map_err(|e| Error::dependency("dynamodb list sessions", describe(&e)))?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|i| serde_dynamo::from_item(i).map_err(|e| Error::dependency("decode session", e)))
            .collect::<Result<Vec<Session>>>()?;
        let next_cursor = out.last_evaluated_key.map(|key| {
            let plain: HashMap<String, String> =
                key.into_iter().filter_map(|(k, v)| v.as_s().ok().map(|s| (k, s.clone()))).collect();
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&plain).unwrap_or_default())
        });
        Ok(Page { items, next_cursor })
    }
}
