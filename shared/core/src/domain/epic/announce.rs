//! What a queue caller (Genie) hears about the epics it started: `epic.accepted`, then
//! `epic.approval_requested` whenever a decision is wanted, and one `epic.ended`. Each event's
//! id is stable, so a receiver drops a repeat by it.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Epic, PlanStep};
use crate::domain::ReplyRoute;
use crate::domain::cloud_event::{CloudEvent, types};

fn steps(epic: &Epic) -> Vec<Value> {
    epic.steps
        .iter()
        .map(|s| {
            let kind = if matches!(s.plan, PlanStep::Approval) { "approval" } else { "run" };
            json!({
                "index": s.index, "name": s.plan.name(), "kind": kind, "status": s.status,
                "run_id": s.run_id, "result_summary": s.result_summary,
            })
        })
        .collect()
}

fn correlation(route: &ReplyRoute) -> Value {
    json!(route.correlation_id)
}

/// `epic.accepted`: the request started this epic (or names it, replayed).
pub fn accepted(epic: &Epic, route: &ReplyRoute, now: DateTime<Utc>) -> CloudEvent {
    let data = json!({
        "epic_id": epic.epic_id, "status": epic.status,
        "plan": epic.plan.iter().map(PlanStep::name).collect::<Vec<_>>(),
        "correlation_id": correlation(route),
    });
    let subject = Some(epic.epic_id.to_string());
    CloudEvent::ours(format!("{}.accepted", epic.epic_id), types::EPIC_ACCEPTED, subject, data, now)
}

/// `epic.approval_requested` for the pending approval, if the epic has a reply route and waits.
pub fn approval_requested(epic: &Epic, now: DateTime<Utc>) -> Option<(ReplyRoute, CloudEvent)> {
    let route = epic.reply.clone()?;
    let pending = epic.pending_approval.as_ref()?;
    let data = json!({
        "epic_id": epic.epic_id, "approval_id": pending.approval_id, "asked": pending.asked,
        "triggers": pending.triggers, "expires_at": pending.expires_at, "spent_usd": epic.totals.cost_usd,
        "budget_usd": epic.budget_usd, "steps": steps(epic), "correlation_id": correlation(&route),
    });
    let id = format!("{}.approval.{}", epic.epic_id, pending.approval_id);
    let event = CloudEvent::ours(id, types::EPIC_APPROVAL_REQUESTED, Some(epic.epic_id.to_string()), data, now);
    Some((route, event))
}

/// `epic.ended`, if the epic has a reply route and has ended.
pub fn ended(epic: &Epic, now: DateTime<Utc>) -> Option<(ReplyRoute, CloudEvent)> {
    let route = epic.reply.clone()?;
    if !epic.status.is_terminal() {
        return None;
    }
    let data = json!({
        "epic_id": epic.epic_id, "status": epic.status, "error": epic.error, "totals": epic.totals,
        "steps": steps(epic), "rollback": epic.rollback, "correlation_id": correlation(&route),
    });
    // One ending per execution: a rollback after the end is a new execution with its own ending.
    let id = format!("{}.ended.{}", epic.epic_id, epic.executions);
    Some((route, CloudEvent::ours(id, types::EPIC_ENDED, Some(epic.epic_id.to_string()), data, now)))
}
