//! Replies to queue callers.

use async_trait::async_trait;

use crate::Result;
use crate::domain::CloudEvent;

/// Sends reply events to callers' queues.
#[async_trait]
pub trait ReplyQueue: Send + Sync {
    /// Sends `event` to the queue at `queue_url`; the correlation id, when there is one, also
    /// travels as a message attribute.
    async fn send(&self, queue_url: &str, event: &CloudEvent, correlation_id: Option<&str>) -> Result<()>;
}
