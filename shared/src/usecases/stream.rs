//! The WebSocket side: who may connect, subscribing (replay, then live), unknown actions.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde::Deserialize;

use crate::domain::{Owner, RunId, StreamMessages, StreamTokens};
use crate::ports::{Connection, ConnectionGateway, ConnectionStore, FrameHistory, RunStore};
use crate::{Error, Result};

/// API Gateway closes a WebSocket after 2 hours; the record expires with it.
const CONNECTION_TTL_HOURS: i64 = 2;
const REPLAY_PAGE: usize = 500;
/// A frame stored just after the replay read it, and published by an executor whose subscriber
/// list predates this subscription, would fall between replay and live. The fan-out re-reads its
/// list every 500 ms while frames flow and stores before it publishes, so a second replay this
/// much later closes that gap (duplicates are allowed and carry the same seq).
const CATCH_UP: std::time::Duration = std::time::Duration::from_millis(1200);

pub struct StreamService {
    runs: Arc<dyn RunStore>,
    connections: Arc<dyn ConnectionStore>,
    gateway: Arc<dyn ConnectionGateway>,
    history: Arc<dyn FrameHistory>,
    tokens: StreamTokens,
}

/// How the client proved who it is on `$connect`.
pub enum Credentials {
    /// The owner of the `x-api-key` presented (already looked up).
    Owner(Owner),
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
    pub fn new(
        runs: Arc<dyn RunStore>,
        connections: Arc<dyn ConnectionStore>,
        gateway: Arc<dyn ConnectionGateway>,
        history: Arc<dyn FrameHistory>,
        tokens: StreamTokens,
    ) -> Self {
        Self { runs, connections, gateway, history, tokens }
    }

    pub async fn connect(&self, connection_id: &str, credentials: Credentials) -> Result<()> {
        let (owner, scoped_run) = match credentials {
            Credentials::Owner(owner) => (owner, None),
            Credentials::Token(token) => {
                let claims = self.tokens.verify(&token, Utc::now()).ok_or(Error::Unauthorized)?;
                (claims.owner, Some(claims.run_id))
            }
        };
        let now = Utc::now();
        let connection = Connection {
            connection_id: connection_id.to_owned(),
            owner,
            scoped_run,
            run_id: None,
            connected_at: now,
            expires_at: now + Duration::hours(CONNECTION_TTL_HOURS),
        };
        self.connections.put(&connection).await
    }

    pub async fn disconnect(&self, connection_id: &str) -> Result<()> {
        self.connections.delete(connection_id).await
    }

    /// `{"action":"subscribe","run_id":…,"after_seq":N}`: registers the connection for live frames,
    /// then replays the stored frames after N; a finished run ends with its `end` frame. Problems
    /// are told to the client as `error` messages.
    pub async fn subscribe(&self, connection_id: &str, body: &str) -> Result<()> {
        let Some(mut connection) = self.connections.get(connection_id).await? else {
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
        // The acknowledgement goes first: once the connection is registered, live frames may
        // arrive at any moment.
        self.send(connection_id, &StreamMessages::subscribed(run_id, after_seq)).await;
        connection.run_id = Some(run_id);
        self.connections.put(&connection).await?;

        let Some(mut cursor) = self.replay(connection_id, run_id, after_seq).await? else { return Ok(()) };
        if !run.status.is_terminal() {
            tokio::time::sleep(CATCH_UP).await;
            let Some(caught_up) = self.replay(connection_id, run_id, cursor).await? else { return Ok(()) };
            cursor = caught_up;
        }
        // Read the status after the replay: a run that finished meanwhile still gets its end.
        let status = if run.status.is_terminal() {
            Some(run.status)
        } else {
            self.runs.get(run_id).await?.map(|r| r.status).filter(|s| s.is_terminal())
        };
        if let Some(status) = status {
            let last = self.history.last_seq(run_id).await?.max(cursor);
            self.send(connection_id, &StreamMessages::end(run_id, last + 1, status)).await;
        }
        Ok(())
    }

    /// Sends the stored frames after `after_seq`; the last seq sent, or `None` if the connection
    /// went away.
    async fn replay(&self, connection_id: &str, run_id: RunId, after_seq: u64) -> Result<Option<u64>> {
        let mut cursor = after_seq;
        loop {
            let page = self.history.frames_after(run_id, cursor, REPLAY_PAGE).await?;
            for frame in &page {
                for message in StreamMessages::frame(frame) {
                    if !self.send(connection_id, &message).await {
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
        super::fanout::post_with_backoff(self.gateway.as_ref(), self.connections.as_ref(), connection_id, message).await
    }
}
