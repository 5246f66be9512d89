//! Live frames to WebSocket subscribers, from the executor.
//!
//! `publish` only hands messages to per-connection bounded queues and returns: each connection
//! has its own task that posts (backing off when throttled), so a slow or dead subscriber never
//! slows the CLI, the frame log, or other subscribers. A subscriber whose queue overflows is told
//! so and dropped from the fan-out; it reconnects with `after_seq` and replays what it missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};

use crate::Result;
use crate::domain::{Frame, RunId, RunStatus, StreamMessages};
use crate::ports::{ConnectionGateway, ConnectionStore, FrameSink, PostOutcome};

/// How often the subscriber list is re-read while frames flow: a new subscriber gets live
/// frames within this.
const REFRESH: Duration = Duration::from_millis(500);
const QUEUE: usize = 2048;
/// Heartbeat on an idle connection; API Gateway closes connections idle for 10 minutes.
const HEARTBEAT: Duration = Duration::from_secs(60);
const POST_ATTEMPTS: u32 = 6;
/// How long `finish` waits for queues to drain before leaving them to their tasks.
const DRAIN: Duration = Duration::from_secs(5);

struct Subscriber {
    queue: mpsc::Sender<Arc<String>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct RunFanout {
    subscribers: HashMap<String, Subscriber>,
    /// Subscribers dropped for lagging: not re-added by a refresh; they replay on reconnect.
    lagging: std::collections::HashSet<String>,
    refreshed: Option<Instant>,
    last_seq: u64,
}

pub struct WebSocketFanout {
    connections: Arc<dyn ConnectionStore>,
    gateway: Arc<dyn ConnectionGateway>,
    runs: Mutex<HashMap<RunId, RunFanout>>,
}

impl WebSocketFanout {
    pub fn new(connections: Arc<dyn ConnectionStore>, gateway: Arc<dyn ConnectionGateway>) -> Self {
        Self { connections, gateway, runs: Mutex::new(HashMap::new()) }
    }

    async fn refresh(&self, run_id: RunId, fanout: &mut RunFanout, force: bool) {
        if !force && fanout.refreshed.is_some_and(|at| at.elapsed() < REFRESH) {
            return;
        }
        fanout.refreshed = Some(Instant::now());
        let current = match self.connections.subscribers(run_id).await {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(%run_id, error = %err, "listing subscribers failed; keeping the old list");
                return;
            }
        };
        fanout.subscribers.retain(|id, sub| {
            let keep = current.contains(id) && !sub.task.is_finished();
            if !keep {
                sub.task.abort();
            }
            keep
        });
        for id in current {
            if !fanout.subscribers.contains_key(&id) && !fanout.lagging.contains(&id) {
                let (queue, rx) = mpsc::channel(QUEUE);
                let task = tokio::spawn(deliver(id.clone(), rx, self.gateway.clone(), self.connections.clone()));
                fanout.subscribers.insert(id, Subscriber { queue, task });
            }
        }
    }

    fn enqueue(run_id: RunId, fanout: &mut RunFanout, message: Arc<String>) {
        fanout.subscribers.retain(|id, sub| match sub.queue.try_send(message.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(%run_id, connection_id = %id, "subscriber too slow; dropped from live fan-out");
                sub.task.abort();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

#[async_trait]
impl FrameSink for WebSocketFanout {
    fn name(&self) -> &'static str {
        "websocket"
    }

    async fn publish(&self, frames: &[Frame]) -> Result<()> {
        let Some(run_id) = frames.first().map(|f| f.run_id) else { return Ok(()) };
        let mut runs = self.runs.lock().await;
        let fanout = runs.entry(run_id).or_default();
        self.refresh(run_id, fanout, false).await;
        let before: Vec<String> = fanout.subscribers.keys().cloned().collect();
        for frame in frames {
            fanout.last_seq = fanout.last_seq.max(frame.seq);
            if fanout.subscribers.is_empty() {
                continue;
            }
            for message in StreamMessages::frame(frame) {
                Self::enqueue(run_id, fanout, Arc::new(message));
            }
        }
        let dropped: Vec<String> = before.into_iter().filter(|id| !fanout.subscribers.contains_key(id)).collect();
        fanout.lagging.extend(dropped.iter().cloned());
        drop(runs);
        for id in dropped {
            let gateway = self.gateway.clone();
            tokio::spawn(async move {
                let notice =
                    StreamMessages::error("lagging", "you fell behind; reconnect with your last seq as after_seq");
                let _ = gateway.post(&id, &notice).await;
            });
        }
        Ok(())
    }

    async fn finish(&self, run_id: RunId, status: RunStatus) {
        let mut fanout = self.runs.lock().await.remove(&run_id).unwrap_or_default();
        self.refresh(run_id, &mut fanout, true).await;
        let end = Arc::new(StreamMessages::end(run_id, fanout.last_seq + 1, status));
        Self::enqueue(run_id, &mut fanout, end);
        let deadline = tokio::time::Instant::now() + DRAIN;
        for (_, subscriber) in fanout.subscribers.drain() {
            drop(subscriber.queue); // the task ends once its queue is empty
            if tokio::time::timeout_at(deadline, subscriber.task).await.is_err() {
                tracing::warn!(%run_id, "a subscriber was still receiving when the run ended");
            }
        }
    }
}

/// Posts one message, backing off while throttled (bounded). A connection that is gone is
/// forgotten. Returns whether the connection is still there to send to.
pub(super) async fn post_with_backoff(
    gateway: &dyn ConnectionGateway,
    connections: &dyn ConnectionStore,
    connection_id: &str,
    message: &str,
) -> bool {
    let mut wait = Duration::from_millis(25);
    for attempt in 1..=POST_ATTEMPTS {
        match gateway.post(connection_id, message).await {
            PostOutcome::Delivered => return true,
            PostOutcome::Gone => {
                tracing::info!(%connection_id, "connection gone; removed");
                let _ = connections.delete(connection_id).await;
                return false;
            }
            PostOutcome::Throttled if attempt < POST_ATTEMPTS => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            PostOutcome::Throttled | PostOutcome::Failed(_) => {
                tracing::warn!(%connection_id, "could not deliver a message; the client can replay it");
                return true;
            }
        }
    }
    true
}

/// One connection's delivery loop: in order, heartbeating when idle.
async fn deliver(
    connection_id: String,
    mut queue: mpsc::Receiver<Arc<String>>,
    gateway: Arc<dyn ConnectionGateway>,
    connections: Arc<dyn ConnectionStore>,
) {
    loop {
        let message = match tokio::time::timeout(HEARTBEAT, queue.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(_) => Arc::new(StreamMessages::heartbeat()),
        };
        if !post_with_backoff(gateway.as_ref(), connections.as_ref(), &connection_id, &message).await {
            return;
        }
    }
}
