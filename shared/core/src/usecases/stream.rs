//! The WebSocket side: who may connect, subscribing (replay, then live), unknown actions.

use std::sync::Arc;

use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::Limiter;
use super::courier::Courier;
use crate::domain::{LimitOverrides, RunId, RunStatus, StreamMessages, StreamTokens};
use crate::ports::{
    ApiKeyStore, Connection, ConnectionGateway, ConnectionStore, FrameHistory, KeyGrant, RunStore, Subscription,
};
use crate::{Error, Result};

/// API Gateway closes a WebSocket after 2 hours; the record expires with it.
const CONNECTION_TTL_HOURS: i64 = 2;
/// A second look, this long after subscribing, for a run that ended without its executor seeing
/// the subscription (DynamoDB's index is eventually consistent; a queued run may be cancelled).
const LATE_CHECK: Duration = Duration::from_millis(1200);
/// How long the subscribe handler holds a subscription while it replays or ends it; a handler
/// that dies with it held leaves it to the run's executor after this.
const HANDLER_HOLD: chrono::Duration = chrono::Duration::seconds(60);

/// The WebSocket API's use cases.
pub struct StreamService {
    runs: Arc<dyn RunStore>,
    courier: Courier,
    tokens: StreamTokens,
    /// `None` where the deployment keeps no rate limits.
    limiter: Option<Arc<Limiter>>,
    /// The keys a stream token's key is checked against.
    keys: Option<Arc<dyn ApiKeyStore>>,
}

/// How the client proved who it is on `$connect`.
pub enum Credentials {
    /// What the `x-api-key` presented grants (already looked up).
    Key(KeyGrant),
    /// A `?token=` stream token.
    Token(String),
}

#[derive(Deserialize)]
struct SubscribeBody {
    run_id: String,
    #[serde(default)]
    after_seq: Option<u64>,
}

impl StreamService {
    /// The WebSocket API over these stores; stream tokens are checked with `tokens`.
    pub fn new(
        runs: Arc<dyn RunStore>,
        connections: Arc<dyn ConnectionStore>,
        gateway: Arc<dyn ConnectionGateway>,
        history: Arc<dyn FrameHistory>,
        tokens: StreamTokens,
    ) -> Self {
        Self {
            runs,
            courier: Courier { gateway, connections, history, metrics: Arc::new(crate::ports::NoMetrics) },
            tokens,
            limiter: None,
            keys: None,
        }
    }

    /// `$connect`: records the connection of an authenticated client.
    pub async fn connect(&self, connection_id: &str, credentials: Credentials) -> Result<()> {
        let (owner, limits, scoped_run, key_hash) = match credentials {
            Credentials::Key(grant) => (grant.owner, grant.limits, None, Some(grant.key)),
            Credentials::Token(token) => {
                let claims = self.tokens.verify(&token, Utc::now()).ok_or(Error::Unauthorized)?;
                // A token lives no longer than the key whose request got it.
                let limits = match (&claims.key, &self.keys) {
                    (Some(key), Some(keys)) => keys.grant_of(key).await?.ok_or(Error::Unauthorized)?.limits,
                    _ => LimitOverrides::default(),
                };
                (claims.owner, limits, Some(claims.run_id), claims.key)
            }
        };
        if let Some(limiter) = &self.limiter {
            limiter.admit_connection(&owner, &limits, self.courier.connections.as_ref()).await?;
        }
        let now = Utc::now();
        let connection = Connection {
            connection_id: connection_id.to_owned(),
            owner,
            scoped_run,
            run_id: None,
            subscription: None,
            connected_at: now,
            expires_at: now + chrono::Duration::hours(CONNECTION_TTL_HOURS),
            key_hash,
        };
        self.courier.connections.put(&connection).await
    }

    /// The same service, refusing stream tokens whose key was revoked (as looked up in `keys`).
    pub fn with_keys(self, keys: Arc<dyn ApiKeyStore>) -> Self {
        Self { keys: Some(keys), ..self }
    }

    /// The same service, admitting connections through `limiter`.
    pub fn with_limiter(self, limiter: Option<Arc<Limiter>>) -> Self {
        Self { limiter, ..self }
    }

    /// `$disconnect`: forgets the connection.
    pub async fn disconnect(&self, connection_id: &str) -> Result<()> {
        self.courier.connections.delete(connection_id).await
    }

    /// `{"action":"subscribe","run_id":…,"after_seq":N}`: replays the stored frames after N,
    /// then hands the subscription to the run's executor for live frames; a run that has ended
    /// gets its `end` from here. Problems are told to the client as `error` messages.
    pub async fn subscribe(&self, connection_id: &str, body: &str) -> Result<()> {
        let Some(connection) = self.courier.connections.get(connection_id).await? else {
            return Ok(()); // gone meanwhile
        };
        let request = match serde_json::from_str::<SubscribeBody>(body) {
            Ok(r) => r,
            Err(e) => {
                return self.tell(connection_id, "invalid_message", &format!("subscribe needs run_id: {e}")).await;
            }
        };
        let Ok(run_id) = request.run_id.parse::<RunId>() else {
            return self.tell(connection_id, "invalid_run_id", "run_id must be a UUID").await;
        };
        let run = self.runs.get(run_id).await?;
        let allowed = run.as_ref().is_some_and(|r| r.owner == connection.owner)
            && connection.scoped_run.is_none_or(|scoped| scoped == run_id);
        let Some(run) = run.filter(|_| allowed) else {
            // Another owner's run is indistinguishable from a missing one.
            return self.tell(connection_id, "run_not_found", &format!("run {run_id} not found")).await;
        };
        let after_seq = request.after_seq.unwrap_or(0);
        // The handler holds the subscription while it replays, so nobody else writes meanwhile.
        let held = Subscription::held(after_seq, Uuid::new_v4(), Utc::now() + HANDLER_HOLD);
        if !self.courier.connections.subscribe(connection_id, run_id, &held).await? {
            let message = "this connection already follows a run; open another connection to follow another";
            return self.tell(connection_id, "already_subscribed", message).await;
        }
        self.send(connection_id, &StreamMessages::subscribed(run_id, after_seq)).await;
        let Some(cursor) = self.courier.replay(connection_id, run_id, after_seq).await? else { return Ok(()) };
        if run.status.is_terminal() {
            // The run had ended before the replay read the log: the log was complete.
            return self.end(connection_id, run_id, cursor, run.status).await;
        }

        // Live: hand over to the run's executor, which adopts the subscription and continues
        // after `cursor`.
        let next = Subscription::open(cursor);
        if !self.courier.connections.release(connection_id, held.id, &next).await? {
            return Ok(()); // disconnected meanwhile
        }
        // The run may end before its executor ever sees this subscription (it ended meanwhile,
        // it was cancelled while queued, the subscriber index lagged): then this handler
        // finishes the job, if nobody adopted it first.
        for wait in [Duration::ZERO, LATE_CHECK] {
            tokio::time::sleep(wait).await;
            let status = self.runs.get(run_id).await?.map(|r| r.status).filter(|s| s.is_terminal());
            if let Some(status) = status {
                let now = Utc::now();
                if self
                    .courier
                    .connections
                    .adopt(connection_id, next.id, Uuid::new_v4(), now + HANDLER_HOLD, now)
                    .await?
                {
                    let Some(cursor) = self.courier.replay(connection_id, run_id, cursor).await? else {
                        return Ok(());
                    };
                    return self.end(connection_id, run_id, cursor, status).await;
                }
                return Ok(());
            }
        }
        Ok(())
    }

    async fn end(&self, connection_id: &str, run_id: RunId, cursor: u64, status: RunStatus) -> Result<()> {
        let end = self.courier.end_message(run_id, cursor, status).await;
        self.send(connection_id, &end).await;
        Ok(())
    }

    /// `$default`: an action this API does not have gets an answer, not silence.
    pub async fn unknown_action(&self, connection_id: &str, body: &str) -> Result<()> {
        let action = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["action"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let message = if action.is_empty() {
            "send JSON with an \"action\"; the only action is \"subscribe\"".to_owned()
        } else {
            format!("unknown action {action:?}; the only action is \"subscribe\"")
        };
        self.tell(connection_id, "unknown_action", &message).await
    }

    async fn tell(&self, connection_id: &str, code: &str, message: &str) -> Result<()> {
        self.send(connection_id, &StreamMessages::error(code, message)).await;
        Ok(())
    }

    /// False once the connection is gone.
    async fn send(&self, connection_id: &str, message: &str) -> bool {
        self.courier.post(connection_id, message).await
    }
}
