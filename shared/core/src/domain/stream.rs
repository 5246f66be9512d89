//! What WebSocket subscribers receive, and the short-lived stream tokens
//! that let a client without custom headers connect. The contract is `shared/asyncapi.yaml`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::{Frame, Owner, RunId, RunStatus};

/// API Gateway refuses WebSocket messages above 32 KB; stay under with room for the envelope.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// What a part's `data` may take once it is escaped inside the part's JSON; the rest of the
/// 32 KB is the envelope's.
const PART_DATA_BYTES: usize = 24 * 1024;

/// The messages a subscriber can be sent, each already serialized.
pub struct StreamMessages;

impl StreamMessages {
    /// A frame as one message, or as numbered `frame_part` messages when it is too big; the
    /// client concatenates the parts' `data` (in `part` order) and parses the frame.
    pub fn frame(frame: &Frame) -> Vec<String> {
        let mut whole = serde_json::to_value(frame).unwrap_or_default();
        whole["type"] = json!("frame");
        let text = whole.to_string();
        if text.len() <= MAX_MESSAGE_BYTES {
            return vec![text];
        }
        // Budgeted by the size each chunk takes once escaped again inside `data`: quotes,
        // backslashes and control characters grow there, so a quote-heavy frame would otherwise
        // overflow the limit.
        let chunks = split_escaped(&text, PART_DATA_BYTES);
        let parts = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                json!({"type": "frame_part", "run_id": frame.run_id, "seq": frame.seq, "part": i + 1, "parts": parts, "data": chunk})
                    .to_string()
            })
            .collect()
    }

    /// The last frame of a run: `seq` follows the last stored frame.
    pub fn end(run_id: RunId, seq: u64, status: RunStatus) -> String {
        json!({"type": "frame", "run_id": run_id, "seq": seq, "ts": Utc::now(), "kind": "end", "status": status,
               "data": {"status": status}})
        .to_string()
    }

    /// Confirms a subscription; frames after `after_seq` follow.
    pub fn subscribed(run_id: RunId, after_seq: u64) -> String {
        json!({"type": "subscribed", "run_id": run_id, "after_seq": after_seq}).to_string()
    }

    /// Keeps an idle connection alive while no frames arrive.
    pub fn heartbeat() -> String {
        json!({"type": "heartbeat", "ts": Utc::now()}).to_string()
    }

    /// Tells the subscriber a request failed, with a machine-readable `code`.
    pub fn error(code: &str, message: &str) -> String {
        json!({"type": "error", "code": code, "message": message}).to_string()
    }
}

/// The bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// `text` cut at character boundaries into pieces that each take at most `max` bytes escaped.
fn split_escaped(text: &str, max: usize) -> Vec<&str> {
    let mut chunks = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (at, c) in text.char_indices() {
        let len = escaped_len(c);
        if size + len > max && at > start {
            chunks.push(&text[start..at]);
            (start, size) = (at, 0);
        }
        size += len;
    }
    if start < text.len() {
        chunks.push(&text[start..]);
    }
    chunks
}

/// A signed, expiring grant to stream one run: `?token=` for clients that cannot set headers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamClaims {
    /// The one run the token grants.
    pub run_id: RunId,
    /// The owner the connection acts for.
    pub owner: Owner,
    /// After this the token no longer verifies.
    pub expires_at: DateTime<Utc>,
    /// The key whose request got the token: once it is revoked, the token no longer connects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<super::KeyHash>,
}

/// How long a stream token lets a header-less client connect to its run.
pub const STREAM_TOKEN_TTL: chrono::Duration = chrono::Duration::hours(1);

/// Issues and verifies stream tokens, signed with HMAC-SHA256 under a deployment secret.
#[derive(Clone)]
pub struct StreamTokens {
    secret: Vec<u8>,
}

impl StreamTokens {
    /// Tokens signed and checked with this secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self { secret: secret.into() }
    }

    fn mac(&self, payload: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(payload.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The token a submit response hands out: `run_id` for its owner, for `STREAM_TOKEN_TTL`.
    pub fn issue_for_run(&self, run_id: RunId, owner: &Owner, now: DateTime<Utc>) -> String {
        self.issue(&StreamClaims { run_id, owner: owner.clone(), expires_at: now + STREAM_TOKEN_TTL, key: None })
    }

    /// `issue_for_run`, for a request made with `key`: the token dies with the key.
    pub fn issue_for_key(&self, run_id: RunId, owner: &Owner, key: &super::KeyHash, now: DateTime<Utc>) -> String {
        let expires_at = now + STREAM_TOKEN_TTL;
        self.issue(&StreamClaims { run_id, owner: owner.clone(), expires_at, key: Some(key.clone()) })
    }

    /// A token for `claims`: base64url JSON, a `.`, and its hex HMAC.
    pub fn issue(&self, claims: &StreamClaims) -> String {
        use base64::Engine;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signature = self.mac(&payload);
        format!("{payload}.{signature}")
    }

    /// The claims of a genuine, unexpired token.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<StreamClaims> {
        use base64::Engine;
        let (payload, signature) = token.split_once('.')?;
        // One spelling per token: lower-case hex, as issued.
        if !signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        // Constant-time comparison: the signature is attacker-controlled.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).ok()?;
        mac.update(payload.as_bytes());
        mac.verify_slice(&hex::decode(signature).ok()?).ok()?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
        let claims: StreamClaims = serde_json::from_slice(&bytes).ok()?;
        (claims.expires_at > now).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_with(data: serde_json::Value) -> Frame {
        Frame {
            run_id: RunId::new(),
            seq: 7,
            ts: Utc::now(),
            kind: "assistant".into(),
            subtype: None,
            data: super::super::FrameData::Json(data),
            trace_id: None,
        }
    }

    #[test]
    fn small_frames_are_one_message() {
        let messages = StreamMessages::frame(&frame_with(json!({"type": "assistant"})));
        assert_eq!(messages.len(), 1);
        let m: serde_json::Value = serde_json::from_str(&messages[0]).unwrap();
        assert_eq!((m["type"].as_str(), m["seq"].as_u64()), (Some("frame"), Some(7)));
    }

    /// Splits the frame and checks every part's size and the reassembled frame.
    fn split_and_reassemble(frame: &Frame) -> usize {
        let messages = StreamMessages::frame(frame);
        let mut whole = String::new();
        for (i, text) in messages.iter().enumerate() {
            assert!(text.len() <= MAX_MESSAGE_BYTES, "part {} is {} bytes", i + 1, text.len());
            let m: serde_json::Value = serde_json::from_str(text).unwrap();
            if messages.len() == 1 {
                return 1;
            }
            assert_eq!((m["part"].as_u64(), m["parts"].as_u64()), (Some(i as u64 + 1), Some(messages.len() as u64)));
            whole.push_str(m["data"].as_str().unwrap());
        }
        let back: serde_json::Value = serde_json::from_str(&whole).unwrap();
        assert_eq!(back["data"], frame.data_json());
        messages.len()
    }

    #[test]
    fn big_frames_split_into_parts_that_reassemble() {
        assert!(split_and_reassemble(&frame_with(json!({"text": "é".repeat(100_000)}))) > 1);
    }

    #[test]
    fn quote_and_newline_heavy_frames_stay_under_the_limit_in_every_part() {
        let minified = json!({"rows": (0..3000).map(|i| json!({"k": i, "v": "x"})).collect::<Vec<_>>()}).to_string();
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&minified).unwrap()).unwrap();
        let escaped_in_code = format!("let s = {};", serde_json::to_string(&minified).unwrap()).repeat(3);
        let controls = "\u{1}\u{2}\"\\\n".repeat(20_000);
        for text in [minified, pretty, escaped_in_code, controls] {
            assert!(split_and_reassemble(&frame_with(json!({"text": text}))) > 1);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn any_frame_splits_into_parts_under_the_limit(
            pattern in "[\"\\\\\n\t\u{1}\u{1f}é😀a-z {}:,]{1,64}",
            times in 1usize..4000,
        ) {
            split_and_reassemble(&frame_with(json!({"text": pattern.repeat(times)})));
        }
    }

    #[test]
    fn tokens_verify_only_when_genuine_and_fresh() {
        let tokens = StreamTokens::new(b"secret".to_vec());
        let claims = StreamClaims {
            run_id: RunId::new(),
            owner: Owner::new("a"),
            expires_at: Utc::now() + chrono::Duration::minutes(5),
            key: None,
        };
        let token = tokens.issue(&claims);
        assert_eq!(tokens.verify(&token, Utc::now()), Some(claims.clone()));
        assert_eq!(tokens.verify(&token, Utc::now() + chrono::Duration::minutes(6)), None, "expired");
        assert_eq!(StreamTokens::new(b"other".to_vec()).verify(&token, Utc::now()), None, "wrong key");
        let (payload, _) = token.split_once('.').unwrap();
        assert_eq!(tokens.verify(&format!("{payload}.00"), Utc::now()), None, "bad signature");
        assert_eq!(tokens.verify("garbage", Utc::now()), None);
    }
}
