//! One adopted subscriber: its queue of live frames, and the task that posts them in order —
//! after the stored frames it has not had yet, skipping what the log already gave it,
//! heartbeating while idle, and sending the run's `end` once the run is over.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::super::courier::{Courier, LagSamples};
use super::recent::{Held, RecentFrames};
use crate::domain::{RunId, StreamMessages};
use crate::ports::Subscription;

/// How much a subscriber may have waiting, and how often an idle one hears from us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanoutLimits {
    /// Bytes queued per subscriber before it falls back to reading the frame log.
    pub queue_bytes: usize,
    /// Frames queued per subscriber before the same.
    pub queue_frames: usize,
    /// Heartbeat on an idle connection; API Gateway closes connections idle for 10 minutes.
    pub heartbeat: Duration,
    /// Bytes of a run's recent frames kept in memory for subscribers that catch up, once
    /// persistence has them (frames it has not confirmed yet are kept regardless).
    pub recent_bytes: usize,
    /// How long this executor's hold on a subscriber lasts unless renewed: when it crashes, its
    /// subscribers are taken over this long after its last renewal.
    pub hold: Duration,
}

impl Default for FanoutLimits {
    fn default() -> Self {
        Self {
            queue_bytes: 8 * 1024 * 1024,
            queue_frames: 4096,
            heartbeat: Duration::from_secs(60),
            recent_bytes: 1024 * 1024,
            hold: Duration::from_secs(60),
        }
    }
}

/// One frame (all its parts) on its way to a subscriber.
pub(super) struct Outgoing {
    pub seq: u64,
    /// When the executor read the frame's line (its stream lag is measured from there).
    pub read_at: chrono::DateTime<chrono::Utc>,
    pub bytes: usize,
    pub messages: Arc<Vec<String>>,
}

/// What a subscriber's task and the fan-out share.
#[derive(Default)]
pub(super) struct Progress {
    /// The last seq the subscriber has been sent.
    pub cursor: AtomicU64,
    pub queued_bytes: AtomicUsize,
    /// Frames were not queued: the task re-reads the log before sending on.
    pub behind: AtomicBool,
    /// The run's `end`, once it has ended.
    pub end: OnceLock<String>,
}

/// A subscriber this executor delivers to.
pub(super) struct Follower {
    pub subscription: Uuid,
    /// This executor's hold on it.
    pub holder: Uuid,
    pub queue: mpsc::Sender<Outgoing>,
    pub progress: Arc<Progress>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts delivering to an adopted subscription, from its cursor.
pub(super) fn follow(
    courier: &Courier,
    limits: FanoutLimits,
    recent: Arc<std::sync::Mutex<RecentFrames>>,
    run_id: RunId,
    connection_id: String,
    subscription: &Subscription,
    holder: Uuid,
) -> Follower {
    let (queue, rx) = mpsc::channel(limits.queue_frames.max(1));
    let progress = Arc::new(Progress { cursor: AtomicU64::new(subscription.after_seq), ..Default::default() });
    let delivery = SubscriberTask {
        lag: LagSamples::new(courier.metrics.clone(), run_id),
        courier: courier.clone(),
        heartbeat: limits.heartbeat,
        recent,
        run_id,
        connection_id,
        progress: progress.clone(),
    };
    let task = tokio::spawn(delivery.run(rx));
    Follower { subscription: subscription.id, holder, queue, progress, task }
}

/// One adopted subscriber's delivery: the log after its cursor first, then live frames
/// (skipping any the log already gave it), heartbeating when idle; the end once the run is over.
struct SubscriberTask {
    courier: Courier,
    lag: LagSamples,
    heartbeat: Duration,
    recent: Arc<std::sync::Mutex<RecentFrames>>,
    run_id: RunId,
    connection_id: String,
    progress: Arc<Progress>,
}

impl SubscriberTask {
    /// The last seq sent; shared, so a lease-losing executor can hand it back.
    fn cursor(&self) -> u64 {
        self.progress.cursor.load(Ordering::Acquire)
    }

    async fn run(self, mut queue: mpsc::Receiver<Outgoing>) {
        let _active = ActiveSubscriber::new(&self.courier);
        if !self.replay_missed().await {
            return;
        }
        loop {
            let delivered = match tokio::time::timeout(self.heartbeat, queue.recv()).await {
                Ok(Some(outgoing)) => self.send(outgoing).await,
                // The queue closed: the run ended (or this executor let go of it).
                Ok(None) => {
                    if let Some(end) = self.progress.end.get().cloned()
                        && self.replay_if_behind().await
                    {
                        self.courier.post(&self.connection_id, &end).await;
                    }
                    return;
                }
                Err(_) if self.progress.behind.load(Ordering::Acquire) => self.replay_if_behind().await,
                Err(_) => self.courier.post(&self.connection_id, &StreamMessages::heartbeat()).await,
            };
            if !delivered {
                return;
            }
        }
    }

    async fn send(&self, outgoing: Outgoing) -> bool {
        self.progress.queued_bytes.fetch_sub(outgoing.bytes, Ordering::AcqRel);
        if !self.replay_if_behind().await {
            return false;
        }
        if outgoing.seq <= self.cursor() {
            return true;
        }
        for message in outgoing.messages.iter() {
            if !self.courier.post(&self.connection_id, message).await {
                return false;
            }
        }
        let lag = chrono::Utc::now() - outgoing.read_at;
        self.lag.add(lag.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
        self.advance(outgoing.seq);
        true
    }

    /// Catches up from the log if frames were left out of the queue. False once the
    /// connection is gone.
    async fn replay_if_behind(&self) -> bool {
        !self.progress.behind.swap(false, Ordering::AcqRel) || self.replay_missed().await
    }

    /// Sends every frame after the cursor: from the run's recent frames in memory, after what
    /// only the store still has. False once the connection is gone.
    async fn replay_missed(&self) -> bool {
        loop {
            let cursor = self.cursor();
            let held = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).after(cursor);
            match held {
                Held::All(frames) => {
                    for frame in frames {
                        for message in frame.messages.iter() {
                            if !self.courier.post(&self.connection_id, message).await {
                                return false;
                            }
                        }
                        self.advance(frame.seq);
                    }
                    return true;
                }
                Held::Unknown => {
                    return match self.courier.replay_or_close(&self.connection_id, self.run_id, cursor).await {
                        Some(next) => {
                            self.advance(next);
                            true
                        }
                        None => false,
                    };
                }
                Held::Older => match self.courier.replay_or_close(&self.connection_id, self.run_id, cursor).await {
                    None => return false,
                    Some(next) if next > cursor => self.advance(next),
                    Some(_) => {
                        // Neither memory nor the store has the next frame (a batch the store never
                        // took): a gap the client cannot see; it reconnects and replays instead.
                        tracing::warn!(run_id = %self.run_id, connection_id = %self.connection_id, cursor, "frames missing; closing");
                        self.courier.gateway.close(&self.connection_id).await;
                        return false;
                    }
                },
            }
        }
    }

    fn advance(&self, seq: u64) {
        self.progress.cursor.store(seq, Ordering::Release);
    }
}

/// Counts a subscriber as active while its delivery runs (the `ActiveSubscribers` gauge of this
/// executor).
struct ActiveSubscriber {
    courier: Courier,
}

static ACTIVE_SUBSCRIBERS: AtomicU64 = AtomicU64::new(0);

impl ActiveSubscriber {
    fn new(courier: &Courier) -> Self {
        let now = ACTIVE_SUBSCRIBERS.fetch_add(1, Ordering::AcqRel) + 1;
        Self::report(courier, now);
        Self { courier: courier.clone() }
    }

    fn report(courier: &Courier, active: u64) {
        courier.metrics.record(crate::ports::MetricEvent::new().with(
            "ActiveSubscribers",
            active as f64,
            crate::ports::MetricKind::Gauge,
        ));
    }
}

impl Drop for ActiveSubscriber {
    fn drop(&mut self) {
        let now = ACTIVE_SUBSCRIBERS.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        Self::report(&self.courier, now);
    }
}
