//! The WebSocket API on 127.0.0.1, as API Gateway runs it: `$connect` (a non-200 answer refuses
//! the upgrade), messages routed by `$request.body.action` to `subscribe` or `$default`,
//! `$disconnect`; and the management endpoint (`POST`/`GET`/`DELETE /@connections/{id}`, 410 for
//! a connection that is gone, 429 when a client's buffer is full, 413 for a message above the
//! 32 KB frame limit) that the real SDK client of the executor and the subscribe route post to.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{RwLock, mpsc};
use websocket::WebSocketHandler;

/// Messages a client may have waiting unless the stack says otherwise; beyond it the management
/// API answers 429 like a throttled API Gateway, and the sender backs off.
pub const DEFAULT_CLIENT_BUFFER: usize = 256;

enum Outbound {
    Text(String),
    Close,
}

struct Client {
    tx: mpsc::Sender<Outbound>,
    connected_at: chrono::DateTime<chrono::Utc>,
    /// Tears the connection down at once (a client too far behind for a polite close).
    dropped: Arc<tokio::sync::Notify>,
    /// The client stopped reading: nothing more reaches it (tests make a subscriber slow so).
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone)]
pub struct Gateway {
    handler: Arc<WebSocketHandler>,
    client_buffer: usize,
    /// Route invocations still running (tests wait for the handlers to be done).
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    clients: Arc<RwLock<HashMap<String, Client>>>,
}

impl Gateway {
    pub fn new(handler: Arc<WebSocketHandler>, client_buffer: usize) -> Self {
        Self {
            handler,
            client_buffer: client_buffer.max(1),
            in_flight: Arc::default(),
            clients: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// Makes every client connected now stop reading, as a subscriber whose process hangs would:
    /// its messages queue up until the management API answers 429.
    pub async fn stall_clients(&self) {
        for client in self.clients.read().await.values() {
            client.stalled.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// A counter of route invocations still running.
    pub fn in_flight(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.in_flight.clone()
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(upgrade))
            .route("/@connections/{id}", post(post_to_connection).get(get_connection).delete(delete_connection))
            .with_state(self)
    }

    async fn invoke(
        &self,
        route: &str,
        connection_id: &str,
        headers: HeaderMap,
        query: HashMap<String, String>,
        body: Option<String>,
    ) -> (u16, String) {
        let mut event = ApiGatewayWebsocketProxyRequest::default();
        event.request_context.route_key = Some(route.to_owned());
        event.request_context.connection_id = Some(connection_id.to_owned());
        event.request_context.event_type = Some(
            match route {
                "$connect" => "CONNECT",
                "$disconnect" => "DISCONNECT",
                _ => "MESSAGE",
            }
            .to_owned(),
        );
        event.request_context.stage = Some("live".to_owned());
        event.headers = headers;
        event.query_string_parameters = query.into();
        event.body = body;
        let response = websocket::handle(&self.handler, event).await;
        let body = match response.body {
            Some(LambdaBody::Text(text)) => text,
            _ => String::new(),
        };
        (response.status_code as u16, body)
    }
}

async fn upgrade(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let connection_id = format!("{:016x}", rand::random::<u64>());
    let (status, body) = gateway.invoke("$connect", &connection_id, headers, query, None).await;
    if status != 200 {
        return (StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), body).into_response();
    }
    ws.on_upgrade(move |socket| serve(gateway, connection_id, socket))
}

async fn serve(gateway: Gateway, connection_id: String, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel(gateway.client_buffer);
    let dropped = Arc::new(tokio::sync::Notify::new());
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = Client { tx, connected_at: chrono::Utc::now(), dropped: dropped.clone(), stalled: stalled.clone() };
    gateway.clients.write().await.insert(connection_id.clone(), client);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            if stalled.load(std::sync::atomic::Ordering::Acquire) {
                // As a socket whose reader went away: what is queued stays queued.
                std::future::pending::<()>().await;
            }
            let sent = match out {
                Outbound::Text(text) => sink.send(Message::Text(text.into())).await,
                Outbound::Close => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
    });
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            () = dropped.notified() => break,
        };
        let Some(Ok(message)) = message else { break };
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        let action = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["action"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let route = if action == "subscribe" { "subscribe" } else { "$default" };
        // Each message is its own invocation, as on API Gateway: a long replay does not block reads.
        let (gateway, id, route) = (gateway.clone(), connection_id.clone(), route.to_owned());
        gateway.in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        tokio::spawn(async move {
            gateway.invoke(&route, &id, HeaderMap::new(), HashMap::new(), Some(text)).await;
            gateway.in_flight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        });
    }
    gateway.clients.write().await.remove(&connection_id);
    writer.abort();
    gateway.invoke("$disconnect", &connection_id, HeaderMap::new(), HashMap::new(), None).await;
}

fn gone() -> Response {
    (StatusCode::GONE, [("x-amzn-errortype", "GoneException")], Json(serde_json::json!({"message": "Gone"})))
        .into_response()
}

async fn post_to_connection(State(gateway): State<Gateway>, Path(id): Path<String>, body: Bytes) -> Response {
    // API Gateway's WebSocket frames hold at most 32 KB, which the stream's contract promises
    // every message fits in: a bigger one is refused here rather than delivered by luck.
    if body.len() > runner_core::domain::MAX_MESSAGE_BYTES {
        let message = format!(
            "Message of {} bytes is above the {} byte limit",
            body.len(),
            runner_core::domain::MAX_MESSAGE_BYTES
        );
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [("x-amzn-errortype", "PayloadTooLargeException")],
            Json(serde_json::json!({ "message": message })),
        )
            .into_response();
    }
    let clients = gateway.clients.read().await;
    let Some(client) = clients.get(&id) else { return gone() };
    match client.tx.try_send(Outbound::Text(String::from_utf8_lossy(&body).into_owned())) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(mpsc::error::TrySendError::Full(_)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("x-amzn-errortype", "LimitExceededException")],
            Json(serde_json::json!({"message": "Rate exceeded"})),
        )
            .into_response(),
        Err(mpsc::error::TrySendError::Closed(_)) => gone(),
    }
}

async fn get_connection(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    match gateway.clients.read().await.get(&id) {
        Some(client) => {
            Json(serde_json::json!({"ConnectedAt": client.connected_at, "Identity": {"SourceIp": "127.0.0.1"}}))
                .into_response()
        }
        None => gone(),
    }
}

async fn delete_connection(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    match gateway.clients.write().await.remove(&id) {
        Some(client) => {
            // A close frame when there is room for one; otherwise the client is too far behind to
            // hear it, and the connection is cut as API Gateway would.
            if client.tx.try_send(Outbound::Close).is_err() {
                client.dropped.notify_one();
            }
            StatusCode::NO_CONTENT.into_response()
        }
        None => gone(),
    }
}
