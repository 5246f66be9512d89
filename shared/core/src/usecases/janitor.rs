//! The janitor (scheduled): expired sessions, runs whose executor stopped renewing its lease, run
//! objects that belong to no run, and memory entries past their retention. Idempotent, and
//! bounded per invocation.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{KeyHash, LostRun, QUEUED_GRACE_SECONDS, Run, RunId, StrandedRun, object_keys};
use crate::ports::{
    ApiKeyStore, ConnectionGateway, ConnectionStore, MemoryStore, ObjectStore, RunMessage, RunQueue, RunStore,
    SessionStore,
};
use crate::{Error, Result};

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JanitorReport {
    /// Sessions removed (objects and record).
    pub expired_sessions: usize,
    /// Lost runs ended as `executor_lost`.
    pub failed_runs: usize,
    /// Lost runs queued again (their CLI had not started).
    pub requeued_runs: usize,
    /// Runs left queued too long whose message was sent again.
    pub resent_runs: usize,
    /// Runs left queued after every resend, failed as `dead_lettered`.
    pub dead_lettered_runs: usize,
    /// Objects under `runs/` of no run, removed.
    pub orphaned_objects: usize,
    /// Retired (or never accepted) memory entries past their retention, removed.
    pub stale_memory: u64,
    /// WebSocket connections of revoked (or removed) keys, closed.
    pub revoked_connections: usize,
}

/// Where the WebSocket connections are, how to close them, and the keys they were opened with.
pub struct OpenConnections {
    /// The connections table.
    pub connections: Arc<dyn ConnectionStore>,
    /// API Gateway's management API.
    pub gateway: Arc<dyn ConnectionGateway>,
    /// The API keys.
    pub keys: Arc<dyn ApiKeyStore>,
}

/// The scheduled sweep.
pub struct Janitor {
    runs: Arc<dyn RunStore>,
    sessions: Arc<dyn SessionStore>,
    objects: Arc<dyn ObjectStore>,
    queue: Arc<dyn RunQueue>,
    /// Items of each kind handled per invocation.
    batch: usize,
    /// The memory, and how long a retired or never-accepted entry is kept.
    memory: Option<(Arc<dyn MemoryStore>, chrono::Duration)>,
    /// Where the WebSocket API is deployed: connections whose key was revoked are closed.
    open: Option<OpenConnections>,
}

impl Janitor {
    /// A janitor handling at most `batch` items of each kind per sweep.
    pub fn new(
        runs: Arc<dyn RunStore>,
        sessions: Arc<dyn SessionStore>,
        objects: Arc<dyn ObjectStore>,
        queue: Arc<dyn RunQueue>,
        batch: usize,
    ) -> Self {
        Self { runs, sessions, objects, queue, batch, memory: None, open: None }
    }

    /// The same janitor, also removing memory entries retired (or proposed and never accepted)
    /// for longer than `retention`.
    pub fn with_memory(self, memory: Arc<dyn MemoryStore>, retention: chrono::Duration) -> Self {
        Self { memory: Some((memory, retention)), ..self }
    }

    /// Writes a recovered run (unless it changed since `expected`) and sends its message: a run
    /// queued again goes again; for an ended one, the executor that takes the message sends the
    /// end to whoever is still subscribed. Whether it was written.
    async fn save_and_send(&self, run: &Run, expected: u64) -> Result<bool> {
        match self.runs.update(run, expected).await {
            Ok(()) => {
                self.queue.enqueue(&RunMessage::for_run(run)).await?;
                Ok(true)
            }
            Err(Error::Conflict) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The same janitor, also closing WebSocket connections whose key is revoked.
    pub fn with_connections(self, open: OpenConnections) -> Self {
        Self { open: Some(open), ..self }
    }

    /// Closes the connections opened with a key that is revoked (or gone): they, and the stream
    /// tokens that key's requests got, stop with it. Cheap enough to run every minute.
    pub async fn close_revoked(&self) -> Result<usize> {
        let Some(open) = &self.open else { return Ok(0) };
        let mut verdicts: std::collections::HashMap<KeyHash, bool> = std::collections::HashMap::new();
        let mut closed = 0;
        // Connections are many and keys few: each key is looked up once per sweep.
        for connection in open.connections.keyed(self.batch * 50).await? {
            let Some(key) = &connection.key_hash else { continue };
            let valid = match verdicts.get(key) {
                Some(valid) => *valid,
                None => {
                    let valid = open.keys.grant_of(key).await?.is_some();
                    verdicts.insert(key.clone(), valid);
                    valid
                }
            };
            if !valid {
                open.gateway.close(&connection.connection_id).await;
                open.connections.delete(&connection.connection_id).await?;
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::info!(closed, "closed the connections of revoked keys");
        }
        Ok(closed)
    }

    /// One sweep, as of `now`.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<JanitorReport> {
        let mut report = JanitorReport::default();
        for session in self.sessions.expired(now, self.batch).await? {
            super::sessions::remove_session(self.objects.as_ref(), self.sessions.as_ref(), session.session_id).await?;
            report.expired_sessions += 1;
        }
        for mut run in self.runs.stale_leases(now, self.batch).await? {
            let expected = run.version;
            let Some(recovery) = run.recover_lost(now) else { continue };
            // Not written: its executor woke up, or another sweep got there first.
            if self.save_and_send(&run, expected).await? {
                match recovery {
                    LostRun::Requeued => report.requeued_runs += 1,
                    LostRun::Failed => report.failed_runs += 1,
                }
            }
        }
        let waited_too_long = now - chrono::Duration::seconds(QUEUED_GRACE_SECONDS);
        for mut run in self.runs.queued_since(waited_too_long, self.batch).await? {
            let expected = run.version;
            let Some(recovery) = run.recover_stranded(now) else { continue };
            // Not written: claimed meanwhile, so its message was there after all.
            if self.save_and_send(&run, expected).await? {
                match recovery {
                    StrandedRun::Requeued => report.resent_runs += 1,
                    StrandedRun::Failed => report.dead_lettered_runs += 1,
                }
            }
        }
        let keys = self.objects.list_up_to(object_keys::RUNS_PREFIX, self.batch * 10).await?;
        let run_ids: BTreeSet<&str> = keys.iter().filter_map(|k| object_keys::run_of(k)).collect();
        for id in run_ids {
            let orphaned = match id.parse::<RunId>() {
                Ok(run_id) => self.runs.get(run_id).await?.is_none(),
                Err(_) => true,
            };
            if orphaned {
                for key in keys.iter().filter(|k| object_keys::run_of(k) == Some(id)) {
                    self.objects.delete(key).await?;
                    report.orphaned_objects += 1;
                }
            }
        }
        if let Some((memory, retention)) = &self.memory {
            let before = now - *retention;
            report.stale_memory = memory.remove_stale(before, before, self.batch as i64).await?;
        }
        report.revoked_connections = self.close_revoked().await?;
        tracing::info!(?report, "janitor sweep");
        Ok(report)
    }
}
