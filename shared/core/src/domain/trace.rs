//! Trace correlation: one W3C trace id from the request (or queue event) that asked for a run
//! through its record, its queue message, the executor's log lines, its frames, its replies and
//! its metrics.
//!
//! The id travels as W3C `traceparent` (`00-<trace id>-<span id>-<flags>`). On AWS a request may
//! instead carry X-Ray's `X-Amzn-Trace-Id` (`Root=1-<8 hex>-<24 hex>;…`), whose root is the same
//! 128 bits written differently, so both name one trace.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A trace's id: 32 lowercase hex digits, not all zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceId(String);

impl TraceId {
    /// A new random trace id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id if `text` is one (32 hex digits, not all zero); uppercase is accepted and lowered.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) && text.bytes().any(|b| b != b'0');
        valid.then(|| Self(text.to_ascii_lowercase()))
    }

    /// The root of an X-Ray trace header (`Root=1-5759e988-bd862e3fe1be46a994272793;…`).
    pub fn from_xray(header: &str) -> Option<Self> {
        let root = header.split(';').find_map(|part| part.trim().strip_prefix("Root="))?;
        let mut parts = root.split('-');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("1"), Some(time), Some(random), None) if time.len() == 8 && random.len() == 24 => {
                Self::parse(&format!("{time}{random}"))
            }
            _ => None,
        }
    }

    /// The trace id of a `traceparent` value, if it is a well-formed version-00 (or later) one.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        // Version ff is invalid; version 00 has exactly four fields; later versions may add more.
        let fields_ok = if version == "00" { parts.next().is_none() } else { true };
        let valid = hex(version, 2)
            && !version.eq_ignore_ascii_case("ff")
            && fields_ok
            && hex(parent, 16)
            && parent.bytes().any(|b| b != b'0')
            && hex(flags, 2);
        if valid { Self::parse(trace) } else { None }
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TraceId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value).ok_or_else(|| format!("not a trace id: {value:?}"))
    }
}

impl From<TraceId> for String {
    fn from(id: TraceId) -> Self {
        id.0
    }
}

/// Where a piece of work sits in its trace: the trace, and the span (unit of work) doing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// This unit of work: 16 lowercase hex digits.
    pub span_id: String,
}

impl TraceContext {
    /// A new span of `trace_id`.
    pub fn in_trace(trace_id: TraceId) -> Self {
        let span = uuid::Uuid::new_v4().simple().to_string();
        Self { trace_id, span_id: span[..16].to_owned() }
    }

    /// A new span of a new trace.
    pub fn generate() -> Self {
        Self::in_trace(TraceId::generate())
    }

    /// The trace an incoming request names: its `traceparent` if valid, else X-Ray's header,
    /// else a new trace. The span is always new: it is this service's work.
    pub fn continuing(traceparent: Option<&str>, xray: Option<&str>) -> Self {
        let trace = traceparent.and_then(TraceId::from_traceparent).or_else(|| xray.and_then(TraceId::from_xray));
        trace.map_or_else(Self::generate, Self::in_trace)
    }

    /// The W3C header value naming this span (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_continues_its_trace_with_a_new_span() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::continuing(Some(incoming), None);
        assert_eq!(context.trace_id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(context.span_id, "00f067aa0ba902b7");
        let out = context.traceparent();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && out.ends_with("-01"), "{out}");
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "nonsense",
            "",
        ] {
            let context = TraceContext::continuing(Some(bad), None);
            assert_ne!(context.trace_id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert!(TraceId::parse(context.trace_id.as_str()).is_some());
        }
    }

    #[test]
    fn an_xray_root_names_the_same_trace() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let context = TraceContext::continuing(None, Some(header));
        assert_eq!(context.trace_id.as_str(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(TraceId::from_xray("Root=2-5759e988-bd862e3fe1be46a994272793"), None);
    }

    #[test]
    fn a_trace_id_round_trips_through_json_and_refuses_garbage() {
        let id = TraceId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<TraceId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TraceId>("\"xyz\"").is_err());
    }
}
