//! The run store on DynamoDB: the runs table (GSI `by_owner`) and the idempotency table.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::describe;
use super::dynamo::{applied, count_up_to, scan_up_to};
use runner_core::domain::{Owner, Run, RunId, RunStatus, ValidationError};
use runner_core::ports::{Heartbeat, IdempotencyRecord, Page, RunFilter, RunStore};
use runner_core::{Error, Result};

const OWNER_INDEX: &str = "by_owner";
/// A sparse index of the runs in flight: only their items carry `active_owner`.
const ACTIVE_INDEX: &str = "by_active_owner";
/// Upper bound on DynamoDB pages read to fill one filtered listing page.
const MAX_PAGES_PER_LISTING: usize = 10;

pub struct DynamoRunStore {
    client: Client,
    runs_table: String,
    idempotency_table: String,
}

impl DynamoRunStore {
    pub fn new(client: Client, runs_table: impl Into<String>, idempotency_table: impl Into<String>) -> Self {
        Self { client, runs_table: runs_table.into(), idempotency_table: idempotency_table.into() }
    }

    fn idempotency_item(record: &IdempotencyRecord) -> Result<HashMap<String, AttributeValue>> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(record).map_err(|e| Error::dependency("encode idempotency record", e))?;
        item.insert("idempotency_id".into(), AttributeValue::S(idempotency_id(&record.owner, &record.key)));
        // TTL attribute: DynamoDB expires items by epoch seconds.
        item.insert("expires_at_epoch".into(), AttributeValue::N(record.expires_at.timestamp().to_string()));
        Ok(item)
    }

    async fn read_idempotency(&self, owner: &Owner, key: &str) -> Result<Option<IdempotencyRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.idempotency_table)
            .key("idempotency_id", AttributeValue::S(idempotency_id(owner, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb get idempotency", describe(&e)))?;
        out.item
            .map(|item| serde_dynamo::from_item(item).map_err(|e| Error::dependency("decode idempotency record", e)))
            .transpose()
    }
}

fn idempotency_id(owner: &Owner, key: &str) -> String {
    format!("{}#{}", owner.as_str(), key)
}

fn run_item(run: &Run) -> Result<HashMap<String, AttributeValue>> {
    let mut item: HashMap<String, AttributeValue> =
        serde_dynamo::to_item(run).map_err(|e| Error::dependency("encode run", e))?;
    // Every write replaces the item, so an ended run drops out of the index by itself.
    if !run.status.is_terminal() {
        item.insert("active_owner".into(), AttributeValue::S(run.owner.as_str().to_owned()));
    }
    Ok(item)
}

fn decode_run(item: HashMap<String, AttributeValue>) -> Result<Run> {
    serde_dynamo::from_item(item).map_err(|e| Error::dependency("decode run", e))
}

#[async_trait]
impl RunStore for DynamoRunStore {
    async fn claim_idempotency_key(&self, record: &IdempotencyRecord) -> Result<Option<IdempotencyRecord>> {
        // An expired record that TTL has not swept yet counts as absent.
        let result = self
            .client
            .put_item()
            .table_name(&self.idempotency_table)
            .set_item(Some(Self::idempotency_item(record)?))
            .condition_expression("attribute_not_exists(idempotency_id) OR expires_at_epoch < :now")
            .expression_attribute_values(":now", AttributeValue::N(Utc::now().timestamp().to_string()))
            .send()
            .await;
        if applied(result, "dynamodb put idempotency key")?.is_some() {
            return Ok(None);
        }
        let earlier = self.read_idempotency(&record.owner, &record.key).await?;
        Ok(Some(earlier.ok_or_else(|| Error::dependency("idempotency", "record vanished while being read"))?))
    }

    async fn release_idempotency_key(&self, owner: &Owner, key: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.idempotency_table)
            .key("idempotency_id", AttributeValue::S(idempotency_id(owner, key)))
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb delete idempotency key", describe(&e)))?;
        Ok(())
    }

    async fn create(&self, run: &Run) -> Result<bool> {
        let result = self
            .client
            .put_item()
            .table_name(&self.runs_table)
            .set_item(Some(run_item(run)?))
            .condition_expression("attribute_not_exists(run_id)")
            .send()
            .await;
        Ok(applied(result, "dynamodb put run")?.is_some())
    }

    async fn get(&self, run_id: RunId) -> Result<Option<Run>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.runs_table)
            .key("run_id", AttributeValue::S(run_id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb get run", describe(&e)))?;
        out.item.map(decode_run).transpose()
    }

    async fn update(&self, run: &Run, expected_version: u64) -> Result<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.runs_table)
            .set_item(Some(run_item(run)?))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(expected_version.to_string()))
            .send()
            .await;
        applied(result, "dynamodb update run")?.map(drop).ok_or(Error::Conflict)
    }

    async fn heartbeat(&self, run_id: RunId, executor: &str, lease_until: DateTime<Utc>) -> Result<Option<Heartbeat>> {
        // serde_dynamo writes timestamps as RFC 3339 strings; keep the same format.
        let until = serde_json::to_value(lease_until).map_err(|e| Error::dependency("encode lease", e))?;
        let result = self
            .client
            .update_item()
            .table_name(&self.runs_table)
            .key("run_id", AttributeValue::S(run_id.to_string()))
            .update_expression("SET lease_expires_at = :until")
            .condition_expression("lease_owner = :me AND #status IN (:preparing, :running)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":until", AttributeValue::S(until.as_str().unwrap_or_default().to_owned()))
            .expression_attribute_values(":me", AttributeValue::S(executor.to_owned()))
            .expression_attribute_values(":preparing", AttributeValue::S(RunStatus::Preparing.as_str().to_owned()))
            .expression_attribute_values(":running", AttributeValue::S(RunStatus::Running.as_str().to_owned()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        Ok(applied(result, "dynamodb heartbeat")?.map(|out| {
            let cancel_requested = out
                .attributes
                .as_ref()
                .and_then(|a| a.get("cancel_requested"))
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false);
            Heartbeat { cancel_requested }
        }))
    }

    async fn stale_leases(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Run>> {
        let now = serde_json::to_value(now).map_err(|e| Error::dependency("encode time", e))?;
        let scan = self
            .client
            .scan()
            .table_name(&self.runs_table)
            .filter_expression("#status IN (:preparing, :running) AND lease_expires_at < :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":preparing", AttributeValue::S(RunStatus::Preparing.as_str().to_owned()))
            .expression_attribute_values(":running", AttributeValue::S(RunStatus::Running.as_str().to_owned()))
            .expression_attribute_values(":now", AttributeValue::S(now.as_str().unwrap_or_default().to_owned()));
        scan_up_to(scan, limit, "dynamodb scan runs").await
    }

    async fn queued_since(&self, before: DateTime<Utc>, limit: usize) -> Result<Vec<Run>> {
        let before = serde_json::to_value(before).map_err(|e| Error::dependency("encode time", e))?;
        let scan = self
            .client
            .scan()
            .table_name(&self.runs_table)
            .filter_expression("#status = :queued AND updated_at < :before")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":queued", AttributeValue::S(RunStatus::Queued.as_str().to_owned()))
            .expression_attribute_values(":before", AttributeValue::S(before.as_str().unwrap_or_default().to_owned()));
        scan_up_to(scan, limit, "dynamodb scan queued runs").await
    }

    async fn count_active(&self, owner: &Owner, up_to: usize) -> Result<usize> {
        let query = self
            .client
            .query()
            .table_name(&self.runs_table)
            .index_name(ACTIVE_INDEX)
            .key_condition_expression("active_owner = :owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.as_str().to_owned()));
        count_up_to(query, up_to, MAX_PAGES_PER_LISTING, "dynamodb count active runs").await
    }

    async fn list(&self, owner: &Owner, filter: &RunFilter, limit: usize, cursor: Option<&str>) -> Result<Page<Run>> {
        let mut start_key = cursor.map(|c| decode_cursor(owner, c)).transpose()?;
        let mut filters = Vec::new();
        let mut query = self
            .client
            .query()
            .table_name(&self.runs_table)
            .index_name(OWNER_INDEX)
            .key_condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.as_str().to_owned()))
            .scan_index_forward(false)
            .limit(limit as i32);
        if let Some(status) = filter.status {
            filters.push("#status = :status");
            query = query
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", AttributeValue::S(status.as_str().to_owned()));
        }
        if let Some(workflow) = &filter.workflow {
            filters.push("#workflow = :workflow");
            query = query
                .expression_attribute_names("#workflow", "workflow")
                .expression_attribute_values(":workflow", AttributeValue::S(workflow.clone()));
        }
        if !filters.is_empty() {
            query = query.filter_expression(filters.join(" AND "));
        }

        let mut items = Vec::with_capacity(limit);
        for _ in 0..MAX_PAGES_PER_LISTING {
            let out = query
                .clone()
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| Error::dependency("dynamodb list runs", describe(&e)))?;
            for item in out.items.unwrap_or_default() {
                let run = decode_run(item)?;
                items.push(run);
                if items.len() == limit {
                    let last = items.last().expect("just pushed").run_id;
                    // A full page may still be the last one; the next call then returns nothing.
                    return Ok(Page { items, next_cursor: Some(encode_cursor(last)) });
                }
            }
            match out.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => return Ok(Page { items, next_cursor: None }),
            }
        }
        // A sparse filter: hand back what was found and where to continue.
        let next_cursor = start_key
            .and_then(|key| key.get("run_id").and_then(|v| v.as_s().ok()).and_then(|s| s.parse::<RunId>().ok()))
            .map(encode_cursor);
        Ok(Page { items, next_cursor })
    }
}

fn encode_cursor(last: RunId) -> String {
    URL_SAFE_NO_PAD.encode(last.to_string())
}

fn decode_cursor(owner: &Owner, cursor: &str) -> Result<HashMap<String, AttributeValue>> {
    let run_id = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|s| s.parse::<RunId>().ok())
        .ok_or(ValidationError::InvalidCursor)?;
    Ok(HashMap::from([
        ("run_id".to_owned(), AttributeValue::S(run_id.to_string())),
        ("owner".to_owned(), AttributeValue::S(owner.as_str().to_owned())),
    ]))
}
