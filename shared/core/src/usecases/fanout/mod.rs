//! Live frames to WebSocket subscribers, from the executor.
//!
//! Every subscriber has one writer at a time, so it sees frames in `seq` order, each once: the
//! subscribe handler replays the stored frames and records how far it got; the executor then
//! adopts the subscription and continues from there. This sink is live: it gets each frame as
//! soon as the CLI printed it, before persistence, and `publish` only hands it to per-connection
//! queues, bounded in bytes, and returns: each connection has its own task that posts (backing
//! off when throttled), so a slow or dead subscriber never slows the CLI, persistence, or other
//! subscribers. A subscriber that joins late or whose queue overflows catches up from the run's
//! recent frames in memory, and from the store for what is older (`recent.rs`), instead of being
//! dropped. When delivery cannot go on (the store is unreadable, the run ended and the subscriber
//! is still far behind), the connection is closed: the client reconnects with its last seq and
//! replays the rest.

mod recent;
mod subscriber;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use self::recent::{Recent, RecentFrames};
pub use self::subscriber::FanoutLimits;
use self::subscriber::{Follower, Outgoing, follow};
use super::courier::Courier;
use crate::Result;
use crate::domain::{Frame, RunId, RunStatus, StreamMessages};
use crate::ports::{ConnectionGateway, ConnectionStore, FrameHistory, FrameSink, Metrics, NoMetrics, Subscriber};

/// How often a running run's subscriber list is re-read: a new subscriber gets live frames
/// within this.
const REFRESH: Duration = Duration::from_millis(500);
/// Attempts at the last look for subscribers when a run ends.
const FINAL_REFRESH_ATTEMPTS: u32 = 3;
/// How long `finish` lets subscribers take the rest of a run; one still behind is disconnected.
const DRAIN: Duration = Duration::from_secs(10);

/// The subscribers of one run, as this executor serves them.
#[derive(Default)]
struct Followers {
    by_connection: HashMap<String, Follower>,
    /// Subscriptions someone else delivers to (the subscribe handler holds or adopted them).
    declined: HashSet<Uuid>,
    /// When this executor last renewed its holds on the run's subscribers.
    renewed_at: Option<tokio::time::Instant>,
    last_seq: u64,
    /// Updated under the same lock as the queues, so a frame is either in a new follower's queue
    /// or in what it catches up from.
    recent: Arc<std::sync::Mutex<RecentFrames>>,
}

/// One run's fan-out: its followers, and the task that keeps looking for new subscribers (so
/// the frame path never waits on DynamoDB).
struct RunFanout {
    followers: Arc<Mutex<Followers>>,
    stop: Arc<tokio::sync::Notify>,
    refresher: tokio::task::JoinHandle<()>,
}

/// The executor's frame sink for WebSocket subscribers.
pub struct WebSocketFanout {
    courier: Courier,
    limits: FanoutLimits,
    runs: std::sync::Mutex<HashMap<RunId, RunFanout>>,
}

impl WebSocketFanout {
    /// A fan-out that finds subscribers in `connections`, posts through `gateway` and replays
    /// from `history`.
    pub fn new(
        connections: Arc<dyn ConnectionStore>,
        gateway: Arc<dyn ConnectionGateway>,
        history: Arc<dyn FrameHistory>,
        limits: FanoutLimits,
    ) -> Self {
        let courier = Courier { gateway, connections, history, metrics: Arc::new(NoMetrics) };
        Self { courier, limits, runs: std::sync::Mutex::new(HashMap::new()) }
    }

    /// The same fan-out, measuring stream lag and subscribers into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.courier.metrics = metrics;
        self
    }

    /// The run's followers, starting its refresher on first use.
    fn followers(&self, run_id: RunId) -> Arc<Mutex<Followers>> {
        let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let run = runs.entry(run_id).or_insert_with(|| {
            let recent = Arc::new(std::sync::Mutex::new(RecentFrames::new(self.limits.recent_bytes)));
            let followers = Arc::new(Mutex::new(Followers { recent, ..Followers::default() }));
            let stop = Arc::new(tokio::sync::Notify::new());
            let (courier, limits) = (self.courier.clone(), self.limits);
            let (watched, stopped) = (followers.clone(), stop.clone());
            let refresher = tokio::spawn(async move {
                loop {
                    refresh(&courier, limits, run_id, &watched).await;
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
async fn refresh(courier: &Courier, limits: FanoutLimits, run_id: RunId, followers: &Mutex<Followers>) -> bool {
    let current: Vec<Subscriber> = match courier.connections.subscribers(run_id).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(%run_id, error = %err, "listing subscribers failed; keeping the old list");
            return false;
        }
    };
    let now = Utc::now();
    let candidates: Vec<Subscriber> = {
        let mut state = followers.lock().await;
        state.by_connection.retain(|id, follower| {
            let keep = !follower.task.is_finished()
                && current.iter().any(|s| {
                    &s.connection_id == id
                        && s.subscription.id == follower.subscription
                        && s.subscription.holder == Some(follower.holder)
                });
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
                // A lapsed hold is a writer that died: its subscriber is taken over.
                let open = !s.subscription.adopted && !state.declined.contains(&s.subscription.id);
                !known && (open || s.subscription.lapsed(now))
            })
            .collect()
    };
    let mut complete = true;
    let hold = chrono::Duration::from_std(limits.hold).unwrap_or(chrono::Duration::seconds(60));
    for Subscriber { connection_id, subscription } in candidates {
        let holder = Uuid::new_v4();
        match courier.connections.adopt(&connection_id, subscription.id, holder, now + hold, now).await {
            Ok(true) => {
                if subscription.lapsed(now) {
                    tracing::info!(%run_id, %connection_id, "took over a subscriber whose writer stopped renewing");
                }
                // Started under the lock: every frame published from here on is queued for it,
                // and every earlier one is in the recent frames or the store it starts from.
                let mut state = followers.lock().await;
                let recent = state.recent.clone();
                let follower = follow(courier, limits, recent, run_id, connection_id.clone(), &subscription, holder);
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
    renew_holds(courier, limits, run_id, followers).await;
    complete
}

/// Renews this executor's hold on each subscriber it serves, a third of the way through the
/// hold; a subscriber someone else holds now is let go.
async fn renew_holds(courier: &Courier, limits: FanoutLimits, run_id: RunId, followers: &Mutex<Followers>) {
    let due: Vec<(String, Uuid, Uuid)> = {
        let mut state = followers.lock().await;
        if state.renewed_at.is_some_and(|at| at.elapsed() < limits.hold / 3) {
            return;
        }
        state.renewed_at = Some(tokio::time::Instant::now());
        state.by_connection.iter().map(|(id, f)| (id.clone(), f.subscription, f.holder)).collect()
    };
    let until = Utc::now() + chrono::Duration::from_std(limits.hold).unwrap_or(chrono::Duration::seconds(60));
    for (connection_id, subscription, holder) in due {
        match courier.connections.renew(&connection_id, subscription, holder, until).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%run_id, %connection_id, "a subscriber's hold was lost; letting it go");
                if let Some(follower) = followers.lock().await.by_connection.remove(&connection_id) {
                    follower.task.abort();
                }
            }
            Err(err) => tracing::warn!(%run_id, %connection_id, error = %err, "renewing a subscriber's hold failed"),
        }
    }
}

impl Followers {
    fn enqueue(&mut self, frame: &Frame, queue_bytes: usize) {
        let messages = Arc::new(StreamMessages::frame(frame));
        let bytes = messages.iter().map(String::len).sum::<usize>();
        let recent = Recent { seq: frame.seq, bytes, messages: messages.clone() };
        self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(recent);
        self.by_connection.retain(|_, follower| {
            let progress = &follower.progress;
            if progress.queued_bytes.load(Ordering::Acquire) + bytes > queue_bytes {
                progress.behind.store(true, Ordering::Release);
                return true;
            }
            match follower.queue.try_send(Outgoing {
                seq: frame.seq,
                read_at: frame.ts,
                bytes,
                messages: messages.clone(),
            }) {
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
            state.enqueue(frame, self.limits.queue_bytes);
        }
        Ok(())
    }

    fn is_live(&self) -> bool {
        true
    }

    async fn stored(&self, run_id: RunId, through_seq: u64) {
        let followers =
            self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&run_id).map(|r| r.followers.clone());
        if let Some(followers) = followers {
            let recent = followers.lock().await.recent.clone();
            recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).stored(through_seq);
        }
    }

    /// Also called for a run that ended without this executor running it (cancelled while
    /// queued, executor lost): whoever subscribed meanwhile still gets the rest and the end.
    async fn finish(&self, run_id: RunId, status: RunStatus) {
        let followers = self.take(run_id).await;
        // The run is saved as ended: anyone subscribing from now on is served by the handler,
        // so this is the last look; it must not miss anyone.
        for attempt in 1..=FINAL_REFRESH_ATTEMPTS {
            if refresh(&self.courier, self.limits, run_id, &followers).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200) * attempt).await;
        }
        let mut state = followers.lock().await;
        if state.by_connection.is_empty() {
            return;
        }
        let end = self.courier.end_message(run_id, state.last_seq, status).await;
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
            let next = crate::ports::Subscription::open(follower.progress.cursor.load(Ordering::Acquire));
            if let Err(err) = self.courier.connections.release(&connection_id, follower.subscription, &next).await {
                tracing::warn!(%run_id, %connection_id, error = %err, "releasing a subscriber failed; closing");
                self.courier.gateway.close(&connection_id).await;
            }
        }
    }
}
