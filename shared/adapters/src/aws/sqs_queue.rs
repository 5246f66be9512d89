use async_trait::async_trait;
use aws_sdk_sqs::Client;

use super::describe;
use aws_sdk_sqs::types::MessageAttributeValue;
use runner_core::domain::{Lane, TraceContext};
use runner_core::ports::{RunMessage, RunQueue};
use runner_core::{Error, Result};

/// The runs queues: one per lane (Lambda executors, long-running workers). On a FIFO queue the
/// message group is the session lineage, so two runs of one session never overlap, and the run
/// id with its version deduplicates a retried send.
pub struct SqsRunQueue {
    client: Client,
    queue_url: String,
    long_runs_queue_url: Option<String>,
}

impl SqsRunQueue {
    /// Runs go to `queue_url`, and those of the long lane to `long_runs_queue_url`.
    pub fn new(client: Client, queue_url: impl Into<String>, long_runs_queue_url: Option<String>) -> Self {
        Self { client, queue_url: queue_url.into(), long_runs_queue_url }
    }
}

#[async_trait]
impl RunQueue for SqsRunQueue {
    async fn enqueue(&self, message: &RunMessage) -> Result<()> {
        let body = serde_json::to_string(message).map_err(|e| Error::dependency("encode run message", e))?;
        let queue_url = match (message.lane, &self.long_runs_queue_url) {
            (Lane::Long, Some(long)) => long,
            (Lane::Long, None) => {
                return Err(Error::QueueUnavailable(
                    "this run needs the long-runs queue, and none is configured".into(),
                ));
            }
            (Lane::Lambda, _) => &self.queue_url,
        };
        let mut send = self.client.send_message().queue_url(queue_url).message_body(body);
        if queue_url.ends_with(".fifo") {
            send = send.message_group_id(&message.message_group).message_deduplication_id(&message.deduplication_id);
        }
        // The run's trace rides along as a message attribute, as W3C trace context says for queues.
        if let Some(trace_id) = &message.trace_id {
            let traceparent = TraceContext::in_trace(trace_id.clone()).traceparent();
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(traceparent)
                .build()
                .map_err(|e| Error::dependency("sqs message attribute", e))?;
            send = send.message_attributes("traceparent", attribute);
        }
        send.send().await.map_err(|e| Error::QueueUnavailable(describe(&e)))?;
        Ok(())
    }
}
