//! What the use cases measure about runs, as metric events (the ports' `Metrics` records them).

use crate::domain::{Run, RunStatus, millis};
use crate::ports::{MetricEvent, MetricKind};

/// What an ended run measured, sliced by workflow and status: recorded once per run, by the
/// projector, which sees every run end whoever ended it.
pub fn run_ended(run: &Run) -> MetricEvent {
    let failed = matches!(run.status, RunStatus::Failed | RunStatus::TimedOut);
    let over_budget = run.error.as_ref().is_some_and(|e| e.code == "budget_exceeded");
    let timings = run.timings.clone().unwrap_or_default();
    let end_to_end = run.finished_at.and_then(|at| (at - run.created_at).to_std().ok()).and_then(millis);
    let usage: serde_json::Value =
        run.usage_json.as_deref().and_then(|u| serde_json::from_str(u).ok()).unwrap_or_default();
    let tokens = |field: &str| usage[field].as_u64().unwrap_or(0);
    MetricEvent::new()
        .dimension("Workflow", &run.workflow)
        .dimension("Status", run.status.as_str())
        .count("RunsFinished", 1)
        .count("RunsFailed", u64::from(failed))
        .count("BudgetOverruns", u64::from(over_budget))
        .millis("WorkspaceSetup", timings.workspace_ms)
        .millis("CliTime", timings.cli_ms)
        .millis("EndToEnd", end_to_end)
        .with("CostUsd", run.cost_usd.unwrap_or(0.0), MetricKind::Amount)
        .count(
            "InputTokens",
            tokens("input_tokens") + tokens("cache_read_input_tokens") + tokens("cache_creation_input_tokens"),
        )
        .count("OutputTokens", tokens("output_tokens"))
        .of_run(run.run_id, run.trace_id.as_ref())
}
