use async_trait::async_trait;
use aws_sdk_sqs::Client;

use super::describe;
use runner_core::ports::{RunMessage, RunQueue};
use runner_core::{Error, Result};

/// The runs queue. On a FIFO queue the message group is the session lineage, so two runs of one
/// session never overlap, and the run id with its version deduplicates a retried send.
pub struct SqsRunQueue {
    client: Client,
    queue_url: String,
}

impl SqsRunQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self { client, queue_url: queue_url.into() }
    }
}

#[async_trait]
impl RunQueue for SqsRunQueue {
    async fn enqueue(&self, message: &RunMessage) -> Result<()> {
        let body = serde_json::to_string(message).map_err(|e| Error::dependency("encode run message", e))?;
        let mut send = self.client.send_message().queue_url(&self.queue_url).message_body(body);
        if self.queue_url.ends_with(".fifo") {
            send = send.message_group_id(&message.message_group).message_deduplication_id(&message.deduplication_id);
        }
        send.send().await.map_err(|e| Error::QueueUnavailable(describe(&e)))?;
        Ok(())
    }
}
