//! Following a run over the WebSocket API: subscribe, reassemble split frames, reconnect with
//! `after_seq` when the connection drops, stop at the `end` frame.
//!
//! Until the first frame, a [`Progress`] line (queued / preparing, from the status endpoint) may
//! stand on stderr; it is cleared before the first frame is printed.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::{output, render};

const RECONNECTS: u32 = 10;
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Prints the run's frames until its end (`json`: one frame per line); returns its final status.
pub async fn follow(
    ws_url: &str,
    key: &str,
    run_id: &str,
    after_seq: u64,
    json: bool,
    mut progress: Option<Progress>,
) -> Result<String> {
    let mut last_seq = after_seq;
    let mut attempts = 0;
    loop {
        match session(ws_url, key, run_id, &mut last_seq, json, &mut progress).await {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => eprintln!("the server closed the connection; reconnecting after seq {last_seq}"),
            Err(err) if attempts < RECONNECTS => {
                eprintln!("connection lost ({err:#}); reconnecting after seq {last_seq}")
            }
            Err(err) => return Err(err),
        }
        attempts += 1;
        if attempts > RECONNECTS {
            return Err(Error::Unreachable(format!("gave up after {RECONNECTS} reconnects")));
        }
        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempts))).await;
    }
}

/// One connection. `Ok(Some(status))` at the end frame, `Ok(None)` when the server hung up.
async fn session(
    ws_url: &str,
    key: &str,
    run_id: &str,
    last_seq: &mut u64,
    json: bool,
    progress: &mut Option<Progress>,
) -> Result<Option<String>> {
    let mut request = ws_url
        .into_client_request()
        .map_err(|e| Error::config("bad_ws_url", format!("not a WebSocket URL ({ws_url}): {e}")))?;
    let key = key.parse().map_err(|_| Error::config("bad_api_key", "the API key cannot be sent as a header"))?;
    request.headers_mut().insert("x-api-key", key);
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(15), tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| Error::Unreachable("connect timed out".to_owned()))?
        .map_err(unreachable)?;
    let subscribe = json!({"action": "subscribe", "run_id": run_id, "after_seq": *last_seq});
    socket.send(Message::Text(subscribe.to_string().into())).await.map_err(unreachable)?;
    let mut parts: HashMap<u64, Vec<Option<String>>> = HashMap::new();
    let spin = std::io::stderr().is_terminal() && !json;
    let mut tick = 0usize;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(250), socket.next()).await;
        let message = match next {
            Err(_) => {
                // The progress line stands in for the spinner until the run is running.
                if spin && !progress.as_ref().is_some_and(Progress::is_active) {
                    eprint!("\r{} waiting for frames…", SPINNER[tick % SPINNER.len()]);
                    tick += 1;
                }
                continue;
            }
            Ok(None) => return Ok(None),
            Ok(Some(message)) => message.map_err(unreachable)?,
        };
        if spin && tick > 0 {
            eprint!("\r\x1b[2K");
            tick = 0;
        }
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Close(_) => return Ok(None),
            _ => continue,
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::InvalidResponse(format!("a message that is not JSON: {e}")))?;
        let frame = match value["type"].as_str() {
            Some("frame") => value,
            Some("frame_part") => {
                let seq = value["seq"].as_u64().unwrap_or_default();
                let total = value["parts"].as_u64().unwrap_or(1) as usize;
                let part = value["part"].as_u64().unwrap_or(1) as usize;
                let slots = parts.entry(seq).or_insert_with(|| vec![None; total]);
                if let Some(slot) = slots.get_mut(part.saturating_sub(1)) {
                    *slot = value["data"].as_str().map(str::to_owned);
                }
                if slots.iter().any(Option::is_none) {
                    continue;
                }
                let whole: String = parts.remove(&seq).unwrap_or_default().into_iter().flatten().collect();
                serde_json::from_str(&whole)
                    .map_err(|e| Error::InvalidResponse(format!("a reassembled frame is not JSON: {e}")))?
            }
            Some("error") => {
                return Err(Error::Stream {
                    code: value["code"].as_str().unwrap_or("stream_error").to_owned(),
                    message: value["message"].as_str().unwrap_or("").to_owned(),
                });
            }
            _ => continue, // subscribed, heartbeat
        };
        let seq = frame["seq"].as_u64().unwrap_or_default();
        if seq <= *last_seq && frame["kind"] != "end" {
            continue; // already shown before a reconnect
        }
        if let Some(mut shown) = progress.take() {
            shown.stop().await;
        }
        if json {
            output::json_line(&frame)?;
        } else {
            render::frame(&frame);
        }
        if frame["kind"] == "end" {
            return Ok(Some(frame["status"].as_str().unwrap_or("unknown").to_owned()));
        }
        *last_seq = seq;
    }
}

fn unreachable(err: tokio_tungstenite::tungstenite::Error) -> Error {
    Error::Unreachable(format!("WebSocket: {err}"))
}
