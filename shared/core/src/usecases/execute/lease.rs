//! Holding a claimed run: the heartbeat that renews the lease and notices a cancel request, and
//! how the run loop hears about either.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use crate::domain::RunId;
use crate::ports::{EpicEngine, RunStore};

/// Why a running CLI must stop before it ends by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopReason {
    /// Someone asked to cancel the run.
    Cancel,
    /// Another executor holds the run now.
    LeaseLost,
}

/// The lease heartbeat of one run, stopped when dropped: an executor that is itself aborted
/// stops renewing its lease.
pub(super) struct Lease {
    task: tokio::task::JoinHandle<()>,
    /// When the run was claimed: its time budget counts from here.
    pub started: tokio::time::Instant,
    /// `Some` once the run must stop.
    pub stop: watch::Receiver<Option<StopReason>>,
}

impl Lease {
    /// Renews `executor`'s lease on the run every `every`, for `lease` each time; and, for an
    /// epic step, heartbeats the task waiting on its token.
    pub fn hold(
        store: Arc<dyn RunStore>,
        run_id: RunId,
        executor: String,
        lease: Duration,
        every: Duration,
        epic_task: Option<(Arc<dyn EpicEngine>, String)>,
    ) -> Self {
        let (tx, stop) = watch::channel(None);
        let task = tokio::spawn(heartbeat(store, run_id, executor, lease, every, epic_task, tx));
        Self { task, started: tokio::time::Instant::now(), stop }
    }

    /// The stop asked for so far, if any.
    pub fn requested(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resolves once a stop is requested; never, if the heartbeat is gone.
pub(super) async fn stop_requested(stop: &mut watch::Receiver<Option<StopReason>>) -> StopReason {
    loop {
        if let Some(reason) = *stop.borrow_and_update() {
            return reason;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Renews the lease and polls for a cancel request, until aborted.
async fn heartbeat(
    store: Arc<dyn RunStore>,
    run_id: RunId,
    executor: String,
    lease: Duration,
    every: Duration,
    epic_task: Option<(Arc<dyn EpicEngine>, String)>,
    stop: watch::Sender<Option<StopReason>>,
) {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    loop {
        tokio::time::sleep(every).await;
        if let Some((engine, token)) = &epic_task
            && let Err(err) = engine.heartbeat(token).await
        {
            tracing::warn!(%run_id, error = %err, "epic step heartbeat failed; retrying");
        }
        match store.heartbeat(run_id, &executor, Utc::now() + lease).await {
            Ok(Some(beat)) if beat.cancel_requested => {
                let _ = stop.send(Some(StopReason::Cancel));
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(%run_id, "lease lost");
                let _ = stop.send(Some(StopReason::LeaseLost));
                return;
            }
            Err(err) => tracing::warn!(%run_id, error = %err, "heartbeat failed; retrying"),
        }
    }
}
