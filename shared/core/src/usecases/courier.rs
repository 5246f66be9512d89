//! Posting to one WebSocket connection: single messages (backing off while throttled), replays
//! from the stored frames, and the stream's `end`. The subscribe handler and the executor's
//! fan-out both send through it.

use std::sync::Arc;
use std::time::Duration;

use crate::Result;
use crate::domain::{RunId, RunStatus, StreamMessages};
use crate::ports::{ConnectionGateway, ConnectionStore, FrameHistory, MetricEvent, MetricKind, Metrics, PostOutcome};

/// How long one message may keep being throttled before the client is let go. A client that
/// reads, however slowly, drains its buffer well within it; one that stopped reading does not.
const THROTTLE_BUDGET: Duration = Duration::from_secs(10);
/// Frames read from the log per page when replaying: small, because a frame can be megabytes.
const REPLAY_PAGE: usize = 32;
const LOG_READ_ATTEMPTS: u32 = 3;

/// Sends to WebSocket connections.
#[derive(Clone)]
pub(crate) struct Courier {
    pub gateway: Arc<dyn ConnectionGateway>,
    pub connections: Arc<dyn ConnectionStore>,
    pub history: Arc<dyn FrameHistory>,
    pub metrics: Arc<dyn Metrics>,
}

/// Stream lag samples of one subscriber (CLI line read → posted), recorded in groups so a busy
/// stream costs one metric record per `LAG_SAMPLES` frames, not one per frame.
pub(crate) struct LagSamples {
    metrics: Arc<dyn Metrics>,
    run_id: RunId,
    samples: std::sync::Mutex<Vec<f64>>,
}

/// Samples per record (CloudWatch's embedded format takes at most 100 values per metric).
const LAG_SAMPLES: usize = 100;

impl LagSamples {
    pub fn new(metrics: Arc<dyn Metrics>, run_id: RunId) -> Self {
        Self { metrics, run_id, samples: std::sync::Mutex::new(Vec::new()) }
    }

    /// One frame posted `lag_ms` after its line was read.
    pub fn add(&self, lag_ms: f64) {
        let mut samples = self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        samples.push(lag_ms.max(0.0));
        if samples.len() >= LAG_SAMPLES {
            let full = std::mem::take(&mut *samples);
            drop(samples);
            self.flush(full);
        }
    }

    fn flush(&self, samples: Vec<f64>) {
        if samples.is_empty() {
            return;
        }
        let event = samples
            .into_iter()
            .fold(MetricEvent::new(), |event, lag| event.with("StreamLag", lag, MetricKind::Millis))
            .of_run(self.run_id, None);
        self.metrics.record(event);
    }
}

impl Drop for LagSamples {
    fn drop(&mut self) {
        let rest = std::mem::take(self.samples.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()));
        self.flush(rest);
    }
}

impl Courier {
    /// Posts one message, backing off while throttled (for at most `THROTTLE_BUDGET`). A
    /// connection that is gone is forgotten. Returns whether the connection is still there to
    /// send to.
    pub async fn post(&self, connection_id: &str, message: &str) -> bool {
        let mut wait = Duration::from_millis(25);
        let give_up = tokio::time::Instant::now() + THROTTLE_BUDGET;
        loop {
            match self.gateway.post(connection_id, message).await {
                PostOutcome::Delivered => return true,
                PostOutcome::Gone => {
                    tracing::info!(%connection_id, "connection gone; removed");
                    let _ = self.connections.delete(connection_id).await;
                    return false;
                }
                PostOutcome::Throttled if tokio::time::Instant::now() + wait < give_up => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                PostOutcome::Throttled | PostOutcome::Failed(_) => {
                    // Skipping one message would leave a gap the client cannot see: make it
                    // reconnect and replay instead.
                    tracing::warn!(%connection_id, "could not deliver a message; closing so the client replays");
                    self.gateway.close(connection_id).await;
                    let _ = self.connections.delete(connection_id).await;
                    return false;
                }
            }
        }
    }

    /// Sends the stored frames after `after_seq`, in order; the last seq sent, or `None` once
    /// the connection is gone.
    pub async fn replay(&self, connection_id: &str, run_id: RunId, after_seq: u64) -> Result<Option<u64>> {
        let mut cursor = after_seq;
        loop {
            let page = self.history.frames_after(run_id, cursor, REPLAY_PAGE).await?;
            for frame in &page {
                for message in StreamMessages::frame(frame) {
                    if !self.post(connection_id, &message).await {
                        return Ok(None);
                    }
                }
                cursor = frame.seq;
            }
            if page.len() < REPLAY_PAGE {
                return Ok(Some(cursor));
            }
        }
    }

    /// `replay`, retried a few times while the log cannot be read; after that the connection is
    /// closed (the client reconnects and replays) rather than left with a gap.
    pub async fn replay_or_close(&self, connection_id: &str, run_id: RunId, after_seq: u64) -> Option<u64> {
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=LOG_READ_ATTEMPTS {
            match self.replay(connection_id, run_id, after_seq).await {
                Ok(next) => return next,
                Err(err) if attempt < LOG_READ_ATTEMPTS => {
                    tracing::warn!(%run_id, %connection_id, error = %err, "reading the frame log failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(err) => {
                    tracing::error!(%run_id, %connection_id, error = %err, "reading the frame log failed; closing");
                }
            }
        }
        self.gateway.close(connection_id).await;
        None
    }

    /// The run's `end`: its seq follows every frame stored and every frame `seen` (what the
    /// sender knows of, stored or not).
    pub async fn end_message(&self, run_id: RunId, seen: u64, status: RunStatus) -> String {
        let stored = match self.history.last_seq(run_id).await {
            Ok(seq) => seq,
            Err(err) => {
                tracing::warn!(%run_id, error = %err, "reading the last stored seq failed");
                0
            }
        };
        StreamMessages::end(run_id, stored.max(seen) + 1, status)
    }
}
