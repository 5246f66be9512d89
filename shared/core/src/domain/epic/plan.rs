//! What an epic does next: the rules of the plan, the fix loop, the budget, approvals and
//! rollbacks, applied to what the last step did.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{
    ApprovalMode, ApprovalTrigger, BUDGET_APPROVAL_SHARE, Epic, EpicStatus, MAX_CARRIED_SUMMARY_BYTES, PendingApproval,
    PlanStep, RecordedDecision, RollbackRecord, StepRecord, StepStatus, run_completed,
};
use crate::domain::{Run, RunError, RunId, RunStatus, truncate_bytes};

/// Workflows whose failure sends the epic through the fix loop.
const CHECK_WORKFLOWS: [&str; 2] = ["test", "review"];

/// The answer to the state machine's `Advance`: which of its states comes next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Advance {
    /// Run the step with this index (`RunStep`).
    Run {
        /// The step's index.
        step: usize,
    },
    /// Wait for a decision on the step with this index (`Approval`).
    Approval {
        /// The step's index, which is also the approval's id.
        step: usize,
        /// How long to wait.
        timeout_seconds: u64,
    },
    /// The epic ended well enough for the execution to succeed.
    Done {
        /// How it ended.
        status: EpicStatus,
    },
    /// The epic ended without doing its job: the execution fails.
    Failed {
        /// How it ended.
        status: EpicStatus,
    },
}

/// What comes next: a state of the machine, or first a rollback (git work the service does,
/// then reports with [`Epic::rolled_back`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Answer the state machine with this.
    Go(Advance),
    /// Move the branch back first.
    RollBack(RollbackPlan),
}

/// A rollback to carry out: move the branch from the head the epic knows to a rollback point,
/// refusing if the branch moved meanwhile.
#[derive(Clone, Debug, PartialEq)]
pub struct RollbackPlan {
    /// The step whose rollback point the branch goes back to.
    pub to_step: usize,
    /// That rollback point.
    pub to_commit: String,
    /// The head the branch must still have (the push is lease-protected against it).
    pub expected_head: String,
    /// The status the epic ends in once the branch is back.
    pub then: EpicStatus,
    /// The error the epic ends with (a rollback after a failure keeps the failure's).
    pub error: Option<RunError>,
}

/// What a step's run did, as the epic needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// The run.
    pub run_id: RunId,
    /// How it ended.
    pub status: RunStatus,
    /// Its final text.
    pub result_summary: Option<String>,
    /// Why it did not complete.
    pub error: Option<RunError>,
    /// US dollars.
    pub cost_usd: f64,
    /// Agent turns.
    pub num_turns: u32,
    /// CLI milliseconds.
    pub duration_ms: u64,
    /// The branch head it started from.
    pub base_commit: Option<String>,
    /// What it added.
    pub commits: Vec<String>,
}

impl RunReport {
    /// The report of an ended run.
    pub fn from_run(run: &Run) -> Self {
        Self {
            run_id: run.run_id,
            status: run.status,
            result_summary: run.result_summary.clone(),
            error: run.error.clone(),
            cost_usd: run.cost_usd.unwrap_or(0.0),
            num_turns: run.num_turns.unwrap_or(0),
            duration_ms: run.duration_ms.unwrap_or(0),
            base_commit: run.base_commit.clone(),
            commits: run.commits.clone(),
        }
    }

    /// The run completed and did not report a failure: its result's last `VERDICT:` line (the
    /// check workflows' prompts ask for one) is not `FAIL`.
    pub fn passed(&self) -> bool {
        run_completed(self.status) && !self.result_summary.as_deref().is_some_and(reports_failure)
    }
}

/// True when the text's last `VERDICT:` line says `FAIL`.
pub(crate) fn reports_failure(text: &str) -> bool {
    text.lines()
        .rev()
        .find_map(|line| {
            let line: String = line.chars().filter(|c| !matches!(c, '*' | '`' | '_')).collect();
            let line = line.trim().trim_start_matches('#').trim().to_lowercase();
            line.strip_prefix("verdict:").map(|rest| rest.trim().starts_with("fail"))
        })
        .unwrap_or(false)
}

/// A decision on an approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Go on.
    Approve,
    /// Stop here; nothing more runs.
    Deny,
    /// Re-run the design step with the comment.
    Amend,
    /// Move the branch back to a rollback point and stop.
    Rollback,
}

/// A decision as the approvals API (or Genie) gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The approval decided: its step's index.
    pub approval_id: usize,
    /// What was decided.
    pub decision: DecisionKind,
    /// What the person said (required for `amend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// For `rollback`: the step whose rollback point to go back to (the first run step's
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_step: Option<usize>,
    /// Who decided.
    pub by: String,
}

/// What just happened, as the state machine's `Advance` reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum After {
    /// The execution started.
    Start,
    /// The running step's run ended.
    RunEnded(RunReport),
    /// The running step's task failed with no run outcome: its executor stopped heartbeating,
    /// its time ran out, or its run could not be submitted.
    RunLost(RunError),
    /// The pending approval was decided.
    Decided(Decision),
    /// The pending approval was not decided in time.
    ApprovalTimedOut,
    /// Someone asked for a rollback of an ended epic.
    RollbackRequested {
        /// The step whose rollback point to go back to.
        to_step: usize,
    },
}

impl Epic {
    /// Applies what just happened and says what comes next. Applying an event the epic has
    /// already seen (a redelivery) changes nothing and answers where the epic is.
    pub fn advance(&mut self, after: After, at: DateTime<Utc>) -> Next {
        if self.status.is_terminal() {
            return match after {
                After::RollbackRequested { to_step } => self.plan_rollback(to_step, EpicStatus::RolledBack, None, at),
                _ => Next::Go(self.answer()),
            };
        }
        match after {
            After::Start if self.steps.is_empty() => self.next_step(at),
            After::Start => Next::Go(self.answer()),
            After::RunEnded(report) => self.run_ended(report, at),
            After::RunLost(error) => match self.steps.last_mut() {
                Some(step) if step.status == StepStatus::Running && matches!(step.plan, PlanStep::Run { .. }) => {
                    step.status = StepStatus::TimedOut;
                    step.finished_at = Some(at);
                    step.error = Some(error.clone());
                    self.fail(error, at)
                }
                _ => Next::Go(self.answer()),
            },
            After::Decided(decision) => self.decided(decision, at),
            After::ApprovalTimedOut => {
                let Some(pending) = self.pending_approval.take() else { return Next::Go(self.answer()) };
                if let Some(step) = self.steps.get_mut(pending.approval_id) {
                    step.status = StepStatus::TimedOut;
                    step.finished_at = Some(at);
                }
                let error = RunError::new("approval_timed_out", "no decision was given before the approval's timeout");
                self.end(EpicStatus::TimedOut, Some(error), at);
                Next::Go(self.answer())
            }
            After::RollbackRequested { .. } => Next::Go(self.answer()),
        }
    }

    /// The rollback of `plan` was carried out (`Ok` with the commits it discarded) or refused.
    pub fn rolled_back(
        &mut self,
        plan: RollbackPlan,
        result: Result<Vec<String>, RunError>,
        at: DateTime<Utc>,
    ) -> Advance {
        match result {
            Ok(discarded) => {
                self.rollback = Some(RollbackRecord {
                    to_step: plan.to_step,
                    to_commit: plan.to_commit.clone(),
                    from_commit: plan.expected_head,
                    discarded,
                    at,
                });
                if let Some(step) = self.steps.iter_mut().rev().find(|s| s.head_after.is_some()) {
                    step.head_after = Some(plan.to_commit);
                }
                self.end(plan.then, plan.error, at);
            }
            Err(refused) if self.status.is_terminal() => {
                // A rollback asked for after the end: the epic keeps its ending, and says why
                // the branch was left alone.
                self.error = Some(refused);
                self.touch(at);
            }
            Err(refused) => self.end(EpicStatus::Failed, Some(refused), at),
        }
        self.answer()
    }

    /// Where the epic is, as the state machine's next state.
    pub fn answer(&self) -> Advance {
        match self.status {
            EpicStatus::AwaitingApproval => match &self.pending_approval {
                Some(p) => Advance::Approval { step: p.approval_id, timeout_seconds: self.approval_timeout_seconds },
                None => Advance::Failed { status: EpicStatus::Failed },
            },
            EpicStatus::Running => match self.steps.last() {
                Some(step) if step.status == StepStatus::Running => Advance::Run { step: step.index },
                _ => Advance::Failed { status: EpicStatus::Failed },
            },
            status @ (EpicStatus::Completed | EpicStatus::Denied | EpicStatus::RolledBack | EpicStatus::Cancelled) => {
                Advance::Done { status }
            }
            status @ (EpicStatus::Failed | EpicStatus::TimedOut | EpicStatus::BudgetExhausted) => {
                Advance::Failed { status }
            }
        }
    }

    fn run_ended(&mut self, report: RunReport, at: DateTime<Utc>) -> Next {
        let Some(index) = self
            .steps
            .iter()
            .rposition(|s| s.status == StepStatus::Running && s.run_id.is_some_and(|id| id == report.run_id))
        else {
            return Next::Go(self.answer());
        };
        let passed = report.passed();
        let step = &mut self.steps[index];
        step.status = if passed { StepStatus::Passed } else { StepStatus::Failed };
        step.rollback_point = report.base_commit.clone();
        step.head_after = report.commits.last().cloned().or(report.base_commit.clone());
        step.commits = report.commits.clone();
        step.result_summary = report.result_summary.as_deref().map(|s| truncate_bytes(s, MAX_CARRIED_SUMMARY_BYTES));
        step.error = report.error.clone();
        step.cost_usd = report.cost_usd;
        step.num_turns = report.num_turns;
        step.duration_ms = report.duration_ms;
        step.finished_at = Some(at);
        self.totals.cost_usd += report.cost_usd;
        self.totals.num_turns += report.num_turns;
        self.totals.duration_ms += report.duration_ms;
        let workflow = step.plan.name().to_owned();
        self.touch(at);

        let budget_spent = self.totals.cost_usd >= self.budget_usd;
        let out_of_budget = report.error.as_ref().is_some_and(|e| e.code == "budget_exceeded");
        if !passed {
            if budget_spent || out_of_budget {
                return self.out_of_budget(at);
            }
            if CHECK_WORKFLOWS.contains(&workflow.as_str()) && self.fix_rounds < self.max_fix_rounds {
                self.fix_rounds += 1;
                let reason =
                    format!("fix round {} of {}: the {workflow} step failed", self.fix_rounds, self.max_fix_rounds);
                self.plan.insert(self.cursor, PlanStep::Run { workflow: "fix".into(), reason: Some(reason) });
                self.plan.insert(self.cursor + 1, PlanStep::run(&workflow));
                self.ask_at_budget_threshold();
                return self.next_step(at);
            }
            let error = if CHECK_WORKFLOWS.contains(&workflow.as_str()) && self.max_fix_rounds > 0 {
                let message = format!("the {workflow} step still failed after {} fix rounds", self.fix_rounds);
                RunError::new("fix_rounds_exhausted", message)
            } else {
                let why = report.error.map(|e| format!("{}: {}", e.code, e.message));
                RunError::new(
                    "step_failed",
                    format!("the {workflow} step failed{}", why.map(|w| format!(" ({w})")).unwrap_or_default()),
                )
            };
            return self.fail(error, at);
        }
        let more_runs = self.plan[self.cursor..].iter().any(|s| matches!(s, PlanStep::Run { .. }));
        if more_runs && budget_spent {
            return self.out_of_budget(at);
        }
        if more_runs {
            self.ask_at_budget_threshold();
        }
        self.next_step(at)
    }

    /// Past `BUDGET_APPROVAL_SHARE` of the budget, and not approved yet: an approval comes
    /// before the next step.
    fn ask_at_budget_threshold(&mut self) {
        let threshold = self.totals.cost_usd >= self.budget_usd * BUDGET_APPROVAL_SHARE;
        if threshold && !self.budget_approved && self.plan.get(self.cursor) != Some(&PlanStep::Approval) {
            self.plan.insert(self.cursor, PlanStep::Approval);
        }
    }

    fn decided(&mut self, decision: Decision, at: DateTime<Utc>) -> Next {
        let Some(pending) = self.pending_approval.take_if(|p| p.approval_id == decision.approval_id) else {
            return Next::Go(self.answer());
        };
        self.status = EpicStatus::Running;
        let step = &mut self.steps[pending.approval_id];
        step.status =
            if decision.decision == DecisionKind::Approve { StepStatus::Approved } else { StepStatus::Decided };
        step.decision = Some(RecordedDecision {
            decision: decision.decision,
            comment: decision.comment.clone(),
            by: decision.by.clone(),
            at,
        });
        step.finished_at = Some(at);
        let triggers = step.triggers.clone();
        self.touch(at);
        match decision.decision {
            DecisionKind::Approve => {
                if triggers.contains(&ApprovalTrigger::CostThreshold) {
                    self.budget_approved = true;
                }
                self.next_step(at)
            }
            DecisionKind::Deny => {
                let message = match &decision.comment {
                    Some(comment) => format!("denied by {}: {comment}", decision.by),
                    None => format!("denied by {}", decision.by),
                };
                self.end(EpicStatus::Denied, Some(RunError::new("denied", message)), at);
                Next::Go(self.answer())
            }
            DecisionKind::Amend => {
                let design = self.steps[..pending.approval_id]
                    .iter()
                    .rev()
                    .find_map(|s| match &s.plan {
                        PlanStep::Run { workflow, .. } => Some(workflow.clone()),
                        PlanStep::Approval => None,
                    })
                    .unwrap_or_else(|| "architect".to_owned());
                let comment = decision.comment.unwrap_or_default();
                let reason = format!("amend: {comment}");
                self.plan.insert(self.cursor, PlanStep::Run { workflow: design, reason: Some(reason) });
                self.plan.insert(self.cursor + 1, PlanStep::Approval);
                self.next_step(at)
            }
            DecisionKind::Rollback => {
                let to_step = decision.to_step.unwrap_or_else(|| self.first_run_step().unwrap_or(0));
                self.plan_rollback(to_step, EpicStatus::RolledBack, None, at)
            }
        }
    }

    /// The index of the first run step, whose rollback point is the branch as the epic found it.
    pub fn first_run_step(&self) -> Option<usize> {
        self.steps.iter().find(|s| s.rollback_point.is_some()).map(|s| s.index)
    }

    /// Checks that a rollback to `to_step` can be asked for: the step exists and recorded a
    /// rollback point. `Err` says why not, for the caller.
    pub fn rollback_target(&self, to_step: usize) -> Result<&str, String> {
        match self.steps.get(to_step) {
            None => Err(format!("the epic has no step {to_step}")),
            Some(step) => step
                .rollback_point
                .as_deref()
                .ok_or_else(|| format!("step {to_step} ({}) recorded no rollback point", step.plan.name())),
        }
    }

    fn plan_rollback(&mut self, to_step: usize, then: EpicStatus, error: Option<RunError>, at: DateTime<Utc>) -> Next {
        let (Ok(to_commit), Some(head)) = (self.rollback_target(to_step), self.known_head()) else {
            // Nothing ran that could be undone: the epic just ends.
            if !self.status.is_terminal() {
                self.end(then, error, at);
            }
            return Next::Go(self.answer());
        };
        Next::RollBack(RollbackPlan {
            to_step,
            to_commit: to_commit.to_owned(),
            expected_head: head.to_owned(),
            then,
            error,
        })
    }

    fn out_of_budget(&mut self, at: DateTime<Utc>) -> Next {
        let message = format!("spent {:.4} of a {:.4} USD budget", self.totals.cost_usd, self.budget_usd);
        self.end(EpicStatus::BudgetExhausted, Some(RunError::new("budget_exhausted", message)), at);
        Next::Go(self.answer())
    }

    fn fail(&mut self, error: RunError, at: DateTime<Utc>) -> Next {
        if self.rollback_on_failure
            && let Some(first) = self.first_run_step()
        {
            return self.plan_rollback(first, EpicStatus::Failed, Some(error), at);
        }
        self.end(EpicStatus::Failed, Some(error), at);
        Next::Go(self.answer())
    }

    /// Takes the next plan entry: a run step, or an approval (which in `auto` mode passes by
    /// itself unless a trigger fires); the end of the plan completes the epic.
    fn next_step(&mut self, at: DateTime<Utc>) -> Next {
        loop {
            let Some(plan_step) = self.plan.get(self.cursor).cloned() else {
                self.end(EpicStatus::Completed, None, at);
                return Next::Go(self.answer());
            };
            self.cursor += 1;
            let index = self.steps.len();
            let mut record = StepRecord {
                index,
                plan: plan_step.clone(),
                status: StepStatus::Running,
                run_id: None,
                rollback_point: None,
                head_after: None,
                commits: Vec::new(),
                result_summary: None,
                error: None,
                cost_usd: 0.0,
                num_turns: 0,
                duration_ms: 0,
                triggers: Vec::new(),
                decision: None,
                started_at: at,
                finished_at: None,
            };
            match plan_step {
                PlanStep::Approval => {
                    let triggers = self.triggers_now();
                    if self.approval == ApprovalMode::Auto && triggers.is_empty() {
                        record.status = StepStatus::Approved;
                        record.finished_at = Some(at);
                        record.decision = Some(RecordedDecision {
                            decision: DecisionKind::Approve,
                            comment: Some("approved by the rules: no trigger fired".into()),
                            by: "auto".into(),
                            at,
                        });
                        self.steps.push(record);
                        continue;
                    }
                    let triggers = if triggers.is_empty() { vec![ApprovalTrigger::Manual] } else { triggers };
                    let asked = self.question(&triggers);
                    record.triggers = triggers.clone();
                    self.steps.push(record);
                    self.pending_approval = Some(PendingApproval {
                        approval_id: index,
                        asked,
                        triggers,
                        expires_at: at + Duration::seconds(self.approval_timeout_seconds as i64),
                        task_token: None,
                    });
                    self.status = EpicStatus::AwaitingApproval;
                    self.touch(at);
                    return Next::Go(self.answer());
                }
                PlanStep::Run { .. } => {
                    if self.remaining_budget() <= 0.0 {
                        return self.out_of_budget(at);
                    }
                    self.steps.push(record);
                    self.touch(at);
                    return Next::Go(Advance::Run { step: index });
                }
            }
        }
    }

    /// The triggers that fire now: in what the run steps since the last approval reported, the
    /// budget's threshold, an amendment; plus `manual` in manual mode.
    fn triggers_now(&self) -> Vec<ApprovalTrigger> {
        let since = self.steps.iter().rposition(|s| s.plan == PlanStep::Approval).map_or(0, |i| i + 1);
        let recent = &self.steps[since..];
        let text: String = recent.iter().filter_map(|s| s.result_summary.as_deref()).collect::<Vec<_>>().join("\n");
        let mut triggers = Vec::new();
        if self.approval == ApprovalMode::Manual {
            triggers.push(ApprovalTrigger::Manual);
        }
        triggers.extend(ApprovalTrigger::found_in(&text));
        if recent.iter().any(|s| matches!(&s.plan, PlanStep::Run { reason: Some(r), .. } if r.starts_with("amend:"))) {
            triggers.push(ApprovalTrigger::Amended);
        }
        if !self.budget_approved && self.totals.cost_usd >= self.budget_usd * BUDGET_APPROVAL_SHARE {
            triggers.push(ApprovalTrigger::CostThreshold);
        }
        triggers
    }

    fn question(&self, triggers: &[ApprovalTrigger]) -> String {
        let next = self.plan[self.cursor..].iter().find_map(|s| match s {
            PlanStep::Run { workflow, .. } => Some(workflow.as_str()),
            PlanStep::Approval => None,
        });
        let why: Vec<&str> = triggers.iter().map(|t| t.describe()).collect();
        match next {
            Some(next) => format!("Go on to the {next} step? ({})", why.join("; ")),
            None => format!("Accept the epic's result? ({})", why.join("; ")),
        }
    }
}

/// The run message of step `index`: its header (the workflow, why it is there), the goal, and
/// what the earlier steps produced, newest kept first when it does not all fit.
pub(super) fn step_message(epic: &Epic, index: usize, max_bytes: usize) -> String {
    let Some(step) = epic.steps.get(index) else { return epic.message.clone() };
    let mut header =
        format!("Epic step: {}\nEpic: {} (step {} of the plan)\n", step.plan.name(), epic.title, index + 1);
    if let PlanStep::Run { reason: Some(reason), .. } = &step.plan {
        match reason.strip_prefix("amend: ") {
            Some(comment) => header.push_str(&format!("A reviewer asked to amend the design: {comment}\n")),
            None => header.push_str(&format!("Why this step: {reason}\n")),
        }
    }
    header.push_str(&format!("\nGoal:\n{}\n", epic.message));
    let mut context: Vec<String> = Vec::new();
    for earlier in &epic.steps[..index] {
        let line = match &earlier.plan {
            PlanStep::Approval => match &earlier.decision {
                Some(d) => format!(
                    "- step {}, approval: {} by {}{}",
                    earlier.index + 1,
                    format!("{:?}", d.decision).to_lowercase(),
                    d.by,
                    d.comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
                ),
                None => continue,
            },
            PlanStep::Run { workflow, .. } => {
                let status = match earlier.status {
                    StepStatus::Passed => "passed",
                    StepStatus::Failed => "failed",
                    _ => "did not finish",
                };
                let commits = if earlier.commits.is_empty() {
                    String::new()
                } else {
                    format!("; commits {}", earlier.commits.iter().map(|c| short(c)).collect::<Vec<_>>().join(", "))
                };
                let said =
                    earlier.result_summary.as_deref().map(|s| format!("; it reported:\n{s}")).unwrap_or_default();
                format!("- step {}, {workflow} ({status}){commits}{said}", earlier.index + 1)
            }
        };
        context.push(line);
    }
    let mut message = header;
    if context.is_empty() {
        return truncate_bytes(&message, max_bytes);
    }
    let title = "\nWhat the earlier steps produced:\n";
    // Newest first gets the room; the oldest entries go when it does not all fit.
    let mut kept: Vec<&String> = Vec::new();
    let mut used = message.len() + title.len();
    for line in context.iter().rev() {
        if used + line.len() + 1 > max_bytes {
            break;
        }
        used += line.len() + 1;
        kept.push(line);
    }
    if !kept.is_empty() {
        message.push_str(title);
        for line in kept.into_iter().rev() {
            message.push_str(line);
            message.push('\n');
        }
    }
    truncate_bytes(&message, max_bytes)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
