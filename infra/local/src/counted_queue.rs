//! The runs queue, counted: every message the stack's functions send, counted where it is sent,
//! so a test can tell "sent once" from "sent twice and dropped by the FIFO queue's
//! deduplication".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use runner_core::Result;
use runner_core::ports::{RunMessage, RunQueue};

/// Counts the sends that reach the inner queue.
pub struct CountedQueue {
    inner: Arc<dyn RunQueue>,
    sent: AtomicU64,
    sent_long: AtomicU64,
}

impl CountedQueue {
    pub fn new(inner: Arc<dyn RunQueue>) -> Self {
        Self { inner, sent: AtomicU64::new(0), sent_long: AtomicU64::new(0) }
    }

    /// Messages the queue accepted so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Of those, the long lane's.
    pub fn sent_long(&self) -> u64 {
        self.sent_long.load(Ordering::Acquire)
    }
}

#[async_trait]
impl RunQueue for CountedQueue {
    async fn enqueue(&self, message: &RunMessage) -> Result<()> {
        self.inner.enqueue(message).await?;
        self.sent.fetch_add(1, Ordering::AcqRel);
        if message.lane == runner_core::domain::Lane::Long {
            self.sent_long.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}
