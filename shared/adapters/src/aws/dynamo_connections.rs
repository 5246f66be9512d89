use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use uuid::Uuid;

use super::describe;
use super::dynamo::{applied, count_up_to, scan_up_to};
use runner_core::domain::{Owner, RunId};
use runner_core::ports::{Connection, ConnectionStore, Subscriber, Subscription};
use runner_core::{Error, Result};

const RUN_INDEX: &str = "subscribers_by_run";
/// `owner → connection_id`, with `expires_at_epoch`: the connections a tenant holds.
const OWNER_INDEX: &str = "connections_by_owner";
/// Pages of a count before it gives up (a cap is never that far).
const MAX_COUNT_PAGES: usize = 20;

/// `connection_id → owner, run_id, subscription, …` with a GSI on `run_id` (all attributes projected) and a TTL (`expires_at_epoch`):
/// API Gateway closes connections after 2 h, so a missed `$disconnect` cleans itself up.
pub struct DynamoConnectionStore {
    client: Client,
    table: String,
}

impl DynamoConnectionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

#[async_trait]
impl ConnectionStore for DynamoConnectionStore {
    async fn put(&self, connection: &Connection) -> Result<()> {
        let mut item: std::collections::HashMap<String, AttributeValue> =
            serde_dynamo::to_item(connection).map_err(|e| Error::dependency("encode connection", e))?;
        item.insert("expires_at_epoch".into(), AttributeValue::N(connection.expires_at.timestamp().to_string()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb put connection", describe(&e)))?;
        Ok(())
    }

    async fn keyed(&self, limit: usize) -> Result<Vec<Connection>> {
        let scan = self.client.scan().table_name(&self.table).filter_expression("attribute_exists(key_hash)");
        scan_up_to(scan, limit, "dynamodb scan connections").await
    }

    async fn get(&self, connection_id: &str) -> Result<Option<Connection>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("connection_id", AttributeValue::S(connection_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb get connection", describe(&e)))?;
        out.item
            .map(|item| serde_dynamo::from_item(item).map_err(|e| Error::dependency("decode connection", e)))
            .transpose()
    }

    async fn count_open(&self, owner: &Owner, cap: usize) -> Result<usize> {
        // A connection API Gateway closed without a `$disconnect` is open until its TTL.
        let now = Utc::now().timestamp().to_string();
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OWNER_INDEX)
            .key_condition_expression("#owner = :owner")
            .filter_expression("expires_at_epoch > :now")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.as_str().to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now));
        count_up_to(query, cap, MAX_COUNT_PAGES, "dynamodb count connections").await
    }

    async fn delete(&self, connection_id: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("connection_id", AttributeValue::S(connection_id.to_owned()))
            .send()
            .await
            .map_err(|e| Error::dependency("dynamodb delete connection", describe(&e)))?;
        Ok(())
    }

    async fn subscribers(&self, run_id: RunId) -> Result<Vec<Subscriber>> {
        let mut found = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(RUN_INDEX)
            .key_condition_expression("run_id = :run")
            .expression_attribute_values(":run", AttributeValue::S(run_id.to_string()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::dependency("dynamodb query connections", describe(&e)))?;
            for item in page.items() {
                let connection: Connection =
                    serde_dynamo::from_item(item.clone()).map_err(|e| Error::dependency("decode connection", e))?;
                if let Some(subscription) = connection.subscription {
                    found.push(Subscriber { connection_id: connection.connection_id, subscription });
                }
            }
        }
        Ok(found)
    }

    async fn subscribe(&self, connection_id: &str, run_id: RunId, subscription: &Subscription) -> Result<bool> {
        let subscription =
            serde_dynamo::to_attribute_value(subscription).map_err(|e| Error::dependency("encode subscription", e))?;
        let recorded = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("connection_id", AttributeValue::S(connection_id.to_owned()))
            .update_expression("SET run_id = :run, subscription = :subscription")
            .condition_expression("attribute_exists(connection_id) AND attribute_not_exists(run_id)")
            .expression_attribute_values(":run", AttributeValue::S(run_id.to_string()))
            .expression_attribute_values(":subscription", subscription)
            .send()
            .await;
        Ok(applied(recorded, "dynamodb subscribe")?.is_some())
    }

    async fn release(&self, connection_id: &str, held: Uuid, next: &Subscription) -> Result<bool> {
        let next = serde_dynamo::to_attribute_value(next).map_err(|e| Error::dependency("encode subscription", e))?;
        let released = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("connection_id", AttributeValue::S(connection_id.to_owned()))
            .update_expression("SET subscription = :next")
            .condition_expression("subscription.id = :held")
            .expression_attribute_values(":held", AttributeValue::S(held.to_string()))
            .expression_attribute_values(":next", next)
            .send()
            .await;
        Ok(applied(released, "dynamodb release subscription")?.is_some())
    }

    async fn adopt(
        &self,
        connection_id: &str,
        subscription: Uuid,
        holder: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let adopted = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("connection_id", AttributeValue::S(connection_id.to_owned()))
            .update_expression(
                "SET subscription.adopted = :yes, subscription.holder = :holder, subscription.held_until = :until",
            )
            // Nobody holds it, or its holder stopped renewing (a hold without an end never lapses).
            .condition_expression(
                "subscription.id = :id AND (subscription.adopted = :no OR subscription.held_until < :now)",
            )
            .expression_attribute_values(":id", AttributeValue::S(subscription.to_string()))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_string()))
            .expression_attribute_values(":until", AttributeValue::N(until.timestamp().to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now.timestamp().to_string()))
            .send()
            .await;
        Ok(applied(adopted, "dynamodb adopt subscription")?.is_some())
    }

    async fn renew(&self, connection_id: &str, subscription: Uuid, holder: Uuid, until: DateTime<Utc>) -> Result<bool> {
        let renewed = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("connection_id", AttributeValue::S(connection_id.to_owned()))
            .update_expression("SET subscription.held_until = :until")
            .condition_expression("subscription.id = :id AND subscription.holder = :holder")
            .expression_attribute_values(":id", AttributeValue::S(subscription.to_string()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_string()))
            .expression_attribute_values(":until", AttributeValue::N(until.timestamp().to_string()))
            .send()
            .await;
        Ok(applied(renewed, "dynamodb renew subscription")?.is_some())
    }
}
