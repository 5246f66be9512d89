//! CloudEvents 1.0 in structured JSON mode: the envelope of every message on the Genie queues,
//! in and out (`docs/genie.md`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The only CloudEvents version spoken.
pub const SPEC_VERSION: &str = "1.0";
/// `source` of every event this service sends.
pub const OUR_SOURCE: &str = "claude-runner";

/// Event types, in and out.
pub mod types {
    /// Run a workflow.
    pub const RUN_REQUESTED: &str = "dev.claude-runner.run.requested.v1";
    /// Cancel a run.
    pub const CANCEL_REQUESTED: &str = "dev.claude-runner.cancel.requested.v1";
    /// A request created (or, replayed, names) a run.
    pub const RUN_ACCEPTED: &str = "dev.claude-runner.run.accepted.v1";
    /// The run's CLI started.
    pub const RUN_STARTED: &str = "dev.claude-runner.run.started.v1";
    /// A request was refused.
    pub const RUN_REJECTED: &str = "dev.claude-runner.run.rejected.v1";
    /// The run ended completed.
    pub const RUN_COMPLETED: &str = "dev.claude-runner.run.completed.v1";
    /// The run ended failed.
    pub const RUN_FAILED: &str = "dev.claude-runner.run.failed.v1";
    /// The run ended cancelled.
    pub const RUN_CANCELLED: &str = "dev.claude-runner.run.cancelled.v1";
    /// The run ended timed out.
    pub const RUN_TIMED_OUT: &str = "dev.claude-runner.run.timed_out.v1";
    /// Start an epic.
    pub const EPIC_REQUESTED: &str = "dev.claude-runner.epic.requested.v1";
    /// Decide an epic's pending approval.
    pub const EPIC_DECISION_REQUESTED: &str = "dev.claude-runner.epic.decision.requested.v1";
    /// A request started (or, replayed, names) an epic.
    pub const EPIC_ACCEPTED: &str = "dev.claude-runner.epic.accepted.v1";
    /// An epic waits for a decision.
    pub const EPIC_APPROVAL_REQUESTED: &str = "dev.claude-runner.epic.approval_requested.v1";
    /// An epic ended.
    pub const EPIC_ENDED: &str = "dev.claude-runner.epic.ended.v1";
}

/// One CloudEvent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique per `source`; for requests, the idempotency key.
    pub id: String,
    /// Who sent it.
    pub source: String,
    /// What it is (`types`).
    #[serde(rename = "type")]
    pub kind: String,
    /// What it is about (a run id in replies; free for requests, e.g. `epic:<id>:<step>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// `application/json` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The schema `data` follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// W3C trace context (the CloudEvents distributed-tracing extension): the trace the event
    /// belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Why a message is not a usable CloudEvent: its `code` is what the rejection carries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EnvelopeError {
    /// `invalid_json` or `invalid_event`.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

impl CloudEvent {
    /// Parses and checks a structured-mode event: JSON, `specversion` 1.0, non-empty `id`,
    /// `source` and `type`, and an object (or no) `data`.
    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| EnvelopeError { code: "invalid_json", message: format!("the message is not JSON: {e}") })?;
        let invalid = |message: String| EnvelopeError { code: "invalid_event", message };
        let event: CloudEvent = serde_json::from_value(value)
            .map_err(|e| invalid(format!("the message is not a CloudEvent in structured JSON: {e}")))?;
        if event.specversion != SPEC_VERSION {
            return Err(invalid(format!("specversion must be \"{SPEC_VERSION}\", not {:?}", event.specversion)));
        }
        for (name, value) in [("id", &event.id), ("source", &event.source), ("type", &event.kind)] {
            if value.trim().is_empty() {
                return Err(invalid(format!("`{name}` must not be empty")));
            }
        }
        if !(event.data.is_object() || event.data.is_null()) {
            return Err(invalid("`data` must be a JSON object".into()));
        }
        Ok(event)
    }

    /// One of ours: `source` `claude-runner`, JSON data, the time given.
    pub fn ours(id: String, kind: &str, subject: Option<String>, data: serde_json::Value, now: DateTime<Utc>) -> Self {
        Self {
            specversion: SPEC_VERSION.into(),
            id,
            source: OUR_SOURCE.into(),
            kind: kind.into(),
            subject,
            time: Some(now),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            traceparent: None,
            data,
        }
    }

    /// The same event, in `trace` (a new span of it) when there is one.
    pub fn in_trace(self, trace: Option<&super::TraceId>) -> Self {
        let traceparent = trace.map(|id| super::TraceContext::in_trace(id.clone()).traceparent());
        Self { traceparent, ..self }
    }

    /// The trace the sender put the event in, if it named a valid one.
    pub fn trace_id(&self) -> Option<super::TraceId> {
        self.traceparent.as_deref().and_then(super::TraceId::from_traceparent)
    }

    /// A string field of `data`, if present.
    pub fn data_str(&self, name: &str) -> Option<&str> {
        self.data.get(name).and_then(serde_json::Value::as_str)
    }

    /// The idempotency key of a request: the same `source` and `id` always give the same key, in
    /// the form `Idempotency-Key` accepts.
    pub fn idempotency_key(&self) -> String {
        format!("cloudevent-{}", event_digest(&self.source, &self.id))
    }
}

/// A digest naming one event of one sender: CloudEvents ids are unique per `source` only.
pub fn event_digest(source: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("{source}\n{id}").as_bytes()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::validate_idempotency_key;

    fn request() -> serde_json::Value {
        json!({"specversion": "1.0", "id": "e-1", "source": "urn:genie", "type": types::RUN_REQUESTED,
               "time": "2026-11-28T10:00:00Z", "data": {"workflow": "implement"}})
    }

    #[test]
    fn a_structured_event_parses_and_keeps_its_attributes() {
        let event = CloudEvent::parse(&request().to_string()).unwrap();
        assert_eq!((event.id.as_str(), event.kind.as_str()), ("e-1", types::RUN_REQUESTED));
        assert_eq!(event.data_str("workflow"), Some("implement"));
        assert!(event.time.is_some());
    }

    #[test]
    fn broken_envelopes_say_what_is_wrong() {
        assert_eq!(CloudEvent::parse("not json").unwrap_err().code, "invalid_json");
        for (field, value) in [
            ("specversion", json!("0.3")),
            ("id", json!("")),
            ("source", json!(" ")),
            ("type", json!("")),
            ("time", json!("yesterday")),
            ("data", json!([1])),
        ] {
            let mut event = request();
            event[field] = value;
            let err = CloudEvent::parse(&event.to_string()).unwrap_err();
            assert_eq!(err.code, "invalid_event", "{field}: {err}");
        }
        let mut event = request();
        event.as_object_mut().unwrap().remove("id");
        assert_eq!(CloudEvent::parse(&event.to_string()).unwrap_err().code, "invalid_event");
    }

    #[test]
    fn the_idempotency_key_is_stable_per_source_and_id_and_acceptable() {
        let event = CloudEvent::parse(&request().to_string()).unwrap();
        let key = event.idempotency_key();
        assert_eq!(key, CloudEvent::parse(&request().to_string()).unwrap().idempotency_key());
        assert!(validate_idempotency_key(&key).is_ok());
        let mut other = request();
        other["source"] = json!("urn:someone-else");
        assert_ne!(key, CloudEvent::parse(&other.to_string()).unwrap().idempotency_key());
    }
}
