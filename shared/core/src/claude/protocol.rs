//! The frames the CLI prints in stream-json mode that claude-runner acts on.

use serde::Deserialize;
use uuid::Uuid;

use crate::domain::{RunError, RunOutcome, RunStatus, ToolCall};
use crate::ports::ModelUsage;

/// The final `result` frame. Success is judged from it (`subtype`, `is_error`), not from the
/// process exit code.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ResultFrame {
    /// `success`, or the failure kind (`error_max_turns`, `error_during_execution`, …).
    #[serde(default)]
    pub subtype: String,
    /// Set when the run failed, even under a `success` subtype (e.g. an API error).
    #[serde(default)]
    pub is_error: bool,
    /// The final assistant text; on some failures, the error text.
    #[serde(default)]
    pub result: Option<String>,
    /// Model turns the CLI took.
    #[serde(default)]
    pub num_turns: Option<u32>,
    /// What the CLI reports the run cost, in US dollars.
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    /// Wall-clock time the CLI reports for the run, in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Token usage as the CLI reports it, kept as raw JSON.
    #[serde(default)]
    pub usage: Option<serde_json::Value>,
    /// The conversation id the CLI used; on resume it may differ from the one requested.
    #[serde(default)]
    pub session_id: Option<Uuid>,
    /// The CLI's reason for ending the run, when it gives one.
    #[serde(default)]
    pub terminal_reason: Option<String>,
    /// Error messages the CLI lists for a failed run, used when `result` has no text.
    #[serde(default)]
    pub errors: Option<Vec<String>>,
}

/// What the executor learned from one CLI execution.
#[derive(Clone, Debug, Default)]
pub struct CliSummary {
    /// From `system/init`.
    pub session_id: Option<Uuid>,
    /// The `result` frame, if the CLI printed one.
    pub result: Option<ResultFrame>,
    /// The process's exit code; `None` when a signal killed it.
    pub exit_code: Option<i32>,
    /// Last bytes of stderr, for a failure without a `result` frame.
    pub stderr_tail: String,
    /// How many stdout lines (frames) the execution produced.
    pub frames: u64,
    /// Recent tool calls by id, oldest first, bounded.
    calls: Vec<(String, ToolCall)>,
    /// The last tool call whose result was an error.
    failed_call: Option<ToolCall>,
    /// The run's model calls as its model endpoint counted them.
    pub metered: Option<ModelUsage>,
}

/// Tool calls remembered to pair them with their results.
const KEPT_CALLS: usize = 32;

/// Longest result text stored on the run; the whole text is in the frame log.
const SUMMARY_CHARS: usize = 4000;

impl CliSummary {
    /// Takes what matters from a frame: the session id from `system/init`, the `result` frame.
    pub fn observe(&mut self, kind: &str, subtype: Option<&str>, data: &serde_json::Value) {
        match (kind, subtype) {
            ("system", Some("init")) => {
                if let Some(id) = data["session_id"].as_str().and_then(|s| s.parse().ok()) {
                    self.session_id = Some(id);
                }
            }
            ("result", _) => self.result = serde_json::from_value(data.clone()).ok(),
            ("assistant", _) => {
                for block in data["message"]["content"].as_array().into_iter().flatten() {
                    if block["type"] == "tool_use" {
                        let id = block["id"].as_str().unwrap_or_default().to_owned();
                        self.calls.push((id, tool_call(block)));
                        if self.calls.len() > KEPT_CALLS {
                            self.calls.remove(0);
                        }
                    }
                }
            }
            ("user", _) => {
                for block in data["message"]["content"].as_array().into_iter().flatten() {
                    if block["type"] != "tool_result" {
                        continue;
                    }
                    let id = block["tool_use_id"].as_str().unwrap_or_default();
                    let position = self.calls.iter().position(|(call, _)| call == id);
                    let call = position.map(|i| self.calls.remove(i).1);
                    if block["is_error"] == true {
                        self.failed_call = call;
                    }
                }
            }
            _ => {}
        }
    }

    /// The tool call behind a failure: the last one that failed, else the last one still
    /// waiting for its result (what was running when the run was stopped).
    pub fn failing_tool(&self) -> Option<ToolCall> {
        self.failed_call.clone().or_else(|| self.calls.last().map(|(_, call)| call.clone()))
    }

    /// The run's outcome when the CLI ran to its own end (no watchdog, no cancel).
    pub fn outcome(&self) -> RunOutcome {
        let mut outcome = RunOutcome::failed(RunError::new("cli_failed", ""));
        outcome.session_id = self.session_id;
        outcome.exit_code = self.exit_code;
        let Some(result) = &self.result else {
            let detail = self.stderr_tail.trim();
            let why = match self.exit_code {
                Some(0) => "the CLI exited without a result frame".to_owned(),
                Some(code) => format!("the CLI exited with code {code} without a result frame"),
                None => "the CLI was killed by a signal without a result frame".to_owned(),
            };
            let message = if detail.is_empty() { why } else { format!("{why}: {}", truncate(detail, 2000)) };
            outcome.error = Some(RunError::new("cli_exited", message));
            return outcome;
        };
        outcome.session_id = result.session_id.or(self.session_id);
        outcome.cost_usd = result.total_cost_usd;
        outcome.num_turns = result.num_turns;
        outcome.duration_ms = result.duration_ms;
        outcome.usage_json = result.usage.as_ref().map(|u| u.to_string());
        outcome.result_summary = result.result.as_deref().map(|r| truncate(r, SUMMARY_CHARS));
        if result.subtype == "success" && !result.is_error {
            outcome.status = RunStatus::Completed;
            outcome.error = None;
            return outcome;
        }
        let code = match result.subtype.as_str() {
            "error_max_turns" => "max_turns_exhausted".to_owned(),
            // `--max-budget-usd` stopped it.
            "error_max_budget_usd" => "budget_exceeded".to_owned(),
            // `success` with `is_error`: the CLI ended the turn on an API or request error.
            "" | "success" => "cli_error".to_owned(),
            other => format!("cli_{other}"),
        };
        let message = match (&result.result, &result.errors) {
            (Some(text), _) if !text.is_empty() => truncate(text, 2000),
            (_, Some(errors)) if !errors.is_empty() => truncate(&errors.join("; "), 2000),
            _ if code == "max_turns_exhausted" => "the run used all of its turns without finishing".to_owned(),
            _ => format!("the CLI reported {}", result.subtype),
        };
        outcome.error = Some(RunError::new(code, message).with_tool(self.failing_tool()));
        // The CLI saw an API error; the run's endpoint refused because the budget was spent.
        if self.metered.as_ref().is_some_and(|usage| usage.refused_over_budget > 0) {
            outcome.error = Some(RunError::new(
                "budget_exceeded",
                "the run's model calls cost twice its budget; its model endpoint refused the next one",
            ));
        }
        outcome
    }
}

/// A `tool_use` block as a [`ToolCall`]: its command (`Bash`) and the files it names.
fn tool_call(block: &serde_json::Value) -> ToolCall {
    let input = &block["input"];
    let files = ["file_path", "path", "notebook_path"]
        .iter()
        .filter_map(|key| input[*key].as_str())
        .map(|path| truncate(path, 300))
        .collect();
    ToolCall {
        name: truncate(block["name"].as_str().unwrap_or("unknown"), 100),
        command: input["command"].as_str().map(|c| truncate(c, 500)),
        files,
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary_with(result: serde_json::Value) -> CliSummary {
        let mut s = CliSummary { exit_code: Some(0), ..CliSummary::default() };
        let session = Uuid::now_v7();
        s.observe(
            "system",
            Some("init"),
            &json!({"type": "system", "subtype": "init", "session_id": session.to_string()}),
        );
        s.observe("result", result["subtype"].as_str(), &result);
        s
    }

    fn tool_use(id: &str, name: &str, input: serde_json::Value) -> serde_json::Value {
        json!({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": id, "name": name, "input": input}]}})
    }

    fn tool_result(id: &str, is_error: bool) -> serde_json::Value {
        json!({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": id, "is_error": is_error}]}})
    }

    #[test]
    fn a_failure_names_the_tool_call_that_failed_or_was_left_running() {
        let mut s = CliSummary::default();
        s.observe("assistant", None, &tool_use("t1", "Edit", json!({"file_path": "/w/src/lib.rs"})));
        s.observe("user", None, &tool_result("t1", false));
        s.observe("assistant", None, &tool_use("t2", "Bash", json!({"command": "cargo test"})));
        s.observe("user", None, &tool_result("t2", true));
        let failed = s.failing_tool().unwrap();
        assert_eq!((failed.name.as_str(), failed.command.as_deref()), ("Bash", Some("cargo test")));
        let result = json!({"type": "result", "subtype": "error_during_execution", "is_error": true});
        s.observe("result", Some("error_during_execution"), &result);
        assert_eq!(s.outcome().error.unwrap().tool, Some(failed));

        // Stopped while a call waits for its result: that call is named.
        let mut hanging = CliSummary::default();
        hanging.observe("assistant", None, &tool_use("t3", "Bash", json!({"command": "sleep 999"})));
        assert_eq!(hanging.failing_tool().unwrap().command.as_deref(), Some("sleep 999"));
        // Nothing failed and nothing waits: no tool to blame.
        let mut clean = CliSummary::default();
        clean.observe("assistant", None, &tool_use("t4", "Read", json!({"file_path": "a.rs"})));
        clean.observe("user", None, &tool_result("t4", false));
        assert_eq!(clean.failing_tool(), None);
    }

    #[test]
    fn success_is_read_from_the_result_frame() {
        let s = summary_with(json!({"type": "result", "subtype": "success", "is_error": false, "result": "All done",
            "num_turns": 3, "total_cost_usd": 0.12, "usage": {"input_tokens": 5}, "duration_ms": 900}));
        let o = s.outcome();
        assert_eq!(o.status, RunStatus::Completed);
        assert_eq!((o.num_turns, o.cost_usd, o.duration_ms), (Some(3), Some(0.12), Some(900)));
        assert_eq!(o.result_summary.as_deref(), Some("All done"));
        assert!(o.session_id.is_some() && o.error.is_none());
    }

    #[test]
    fn max_turns_is_a_failure_with_its_own_code() {
        let s = summary_with(json!({"type": "result", "subtype": "error_max_turns", "is_error": true, "num_turns": 2}));
        let o = s.outcome();
        assert_eq!(o.status, RunStatus::Failed);
        assert_eq!(o.error.unwrap().code, "max_turns_exhausted");
        assert_eq!(o.num_turns, Some(2));
    }

    #[test]
    fn an_error_result_fails_even_when_the_exit_code_is_zero() {
        let s =
            summary_with(json!({"type": "result", "subtype": "success", "is_error": true, "result": "API Error: 500"}));
        let o = s.outcome();
        assert_eq!(o.status, RunStatus::Failed);
        assert_eq!(o.error.unwrap().message, "API Error: 500");
        let s = summary_with(json!({"type": "result", "subtype": "error_during_execution", "is_error": true,
            "errors": ["No conversation found with session ID x"]}));
        let err = s.outcome().error.unwrap();
        assert_eq!(err.code, "cli_error_during_execution");
        assert!(err.message.contains("No conversation found"));
    }

    #[test]
    fn no_result_frame_is_a_failure_that_quotes_stderr() {
        let s = CliSummary { exit_code: Some(2), stderr_tail: "boom".into(), ..CliSummary::default() };
        let err = s.outcome().error.unwrap();
        assert_eq!(err.code, "cli_exited");
        assert!(err.message.contains("code 2") && err.message.contains("boom"));
    }
}
