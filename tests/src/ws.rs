//! A WebSocket subscriber, as a client program would be.

use std::collections::HashMap;
use std::time::Duration;

/// A WebSocket subscriber, as a client program would be.
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    parts: HashMap<u64, Vec<Option<String>>>,
    /// Every message received, as sent (for checks against the contract).
    pub messages: Vec<serde_json::Value>,
}

impl WsClient {
    /// Connects with an optional `x-api-key`; `Err(status)` when the handshake is refused.
    pub async fn connect(url: &str, key: Option<&str>) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = url.into_client_request().expect("ws url");
        if let Some(key) = key {
            request.headers_mut().insert("x-api-key", key.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Self { socket, parts: HashMap::new(), messages: Vec::new() }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("websocket connect failed: {other}"),
        }
    }

    pub async fn send(&mut self, message: serde_json::Value) {
        use futures_util::SinkExt as _;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(message.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn subscribe(&mut self, run_id: &str, after_seq: u64) {
        self.send(serde_json::json!({"action": "subscribe", "run_id": run_id, "after_seq": after_seq})).await;
    }

    /// Whether the server closes the connection within `timeout` (messages before that are kept).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        use futures_util::StreamExt as _;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_))) => return true,
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) => return true,
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                    self.messages.push(serde_json::from_str(&text).expect("server messages are JSON"));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next message, or `None` after `timeout` (or when the server closed).
    pub async fn next_message(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        use futures_util::StreamExt as _;
        loop {
            let message = tokio::time::timeout(timeout, self.socket.next()).await.ok()??.ok()?;
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let value: serde_json::Value = serde_json::from_str(&text).expect("server messages are JSON");
                self.messages.push(value.clone());
                return Some(value);
            }
        }
    }

    /// The next whole frame (parts reassembled); other message types are skipped.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        loop {
            let message = self.next_message(timeout).await?;
            match message["type"].as_str() {
                Some("frame") => return Some(message),
                Some("frame_part") => {
                    let seq = message["seq"].as_u64().unwrap();
                    let total = message["parts"].as_u64().unwrap() as usize;
                    let slots = self.parts.entry(seq).or_insert_with(|| vec![None; total]);
                    slots[message["part"].as_u64().unwrap() as usize - 1] = message["data"].as_str().map(str::to_owned);
                    if slots.iter().all(Option::is_some) {
                        let whole: String = self.parts.remove(&seq).unwrap().into_iter().flatten().collect();
                        return Some(serde_json::from_str(&whole).expect("reassembled frame is JSON"));
                    }
                }
                _ => {}
            }
        }
    }

    /// Frames as they arrived until the `end` frame (inclusive), duplicates kept (the contract
    /// has none); bounded by `timeout` per frame.
    pub async fn frames_until_end(&mut self, timeout: Duration) -> Vec<serde_json::Value> {
        let mut frames: Vec<serde_json::Value> = Vec::new();
        while let Some(frame) = self.next_frame(timeout).await {
            let is_end = frame["kind"] == "end";
            frames.push(frame);
            if is_end {
                break;
            }
        }
        frames
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
