//! Live frames to WebSocket subscribers, from the executor.
//!
//! Every subscriber has one writer at a time, so it sees frames in `seq` order, each once: the
//! subscribe handler replays the stored frames and records how far it got; the executor then
//! adopts the subscription and continues from there. `publish` only hands frames to
//! per-connection queues, bounded in bytes, and returns: each connection has its own task that
//! posts (backing off when throttled), so a slow or dead subscriber never slows the CLI, the
//! frame log, or other subscribers. A subscriber whose queue overflows catches up from the frame
//! log (frames are stored before they are published) instead of being dropped. When delivery
//! cannot go on (the log is unreadable, the run ended and the subscriber is still far behind),
//! the connection is closed: the client reconnects with its last seq and replays the rest.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use crate::Result;
use crate::domain::{Frame, RunId, RunStatus, StreamMessages};
use crate::ports::{
    ConnectionGateway, ConnectionStore, FrameHistory, FrameSink, PostOutcome, Subscriber, Subscription,
};

/// How often a running run's subscriber list is re-read: a new subscriber gets live frames
/// within this.
const REFRESH: Duration = Duration::from_millis(500);
/// Bytes (and frames) queued per subscriber before it falls back to reading the frame log.
const QUEUE_BYTES: usize = 8 * 1024 * 1024;
const QUEUE_FRAMES: usize = 4096;
/// Heartbeat on an idle connection; API Gateway closes connections idle for 10 minutes.
const HEARTBEAT: Duration = Duration::from_secs(60);
const POST_ATTEMPTS: u32 = 6;
/// Frames read from the log per page when replaying: small, because a frame can be megabytes.
const REPLAY_PAGE: usize = 32;
const LOG_READ_ATTEMPTS: u32 = 3;
/// Attempts at the last look for subscribers when a run ends.
const FINAL_REFRESH_ATTEMPTS: u32 = 3;
/// How long `finish` lets subscribers take the rest of a run; one still behind is disconnected.
const DRAIN: Duration = Duration::from_secs(10);

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
                    // Skipping one message would leave a gap the client cannot see: make it
                    // reconnect and replay instead.
                    tracing::warn!(%connection_id, "could not deliver a message; closing so the client replays");
                    self.gateway.close(connection_id).await;
                    let _ = self.connections.delete(connection_id).await;
                    return false;
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

    /// `replay`, retried a few times while the log cannot be read; after that the connection is
    /// closed (the client reconnects and replays) rather than left with a gap.
    async fn catch_up(&self, connection_id: &str, run_id: RunId, after_seq: u64) -> Option<u64> {
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
}

/// One frame (all its parts) on its way to a subscriber.
struct Outgoing {
    seq: u64,
    bytes: usize,
    messages: Arc<Vec<String>>,
}

/// What a subscriber's task and the fan-out share.
#[derive(Default)]
struct Progress {
    /// The last seq the subscriber has been sent.
    cursor: AtomicU64,
    queued_bytes: AtomicUsize,
    /// Frames were not queued: the task re-reads the log before sending on.
    behind: AtomicBool,
    /// The run's `end`, once it has ended.
    end: OnceLock<String>,
}

struct Follower {
    subscription: Uuid,
    queue: mpsc::Sender<Outgoing>,
    progress: Arc<Progress>,
    task: tokio::task::JoinHandle<()>,
}

/// The subscribers of one run, as this executor serves them.
#[derive(Default)]
struct Followers {
    by_connection: HashMap<String, Follower>,
    /// Subscriptions someone else delivers to (the subscribe handler holds or adopted them).
    declined: HashSet<Uuid>,
    last_seq: u64,
}

/// One run's fan-out: its followers, and the task that keeps looking for new subscribers (so
/// the frame path never waits on DynamoDB).
struct RunFanout {
    followers: Arc<Mutex<Followers>>,
    stop: Arc<tokio::sync::Notify>,
    refresher: tokio::task::JoinHandle<()>,
}

pub struct WebSocketFanout {
    courier: Courier,
    runs: std::sync::Mutex<HashMap<RunId, RunFanout>>,
}

impl WebSocketFanout {
    pub fn new(
        connections: Arc<dyn ConnectionStore>,
        gateway: Arc<dyn ConnectionGateway>,
        history: Arc<dyn FrameHistory>,
    ) -> Self {
        Self { courier: Courier { gateway, connections, history }, runs: std::sync::Mutex::new(HashMap::new()) }
    }

    /// The run's followers, starting its refresher on first use.
    fn followers(&self, run_id: RunId) -> Arc<Mutex<Followers>> {
        let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let run = runs.entry(run_id).or_insert_with(|| {
            let followers = Arc::new(Mutex::new(Followers::default()));
            let stop = Arc::new(tokio::sync::Notify::new());
            let (courier, watched, stopped) = (self.courier.clone(), followers.clone(), stop.clone());
            let refresher = tokio::spawn(async move {
                loop {
                    refresh(&courier, run_id, &watched).await;
                    tokio::select! {
                        () = stopped.notified() => return,
                        () = tokio::time::sleep(REFRESH) => {}
                    }
                }
            });
            RunFanout { followers, stop, refresher }
        });
        run.followers.clone()
    }

    /// Stops serving the run: its refresher finishes the look it is taking (never aborted
    /// between adopting a subscription and starting its delivery) and stops; its followers are
    /// the caller's.
    async fn take(&self, run_id: RunId) -> Arc<Mutex<Followers>> {
        let taken = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&run_id);
        let Some(run) = taken else { return Arc::default() };
        run.stop.notify_one();
        if let Err(err) = run.refresher.await {
            tracing::warn!(%run_id, error = %err, "the subscriber refresher failed");
        }
        run.followers
    }
}

/// Re-reads the run's subscribers: adopts new subscriptions, forgets ended ones. False if the
/// list could not be read or a subscription could not be adopted (a later look retries).
async fn refresh(courier: &Courier, run_id: RunId, followers: &Mutex<Followers>) -> bool {
    let current: Vec<Subscriber> = match courier.connections.subscribers(run_id).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(%run_id, error = %err, "listing subscribers failed; keeping the old list");
            return false;
        }
    };
    let candidates: Vec<Subscriber> = {
        let mut state = followers.lock().await;
        state.by_connection.retain(|id, follower| {
            let keep = !follower.task.is_finished()
                && current.iter().any(|s| &s.connection_id == id && s.subscription.id == follower.subscription);
            if !keep {
                follower.task.abort();
            }
            keep
        });
        current
            .into_iter()
            .filter(|s| {
                let known =
                    state.by_connection.get(&s.connection_id).is_some_and(|f| f.subscription == s.subscription.id);
                !known && !s.subscription.adopted && !state.declined.contains(&s.subscription.id)
            })
            .collect()
    };
    let mut complete = true;
    for Subscriber { connection_id, subscription } in candidates {
        match courier.connections.adopt(&connection_id, subscription.id).await {
            Ok(true) => {
                // Started under the lock: every frame published from here on is queued for it,
                // and every earlier one is already in the log it starts from.
                let mut state = followers.lock().await;
                let follower = follow(courier, run_id, connection_id.clone(), &subscription);
                if let Some(replaced) = state.by_connection.insert(connection_id, follower) {
                    replaced.task.abort();
                }
            }
            Ok(false) => {
                followers.lock().await.declined.insert(subscription.id);
            }
            Err(err) => {
                tracing::warn!(%run_id, %connection_id, error = %err, "adopting a subscriber failed");
                complete = false;
            }
        }
    }
    complete
}

fn follow(courier: &Courier, run_id: RunId, connection_id: String, subscription: &Subscription) -> Follower {
    let (queue, rx) = mpsc::channel(QUEUE_FRAMES);
    let progress = Arc::new(Progress { cursor: AtomicU64::new(subscription.after_seq), ..Default::default() });
    let delivery = Delivery { courier: courier.clone(), run_id, connection_id, progress: progress.clone() };
    let task = tokio::spawn(delivery.run(rx));
    Follower { subscription: subscription.id, queue, progress, task }
}

impl Followers {
    fn enqueue(&mut self, frame: &Frame) {
        let messages = Arc::new(StreamMessages::frame(frame));
        let bytes = messages.iter().map(String::len).sum::<usize>();
        self.by_connection.retain(|_, follower| {
            let progress = &follower.progress;
            if progress.queued_bytes.load(Ordering::Acquire) + bytes > QUEUE_BYTES {
                progress.behind.store(true, Ordering::Release);
                return true;
            }
            match follower.queue.try_send(Outgoing { seq: frame.seq, bytes, messages: messages.clone() }) {
                Ok(()) => {
                    progress.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    progress.behind.store(true, Ordering::Release);
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
        let followers = self.followers(run_id);
        let mut state = followers.lock().await;
        for frame in frames {
            state.last_seq = state.last_seq.max(frame.seq);
            if !state.by_connection.is_empty() {
                state.enqueue(frame);
            }
        }
        Ok(())
    }

    /// Also called for a run that ended without this executor running it (cancelled while
    /// queued, executor lost): whoever subscribed meanwhile still gets the rest and the end.
    async fn finish(&self, run_id: RunId, status: RunStatus) {
        let followers = self.take(run_id).await;
        // The run is saved as ended: anyone subscribing from now on is served by the handler,
        // so this is the last look; it must not miss anyone.
        for attempt in 1..=FINAL_REFRESH_ATTEMPTS {
            if refresh(&self.courier, run_id, &followers).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200) * attempt).await;
        }
        let mut state = followers.lock().await;
        if state.by_connection.is_empty() {
            return;
        }
        let stored = match self.courier.history.last_seq(run_id).await {
            Ok(seq) => seq,
            Err(err) => {
                tracing::warn!(%run_id, error = %err, "reading the last stored seq failed");
                0
            }
        };
        let end = StreamMessages::end(run_id, state.last_seq.max(stored) + 1, status);
        let deadline = tokio::time::Instant::now() + DRAIN;
        let leaving: Vec<(String, Follower)> = state.by_connection.drain().collect();
        drop(state);
        for (_, follower) in &leaving {
            let _ = follower.progress.end.set(end.clone());
        }
        for (connection_id, follower) in leaving {
            drop(follower.queue); // the task sends what is queued, catches up, sends the end
            let abort = follower.task.abort_handle();
            if tokio::time::timeout_at(deadline, follower.task).await.is_err() {
                abort.abort();
                tracing::warn!(%run_id, %connection_id, "subscriber still behind when the run ended; closing");
                self.courier.gateway.close(&connection_id).await;
            }
        }
    }

    /// This executor no longer runs the run (its lease was lost): its subscribers go back, with
    /// how far they got, to whoever runs or ends the run next.
    async fn abandon(&self, run_id: RunId) {
        let followers = self.take(run_id).await;
        let leaving: Vec<(String, Follower)> = followers.lock().await.by_connection.drain().collect();
        for (connection_id, follower) in leaving {
            follower.task.abort();
            let next = Subscription {
                id: Uuid::new_v4(),
                after_seq: follower.progress.cursor.load(Ordering::Acquire),
                adopted: false,
            };
            if let Err(err) = self.courier.connections.release(&connection_id, follower.subscription, &next).await {
                tracing::warn!(%run_id, %connection_id, error = %err, "releasing a subscriber failed; closing");
                self.courier.gateway.close(&connection_id).await;
            }
        }
    }
}

/// One adopted subscriber's delivery: the log after its cursor first, then live frames
/// (skipping any the log already gave it), heartbeating when idle; the end once the run is over.
struct Delivery {
    courier: Courier,
    run_id: RunId,
    connection_id: String,
    progress: Arc<Progress>,
}

impl Delivery {
    /// The last seq sent; shared, so a lease-losing executor can hand it back.
    fn cursor(&self) -> u64 {
        self.progress.cursor.load(Ordering::Acquire)
    }

    async fn run(self, mut queue: mpsc::Receiver<Outgoing>) {
        if !self.catch_up().await {
            return;
        }
        loop {
            let delivered = match tokio::time::timeout(HEARTBEAT, queue.recv()).await {
                Ok(Some(outgoing)) => self.send(outgoing).await,
                // The queue closed: the run ended (or this executor let go of it).
                Ok(None) => {
                    if let Some(end) = self.progress.end.get().cloned()
                        && self.caught_up().await
                    {
                        self.courier.post(&self.connection_id, &end).await;
                    }
                    return;
                }
                Err(_) if self.progress.behind.load(Ordering::Acquire) => self.caught_up().await,
                Err(_) => self.courier.post(&self.connection_id, &StreamMessages::heartbeat()).await,
            };
            if !delivered {
                return;
            }
        }
    }

    async fn send(&self, outgoing: Outgoing) -> bool {
        self.progress.queued_bytes.fetch_sub(outgoing.bytes, Ordering::AcqRel);
        if !self.caught_up().await {
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
        self.advance(outgoing.seq);
        true
    }

    /// Catches up from the log if frames were left out of the queue. False once the
    /// connection is gone.
    async fn caught_up(&self) -> bool {
        !self.progress.behind.swap(false, Ordering::AcqRel) || self.catch_up().await
    }

    async fn catch_up(&self) -> bool {
        match self.courier.catch_up(&self.connection_id, self.run_id, self.cursor()).await {
            Some(next) => {
                self.advance(next);
                true
            }
            None => false,
        }
    }

    fn advance(&self, seq: u64) {
        self.progress.cursor.store(seq, Ordering::Release);
    }
}
