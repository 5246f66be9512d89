//! Live frames to WebSocket subscribers, from the executor.
//!
//! Every subscriber has one writer at a time, so it sees frames in `seq` order: the subscribe
//! handler replays the stored frames and records how far it got; the executor then adopts the
//! subscription and continues from there. `publish` only hands frames to per-connection bounded
//! queues and returns: each connection has its own task that posts (backing off when throttled),
//! so a slow or dead subscriber never slows the CLI, the frame log, or other subscribers. A
//! subscriber whose queue overflows catches up from the frame log (frames are stored before they
//! are published) instead of being dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use crate::Result;
use crate::domain::{Frame, RunId, RunStatus, StreamMessages};
use crate::ports::{ConnectionGateway, ConnectionStore, FrameHistory, FrameSink, PostOutcome, Subscriber};

/// How often the subscriber list is re-read while frames flow: a new subscriber gets live
/// frames within this.
const REFRESH: Duration = Duration::from_millis(500);
/// Frames queued per subscriber before it falls back to reading the frame log.
const QUEUE: usize = 2048;
/// Heartbeat on an idle connection; API Gateway closes connections idle for 10 minutes.
const HEARTBEAT: Duration = Duration::from_secs(60);
const POST_ATTEMPTS: u32 = 6;
/// Frames read from the log per page when replaying (a frame can be megabytes).
const REPLAY_PAGE: usize = 100;
/// How long `finish` waits for queues to drain before leaving them to their tasks.
const DRAIN: Duration = Duration::from_secs(5);

/// Sends to one WebSocket connection: single messages, and replays from the frame log.
#[derive(Clone)]
pub(super) struct Courier {
    pub gateway: Arc<dyn ConnectionGateway>,
    pub connections: Arc<dyn ConnectionStore>,
    pub history: Arc<dyn FrameHistory>,
}

impl Courier {
    /// Posts one message, backing off while throttled (bounded). A connection that is gone is
    /// forgotten. Returns whether the connection is still there to send to.
    pub async fn post(&self, connection_id: &str, message: &str) -> bool {
        let mut wait = Duration::from_millis(25);
        for attempt in 1..=POST_ATTEMPTS {
            match self.gateway.post(connection_id, message).await {
                PostOutcome::Delivered => return true,
                PostOutcome::Gone => {
                    tracing::info!(%connection_id, "connection gone; removed");
                    let _ = self.connections.delete(connection_id).await;
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
}

/// One frame (all its parts), or the run's end, on its way to a subscriber.
struct Outgoing {
    seq: u64,
    messages: Arc<Vec<String>>,
}

struct Follower {
    subscription: Uuid,
    queue: mpsc::Sender<Outgoing>,
    /// Set when the queue overflowed: the task re-reads the log before sending on.
    behind: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct RunFanout {
    followers: HashMap<String, Follower>,
    /// Subscriptions someone else delivers to (adopted by the subscribe handler).
    declined: HashSet<Uuid>,
    refreshed: Option<Instant>,
    last_seq: u64,
}

pub struct WebSocketFanout {
    courier: Courier,
    runs: Mutex<HashMap<RunId, RunFanout>>,
}

impl WebSocketFanout {
    pub fn new(
        connections: Arc<dyn ConnectionStore>,
        gateway: Arc<dyn ConnectionGateway>,
        history: Arc<dyn FrameHistory>,
    ) -> Self {
        Self { courier: Courier { gateway, connections, history }, runs: Mutex::new(HashMap::new()) }
    }

    /// Re-reads the run's subscribers: adopts new subscriptions, forgets ended ones.
    async fn refresh(&self, run_id: RunId, fanout: &mut RunFanout, force: bool) {
        if !force && fanout.refreshed.is_some_and(|at| at.elapsed() < REFRESH) {
            return;
        }
        fanout.refreshed = Some(Instant::now());
        let current: Vec<Subscriber> = match self.courier.connections.subscribers(run_id).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(%run_id, error = %err, "listing subscribers failed; keeping the old list");
                return;
            }
        };
        fanout.followers.retain(|id, follower| {
            let keep = !follower.task.is_finished()
                && current.iter().any(|s| &s.connection_id == id && s.subscription.id == follower.subscription);
            if !keep {
                follower.task.abort();
            }
            keep
        });
        for Subscriber { connection_id, subscription } in current {
            let known = fanout.followers.get(&connection_id).is_some_and(|f| f.subscription == subscription.id);
            if known || fanout.declined.contains(&subscription.id) {
                continue;
            }
            match self.courier.connections.adopt(&connection_id, subscription.id).await {
                Ok(true) => {
                    let (queue, rx) = mpsc::channel(QUEUE);
                    let behind = Arc::new(AtomicBool::new(false));
                    let follow = follow(
                        self.courier.clone(),
                        run_id,
                        connection_id.clone(),
                        subscription.after_seq,
                        rx,
                        behind.clone(),
                    );
                    let task = tokio::spawn(follow);
                    fanout
                        .followers
                        .insert(connection_id, Follower { subscription: subscription.id, queue, behind, task });
                }
                Ok(false) => {
                    fanout.declined.insert(subscription.id);
                }
                Err(err) => tracing::warn!(%run_id, %connection_id, error = %err, "adopting a subscriber failed"),
            }
        }
    }

    fn enqueue(fanout: &mut RunFanout, seq: u64, messages: Arc<Vec<String>>) {
        fanout.followers.retain(|_, follower| {
            match follower.queue.try_send(Outgoing { seq, messages: messages.clone() }) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    follower.behind.store(true, Ordering::Release);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
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
        for frame in frames {
            fanout.last_seq = fanout.last_seq.max(frame.seq);
            if !fanout.followers.is_empty() {
                Self::enqueue(fanout, frame.seq, Arc::new(StreamMessages::frame(frame)));
            }
        }
        Ok(())
    }

    /// Also called for a run that ended without this executor running it (cancelled while
    /// queued, executor lost): whoever subscribed meanwhile still gets the rest and the end.
    async fn finish(&self, run_id: RunId, status: RunStatus) {
        let mut fanout = self.runs.lock().await.remove(&run_id).unwrap_or_default();
        // The run is saved as ended: anyone subscribing from now on is served by the handler.
        self.refresh(run_id, &mut fanout, true).await;
        if fanout.followers.is_empty() {
            return;
        }
        let stored = self.courier.history.last_seq(run_id).await.unwrap_or_default();
        let end = StreamMessages::end(run_id, fanout.last_seq.max(stored) + 1, status);
        let deadline = tokio::time::Instant::now() + DRAIN;
        for (_, follower) in fanout.followers.drain() {
            let end = Outgoing { seq: u64::MAX, messages: Arc::new(vec![end.clone()]) };
            if tokio::time::timeout_at(deadline, follower.queue.send(end)).await.is_err() {
                tracing::warn!(%run_id, "a subscriber's queue stayed full; it did not get the end");
            }
            drop(follower.queue); // the task ends once its queue is empty
            if tokio::time::timeout_at(deadline, follower.task).await.is_err() {
                tracing::warn!(%run_id, "a subscriber was still receiving when the run ended");
            }
        }
    }
}

/// One adopted subscriber's delivery loop: the log after `after_seq` first, then live frames
/// (skipping any the log already gave it), heartbeating when idle.
async fn follow(
    courier: Courier,
    run_id: RunId,
    connection_id: String,
    after_seq: u64,
    mut queue: mpsc::Receiver<Outgoing>,
    behind: Arc<AtomicBool>,
) {
    let catch_up = async |cursor: u64| match courier.replay(&connection_id, run_id, cursor).await {
        Ok(next) => next,
        Err(err) => {
            // Live frames still flow; what is missing the client can replay on reconnect.
            tracing::warn!(%run_id, %connection_id, error = %err, "reading the frame log failed");
            Some(cursor)
        }
    };
    let Some(mut cursor) = catch_up(after_seq).await else { return };
    loop {
        let outgoing = match tokio::time::timeout(HEARTBEAT, queue.recv()).await {
            Ok(Some(outgoing)) => outgoing,
            Ok(None) => return,
            Err(_) if behind.swap(false, Ordering::AcqRel) => {
                let Some(next) = catch_up(cursor).await else { return };
                cursor = next;
                continue;
            }
            Err(_) => {
                if !courier.post(&connection_id, &StreamMessages::heartbeat()).await {
                    return;
                }
                continue;
            }
        };
        if behind.swap(false, Ordering::AcqRel) {
            let Some(next) = catch_up(cursor).await else { return };
            cursor = next;
        }
        if outgoing.seq <= cursor {
            continue;
        }
        for message in outgoing.messages.iter() {
            if !courier.post(&connection_id, message).await {
                return;
            }
        }
        cursor = outgoing.seq;
    }
}
