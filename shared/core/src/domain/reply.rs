//! Replies to queue callers: where a run's replies go, which queues may receive them, and the
//! reply events themselves — each with a stable id, so a receiver drops duplicates by it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::cloud_event::{CloudEvent, event_digest, types};
use super::{Run, RunStatus, object_keys};

/// Where a queue-submitted run's replies go, recorded with the run so that whoever moves it (the
/// executor, a cancel, the janitor) leads to a reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRoute {
    /// The SQS queue URL replies are sent to.
    pub reply_to: String,
    /// The caller's correlation id, copied into every reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The `id` of the request event.
    pub request_id: String,
}

/// The longest correlation id accepted.
pub const MAX_CORRELATION_ID_LEN: usize = 255;

/// Which queues may receive replies: the deployment's results queue, and the allowlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyPolicy {
    /// Where replies go when a request names no queue (and where refusals of bad routes go).
    pub default_queue: String,
    /// Queue URLs; one ending in `*` allows every URL it is a prefix of.
    pub allowlist: Vec<String>,
}

impl ReplyPolicy {
    /// The queue replies to a request go to: the one it asked for if allowed, the default if it
    /// asked for none; `None` when the asked one is not allowed.
    pub fn route(&self, asked: Option<&str>) -> Option<String> {
        let Some(asked) = asked.filter(|a| !a.is_empty()) else { return Some(self.default_queue.clone()) };
        let allowed = asked == self.default_queue
            || self.allowlist.iter().any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => !prefix.is_empty() && asked.starts_with(prefix),
                None => entry == asked,
            });
        allowed.then(|| asked.to_owned())
    }
}

/// `run.accepted`: the run a request created or, replayed, names; with where to stream it.
pub fn accepted(run: &Run, route: &ReplyRoute, stream: Option<(&str, &str)>, now: DateTime<Utc>) -> CloudEvent {
    let stream = stream.map(|(url, token)| json!({"url": url, "token": token}));
    let data = json!({
        "run_id": run.run_id, "status": run.status, "workflow": run.workflow, "branch": run.branch,
        "session_id": run.session_id, "stream": stream, "correlation_id": route.correlation_id,
    });
    CloudEvent::ours(format!("{}.accepted", run.run_id), types::RUN_ACCEPTED, Some(run.run_id.to_string()), data, now)
        .in_trace(run.trace_id.as_ref())
}

/// `run.rejected`: a request refused, with the code the HTTP API would give. `request` is the
/// refused event when it could be read.
pub fn rejected(
    request: Option<&CloudEvent>,
    correlation_id: Option<&str>,
    code: &str,
    message: &str,
    now: DateTime<Utc>,
) -> CloudEvent {
    let data = json!({
        "request_id": request.map(|r| &r.id), "request_type": request.map(|r| &r.kind),
        "error": {"code": code, "message": message}, "correlation_id": correlation_id,
    });
    // Stable for a request that could be read; one that could not gets a fresh id.
    let id = match request {
        Some(r) => format!("{}.rejected", event_digest(&r.source, &r.id)),
        None => format!("{}.rejected", uuid::Uuid::new_v4()),
    };
    CloudEvent::ours(id, types::RUN_REJECTED, None, data, now)
}

/// What a change of a run (from `old` to `new`) owes its caller: `run.started` when the CLI
/// started, the terminal reply when it ended; nothing for a run without a reply route.
pub fn for_change(old: Option<&Run>, new: &Run, now: DateTime<Utc>) -> Option<(ReplyRoute, CloudEvent)> {
    let route = new.reply.clone()?;
    let was = old.map(|r| r.status);
    let subject = Some(new.run_id.to_string());
    if new.status.is_terminal() && !was.is_some_and(RunStatus::is_terminal) {
        let kind = match new.status {
            RunStatus::Completed => types::RUN_COMPLETED,
            RunStatus::Cancelled => types::RUN_CANCELLED,
            RunStatus::TimedOut => types::RUN_TIMED_OUT,
            _ => types::RUN_FAILED,
        };
        let data = json!({
            "run_id": new.run_id, "status": new.status, "correlation_id": route.correlation_id,
            "result": new.result_summary, "error": new.error, "cost_usd": new.cost_usd, "num_turns": new.num_turns,
            "session_id": new.session_id, "commits": new.commits, "diff_stats": new.diff_stats,
            "duration_ms": new.duration_ms, "log_key": object_keys::run_log(new.run_id),
            "archive_key": new.started_at.map(|_| object_keys::run_archive(new.run_id)),
        });
        let event = CloudEvent::ours(format!("{}.finished", new.run_id), kind, subject, data, now)
            .in_trace(new.trace_id.as_ref());
        return Some((route, event));
    }
    if new.status == RunStatus::Running && was != Some(RunStatus::Running) {
        let data = json!({
            "run_id": new.run_id, "status": new.status, "session_id": new.session_id,
            "correlation_id": route.correlation_id,
        });
        let event = CloudEvent::ours(format!("{}.started", new.run_id), types::RUN_STARTED, subject, data, now)
            .in_trace(new.trace_id.as_ref());
        return Some((route, event));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunOutcome;
    use crate::domain::run::tests::run_in;

    fn routed(status: RunStatus) -> Run {
        let mut run = run_in(status);
        run.reply = Some(ReplyRoute {
            reply_to: "https://sqs/q".into(),
            correlation_id: Some("c-1".into()),
            request_id: "e-1".into(),
        });
        run
    }

    #[test]
    fn replies_go_where_allowed_and_nowhere_else() {
        let policy = ReplyPolicy {
            default_queue: "https://sqs/000/results".into(),
            allowlist: vec!["https://sqs/000/genie-*".into(), "https://sqs/000/exact".into()],
        };
        assert_eq!(policy.route(None).as_deref(), Some("https://sqs/000/results"));
        assert_eq!(policy.route(Some("")).as_deref(), Some("https://sqs/000/results"));
        assert_eq!(policy.route(Some("https://sqs/000/genie-a")).as_deref(), Some("https://sqs/000/genie-a"));
        assert_eq!(policy.route(Some("https://sqs/000/exact")).as_deref(), Some("https://sqs/000/exact"));
        for refused in ["https://sqs/000/exactly", "https://sqs/999/genie-a", "https://sqs/000/other"] {
            assert_eq!(policy.route(Some(refused)), None, "{refused}");
        }
        let open = ReplyPolicy { default_queue: "d".into(), allowlist: vec!["*".into()] };
        assert_eq!(open.route(Some("anything")), None, "a bare * allows nothing");
    }

    #[test]
    fn a_run_owes_started_then_exactly_one_terminal_reply() {
        let queued = routed(RunStatus::Queued);
        let running = routed(RunStatus::Running);
        let (route, started) = for_change(Some(&queued), &running, Utc::now()).unwrap();
        assert_eq!((started.kind.as_str(), route.reply_to.as_str()), (types::RUN_STARTED, "https://sqs/q"));
        assert_eq!(started.data["correlation_id"], "c-1");
        assert!(for_change(Some(&running), &running, Utc::now()).is_none(), "a heartbeat owes nothing");

        let mut done = running.clone();
        done.finish(RunOutcome::failed(crate::domain::RunError::new("cli_error", "boom")), Utc::now()).unwrap();
        let (_, finished) = for_change(Some(&running), &done, Utc::now()).unwrap();
        assert_eq!(finished.kind, types::RUN_FAILED);
        assert_eq!(finished.data["error"]["code"], "cli_error");
        let (_, again) = for_change(Some(&running), &done, Utc::now()).unwrap();
        assert_eq!(again.id, finished.id, "the same reply always has the same id");
        assert!(for_change(Some(&done), &done, Utc::now()).is_none(), "one terminal reply");
        let mut unrouted = done.clone();
        unrouted.reply = None;
        assert!(for_change(Some(&running), &unrouted, Utc::now()).is_none(), "HTTP runs get no replies");
    }
}
