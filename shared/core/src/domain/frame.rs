//! Frames: every stdout line of a run, numbered without gaps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RunId;

/// One stdout line of a run, as stored in the frame log and sent to subscribers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// The run whose output this is.
    pub run_id: RunId,
    /// 1, 2, 3, … per run, assigned by the executor; `after_seq = 0` means "from the start".
    pub seq: u64,
    /// When the executor read the line.
    pub ts: DateTime<Utc>,
    /// The CLI's own message type (`system`, `assistant`, `user`, `result`, `stream_event`, …,
    /// kept verbatim), `raw` for a line that is not JSON, `end` for the closing frame.
    pub kind: String,
    /// The CLI's `subtype` (e.g. `init`, `success`), when the line has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    /// The payload: the JSON line (a raw line wrapped as `{"line": …}`), or a truncation record.
    pub data: FrameData,
    /// The run's trace, stored with the frame's row; not part of the frame's JSON.
    #[serde(skip)]
    pub trace_id: Option<super::TraceId>,
}

/// A frame's payload. `Truncated` replaces a line above the frame cap: its size and a prefix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FrameData {
    /// A line over the frame cap, kept only as its size and first bytes.
    Truncated {
        /// Always `true`: tells a truncated payload apart in the JSON, as the enum is untagged.
        truncated: bool,
        /// The full line's length in bytes.
        original_bytes: usize,
        /// The line's first bytes (up to 64 KiB), as lossy UTF-8.
        prefix: String,
    },
    /// A whole line: the CLI's JSON object, or `{"line": …}` for a line that is not JSON.
    Json(serde_json::Value),
}

/// Bytes of a truncated line kept as its prefix.
const TRUNCATED_PREFIX_BYTES: usize = 64 * 1024;

impl Frame {
    /// A frame from one stdout line (without its newline). `total_bytes` is the line's real
    /// length; when it exceeds what was kept, the frame is marked truncated.
    pub fn from_line(run_id: RunId, seq: u64, line: &[u8], total_bytes: usize, ts: DateTime<Utc>) -> Self {
        if total_bytes > line.len() {
            let cut = line.len().min(TRUNCATED_PREFIX_BYTES);
            let prefix = String::from_utf8_lossy(&line[..cut]).into_owned();
            let kind = sniff_type(&line[..cut]).unwrap_or_else(|| "raw".to_owned());
            let data = FrameData::Truncated { truncated: true, original_bytes: total_bytes, prefix };
            return Self { run_id, seq, ts, kind, subtype: None, data, trace_id: None };
        }
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(value) if value.is_object() => {
                let kind = value["type"].as_str().unwrap_or("unknown").to_owned();
                let subtype = value["subtype"].as_str().map(str::to_owned);
                Self { run_id, seq, ts, kind, subtype, data: FrameData::Json(value), trace_id: None }
            }
            _ => {
                let text = String::from_utf8_lossy(line).into_owned();
                let data = FrameData::Json(serde_json::json!({ "line": text }));
                Self { run_id, seq, ts, kind: "raw".to_owned(), subtype: None, data, trace_id: None }
            }
        }
    }

    /// The same frame, in the run's trace.
    pub fn in_trace(self, trace_id: Option<super::TraceId>) -> Self {
        Self { trace_id, ..self }
    }

    /// Whether the line was over the cap and only its prefix was kept.
    pub fn is_truncated(&self) -> bool {
        matches!(self.data, FrameData::Truncated { .. })
    }

    /// The payload as JSON (what Postgres' `jsonb` column stores).
    pub fn data_json(&self) -> serde_json::Value {
        match &self.data {
            FrameData::Json(v) => v.clone(),
            truncated => serde_json::to_value(truncated).unwrap_or_default(),
        }
    }
}

/// The `"type"` of a JSON line too big to parse whole, read from its first bytes.
fn sniff_type(prefix: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(prefix);
    let at = text.find("\"type\":\"")? + 8;
    let end = text[at..].find('"')?;
    Some(text[at..at + end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_the_cli_type_verbatim() {
        let id = RunId::new();
        let f = Frame::from_line(id, 1, br#"{"type":"system","subtype":"init","session_id":"s"}"#, 51, Utc::now());
        assert_eq!((f.kind.as_str(), f.subtype.as_deref()), ("system", Some("init")));
        let novel = Frame::from_line(id, 2, br#"{"type":"stream_event","event":{}}"#, 34, Utc::now());
        assert_eq!(novel.kind, "stream_event");
        assert!(!novel.is_truncated());
    }

    #[test]
    fn non_json_lines_become_raw_frames() {
        let f = Frame::from_line(RunId::new(), 3, b"Warning: something", 18, Utc::now());
        assert_eq!(f.kind, "raw");
        assert_eq!(f.data_json()["line"], "Warning: something");
    }

    #[test]
    fn over_cap_lines_are_marked_truncated_with_their_size() {
        let kept = br#"{"type":"user","message":{"content":"aaaa"#;
        let f = Frame::from_line(RunId::new(), 4, kept, 20_000_000, Utc::now());
        assert!(f.is_truncated());
        assert_eq!(f.kind, "user");
        let data = f.data_json();
        assert_eq!(data["truncated"], true);
        assert_eq!(data["original_bytes"], 20_000_000);
    }

    #[test]
    fn frames_round_trip_as_json() {
        let f = Frame::from_line(RunId::new(), 5, br#"{"type":"result","subtype":"success"}"#, 37, Utc::now());
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Frame>(&text).unwrap(), f);
    }
}
