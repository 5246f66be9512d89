//! Replies to queue callers, as SQS messages: the CloudEvent as the body, its type and the
//! caller's correlation id as message attributes (so a receiver can filter without parsing).

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;

use super::describe;
use runner_core::domain::CloudEvent;
use runner_core::ports::ReplyQueue;
use runner_core::{Error, Result};

/// Sends replies to whichever queue a run's route names.
pub struct SqsReplies {
    client: Client,
}

impl SqsReplies {
    /// Replies through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn attribute(value: &str) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| Error::dependency("build a message attribute", e))
}

#[async_trait]
impl ReplyQueue for SqsReplies {
    async fn send(&self, queue_url: &str, event: &CloudEvent, correlation_id: Option<&str>) -> Result<()> {
        let body = serde_json::to_string(event).map_err(|e| Error::dependency("encode reply", e))?;
        let mut send = self
            .client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .message_attributes("ce_type", attribute(&event.kind)?);
        if let Some(correlation_id) = correlation_id {
            send = send.message_attributes("correlation_id", attribute(correlation_id)?);
        }
        if queue_url.ends_with(".fifo") {
            // A FIFO reply queue drops a re-sent reply by its stable id.
            send = send.message_group_id(correlation_id.unwrap_or("replies")).message_deduplication_id(&event.id);
        }
        send.send().await.map_err(|e| Error::dependency("send a reply", describe(&e)))?;
        Ok(())
    }
}
