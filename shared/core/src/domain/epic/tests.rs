//! The epic's rules, case by case: the request, the plan, approvals, the fix loop, the budget,
//! rollbacks, idempotence and the messages steps get.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::plan::reports_failure;
use super::request::{MAX_EPIC_BUDGET_USD, MAX_PLAN_STEPS, MAX_TITLE_CHARS};
use super::*;
use crate::domain::{
    DEFAULT_MAX_MESSAGE_BYTES, IntakeLimits, Owner, RepositoryPolicy, RunError, RunId, RunStatus, ValidationError,
    WorkflowRegistry,
};

const GOAL: &str = "Add full-text search to the catalogue";

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
}

fn policy() -> RepositoryPolicy {
    RepositoryPolicy::new(
        Some("https://git.example.com/acme/app.git".into()),
        vec!["https://git.example.com/acme/*".into()],
    )
}

/// A valid request body, with `extra`'s fields on top.
fn body(extra: Value) -> Value {
    let mut body = json!({"title": "Search", "message": GOAL, "branch": "epic/search", "budget_usd": 10.0});
    for (key, value) in extra.as_object().expect("extra fields are an object") {
        body[key.as_str()] = value.clone();
    }
    body
}

fn request(extra: Value) -> EpicRequest {
    serde_json::from_value(body(extra)).unwrap()
}

fn validate(request: EpicRequest) -> Result<ValidEpicRequest, ValidationError> {
    request.validate(&WorkflowRegistry::builtin(), &IntakeLimits::default(), &policy())
}

fn check(extra: Value) -> Result<ValidEpicRequest, ValidationError> {
    validate(request(extra))
}

fn code(extra: Value) -> &'static str {
    check(extra.clone()).map(|_| ()).expect_err(&format!("{extra} should be refused")).code()
}

fn epic(extra: Value) -> Epic {
    Epic::start(Owner::new("alice"), check(extra).unwrap(), at())
}

fn run_index(next: &Next) -> usize {
    match next {
        Next::Go(Advance::Run { step }) => *step,
        other => panic!("expected a run step, got {other:?}"),
    }
}

fn approval_index(next: &Next) -> usize {
    match next {
        Next::Go(Advance::Approval { step, .. }) => *step,
        other => panic!("expected an approval, got {other:?}"),
    }
}

fn rollback_plan(next: Next) -> RollbackPlan {
    match next {
        Next::RollBack(plan) => plan,
        other => panic!("expected a rollback, got {other:?}"),
    }
}

/// A report of a run that completed on the head the epic knows (or `base`), added one commit
/// (`commit-<step>`) and cost 1 USD.
fn report(epic: &Epic, index: usize, run_id: RunId) -> RunReport {
    RunReport {
        run_id,
        status: RunStatus::Completed,
        result_summary: Some(format!("{} finished", epic.steps[index].plan.name())),
        error: None,
        cost_usd: 1.0,
        num_turns: 3,
        duration_ms: 1_000,
        base_commit: Some(epic.known_head().unwrap_or("base").to_owned()),
        commits: vec![format!("commit-{index}")],
    }
}

/// Submits a run for the step `next` asks to run, and ends it with the default report as
/// `edit` changes it.
fn run(epic: &mut Epic, next: Next, edit: impl FnOnce(&mut RunReport)) -> Next {
    let index = run_index(&next);
    let run_id = RunId::new();
    epic.step_submitted(index, run_id, at());
    let mut report = report(epic, index, run_id);
    edit(&mut report);
    epic.advance(After::RunEnded(report), at())
}

fn passes(_: &mut RunReport) {}

fn says(summary: &'static str) -> impl FnOnce(&mut RunReport) {
    move |r| r.result_summary = Some(summary.to_owned())
}

fn costs(cost_usd: f64) -> impl FnOnce(&mut RunReport) {
    move |r| r.cost_usd = cost_usd
}

fn check_fails(r: &mut RunReport) {
    r.result_summary = Some("12 passed, 1 failed\nVERDICT: FAIL".into());
}

fn decision(approval_id: usize, decision: DecisionKind, comment: Option<&str>) -> Decision {
    Decision { approval_id, decision, comment: comment.map(str::to_owned), to_step: None, by: "alice".into() }
}

fn decide(epic: &mut Epic, next: Next, kind: DecisionKind, comment: Option<&str>) -> Next {
    let approval_id = approval_index(&next);
    epic.advance(After::Decided(decision(approval_id, kind, comment)), at())
}

fn approve(epic: &mut Epic, next: Next) -> Next {
    decide(epic, next, DecisionKind::Approve, None)
}

fn go(advance: Advance) -> Next {
    Next::Go(advance)
}

fn done(status: EpicStatus) -> Next {
    go(Advance::Done { status })
}

fn failed(status: EpicStatus) -> Next {
    go(Advance::Failed { status })
}

fn run_of(workflow: &str, reason: &str) -> PlanStep {
    PlanStep::Run { workflow: workflow.into(), reason: Some(reason.into()) }
}

// --- the request -----------------------------------------------------------------------------

#[test]
fn a_request_without_steps_gets_the_default_plan_and_defaults() {
    let ok = check(json!({"title": "  Search  "})).unwrap();
    assert_eq!(
        ok.plan,
        vec![
            PlanStep::run("architect"),
            PlanStep::Approval,
            PlanStep::run("implement"),
            PlanStep::run("test"),
            PlanStep::run("review"),
        ]
    );
    assert_eq!(ok.approval, ApprovalMode::Manual);
    assert_eq!(ok.approval_timeout_seconds, 86_400);
    assert_eq!(ok.approval_timeout_seconds, DEFAULT_APPROVAL_TIMEOUT_SECONDS);
    assert_eq!(ok.max_fix_rounds, 2);
    assert_eq!(ok.max_fix_rounds, DEFAULT_MAX_FIX_ROUNDS);
    assert!(!ok.rollback_on_failure);
    assert_eq!(ok.max_turns, None);
    assert_eq!(ok.title, "Search", "the title is trimmed");
    assert_eq!(ok.repository_url, "https://git.example.com/acme/app.git");
    assert_eq!(ok.branch, "epic/search");
}

#[test]
fn the_request_sets_what_it_names() {
    let ok = check(json!({
        "steps": ["implement", "approval", "test"],
        "approval": "auto",
        "approval_timeout_seconds": 3600,
        "max_fix_rounds": 5,
        "rollback_on_failure": true,
        "max_turns": 40,
        "repository_url": "https://git.example.com/acme/lib.git",
    }))
    .unwrap();
    assert_eq!(ok.plan, vec![PlanStep::run("implement"), PlanStep::Approval, PlanStep::run("test")]);
    assert_eq!(ok.approval, ApprovalMode::Auto);
    assert_eq!(ok.approval_timeout_seconds, 3600);
    assert_eq!(ok.max_fix_rounds, 5);
    assert!(ok.rollback_on_failure);
    assert_eq!(ok.max_turns, Some(40));
    assert_eq!(ok.repository_url, "https://git.example.com/acme/lib.git");
}

#[test]
fn pr_true_appends_a_pr_step_and_pr_false_does_not() {
    let with = check(json!({"pr": true})).unwrap();
    assert_eq!(with.plan.len(), 6);
    assert_eq!(with.plan.last(), Some(&PlanStep::run("pr")));
    let custom = check(json!({"steps": ["implement"], "pr": true})).unwrap();
    assert_eq!(custom.plan, vec![PlanStep::run("implement"), PlanStep::run("pr")]);
    let without = check(json!({"pr": false})).unwrap();
    assert!(!without.plan.contains(&PlanStep::run("pr")));
}

#[test]
fn a_step_that_names_no_workflow_is_refused() {
    for steps in [json!(["architect", "deploy"]), json!(["Implement"]), json!(["approvals", "implement"])] {
        assert_eq!(code(json!({ "steps": steps })), "invalid_steps", "{steps}");
    }
}

#[test]
fn a_plan_needs_a_workflow_and_at_most_the_most_steps() {
    assert_eq!(code(json!({"steps": []})), "invalid_steps", "an empty plan");
    assert_eq!(code(json!({"steps": ["approval"]})), "invalid_steps", "only an approval");
    let most = vec!["implement"; MAX_PLAN_STEPS];
    assert_eq!(check(json!({ "steps": most })).unwrap().plan.len(), MAX_PLAN_STEPS);
    let too_many = vec!["implement"; MAX_PLAN_STEPS + 1];
    assert_eq!(code(json!({ "steps": too_many })), "invalid_steps");
    assert_eq!(code(json!({ "steps": most, "pr": true })), "invalid_steps", "the pr step counts too");
}

#[test]
fn two_approvals_in_a_row_are_refused() {
    assert_eq!(code(json!({"steps": ["architect", "approval", "approval", "implement"]})), "invalid_steps");
    assert!(check(json!({"steps": ["approval", "architect", "approval", "implement", "approval"]})).is_ok());
}

#[test]
fn the_budget_must_be_positive_finite_and_bounded() {
    for bad in [json!(0), json!(0.0), json!(-1), json!(-0.01), json!(MAX_EPIC_BUDGET_USD + 0.01), json!(1e9)] {
        assert_eq!(code(json!({ "budget_usd": bad })), "invalid_budget", "{bad}");
    }
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut req = request(json!({}));
        req.budget_usd = bad;
        assert_eq!(validate(req).unwrap_err().code(), "invalid_budget", "{bad}");
    }
    assert_eq!(check(json!({"budget_usd": 0.01})).unwrap().budget_usd, 0.01);
    assert_eq!(check(json!({ "budget_usd": MAX_EPIC_BUDGET_USD })).unwrap().budget_usd, MAX_EPIC_BUDGET_USD);
}

#[test]
fn the_title_must_be_one_to_the_most_characters() {
    for bad in [String::new(), "   \n\t".into(), "x".repeat(MAX_TITLE_CHARS + 1), "a\u{0}b".into()] {
        assert_eq!(code(json!({ "title": bad })), "invalid_title", "{bad:?}");
    }
    assert!(check(json!({ "title": "x".repeat(MAX_TITLE_CHARS) })).is_ok());
    assert!(check(json!({ "title": "é".repeat(MAX_TITLE_CHARS) })).is_ok(), "characters, not bytes");
}

#[test]
fn the_approval_timeout_is_one_second_to_a_week() {
    for bad in [json!(0), json!(-1), json!(MAX_APPROVAL_TIMEOUT_SECONDS + 1)] {
        assert_eq!(code(json!({ "approval_timeout_seconds": bad })), "invalid_approval_timeout", "{bad}");
    }
    assert_eq!(MAX_APPROVAL_TIMEOUT_SECONDS, 7 * 86_400);
    for good in [1, MAX_APPROVAL_TIMEOUT_SECONDS] {
        assert_eq!(check(json!({ "approval_timeout_seconds": good })).unwrap().approval_timeout_seconds, good);
    }
}

#[test]
fn fix_rounds_are_zero_to_five() {
    for bad in [json!(6), json!(-1), json!(1000)] {
        assert_eq!(code(json!({ "max_fix_rounds": bad })), "invalid_fix_rounds", "{bad}");
    }
    for good in [0, MAX_FIX_ROUNDS] {
        assert_eq!(check(json!({ "max_fix_rounds": good })).unwrap().max_fix_rounds, good);
    }
}

#[test]
fn a_deployment_without_a_fix_workflow_accepts_only_zero_fix_rounds() {
    let builtin = WorkflowRegistry::builtin();
    let registry = WorkflowRegistry::from_workflows([builtin.get("implement").unwrap().clone()]);
    let without_fix = |extra: Value| {
        request(extra).validate(&registry, &IntakeLimits::default(), &policy()).map(|ok| ok.max_fix_rounds)
    };
    assert_eq!(without_fix(json!({"steps": ["implement"]})).unwrap_err().code(), "invalid_fix_rounds");
    assert_eq!(without_fix(json!({"steps": ["implement"], "max_fix_rounds": 0})), Ok(0));
}

#[test]
fn the_goal_may_use_half_the_intake_limit() {
    let limits = IntakeLimits { max_message_bytes: 20 };
    let with = |message: String| {
        request(json!({ "message": message })).validate(&WorkflowRegistry::builtin(), &limits, &policy())
    };
    assert!(with("x".repeat(10)).is_ok());
    assert_eq!(with("x".repeat(11)).unwrap_err(), ValidationError::MessageTooLarge { actual: 11, max: 10 });
    let over_default = "x".repeat(DEFAULT_MAX_MESSAGE_BYTES / 2 + 1);
    assert_eq!(code(json!({ "message": over_default })), "message_too_large");
}

#[test]
fn the_message_branch_repository_and_turns_follow_the_run_rules() {
    assert_eq!(code(json!({"message": "  "})), "empty_message");
    assert_eq!(code(json!({"message": "a\u{0}b"})), "invalid_message");
    assert_eq!(code(json!({"branch": "a..b"})), "invalid_branch");
    assert_eq!(code(json!({"repository_url": "https://evil.example.com/x.git"})), "repository_not_allowed");
    for bad in [0, -1, 1_000_000] {
        assert_eq!(code(json!({ "max_turns": bad })), "invalid_max_turns", "{bad}");
    }
}

#[test]
fn unknown_fields_are_refused_when_parsing() {
    let err = serde_json::from_value::<EpicRequest>(body(json!({"budget": 3}))).unwrap_err();
    assert!(err.to_string().contains("budget"), "{err}");
    assert!(serde_json::from_value::<EpicRequest>(body(json!({"approval": "sometimes"}))).is_err());
}

// --- a manual epic ---------------------------------------------------------------------------

#[test]
fn a_new_epic_is_running_at_version_one_with_nothing_done() {
    let epic = epic(json!({}));
    assert_eq!((epic.status, epic.version, epic.cursor), (EpicStatus::Running, 1, 0));
    assert!(epic.steps.is_empty() && epic.pending_approval.is_none() && epic.finished_at.is_none());
    assert_eq!(epic.owner, Owner::new("alice"));
    assert_eq!(epic.remaining_budget(), 10.0);
    assert_eq!(epic.known_head(), None);
    assert_eq!(epic.first_run_step(), None);
}

#[test]
fn a_manual_epic_runs_its_plan_in_order_and_completes() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    assert_eq!(next, go(Advance::Run { step: 0 }));
    assert_eq!(epic.steps[0].plan, PlanStep::run("architect"));
    assert_eq!(epic.steps[0].status, StepStatus::Running);

    let next = run(&mut epic, next, passes);
    assert_eq!(next, go(Advance::Approval { step: 1, timeout_seconds: 86_400 }));
    assert_eq!(epic.status, EpicStatus::AwaitingApproval);
    let pending = epic.pending_approval.clone().expect("an approval is pending");
    assert_eq!(pending.approval_id, 1);
    assert_eq!(pending.triggers, vec![ApprovalTrigger::Manual]);
    assert!(pending.asked.contains("implement"), "it asks about the next step: {}", pending.asked);
    assert_eq!(pending.expires_at, at() + Duration::seconds(86_400));
    assert_eq!(epic.steps[1].triggers, vec![ApprovalTrigger::Manual]);

    let next = approve(&mut epic, next);
    assert_eq!(next, go(Advance::Run { step: 2 }));
    assert_eq!(epic.status, EpicStatus::Running);
    assert!(epic.pending_approval.is_none());
    assert_eq!(epic.steps[2].plan, PlanStep::run("implement"));

    let next = run(&mut epic, next, passes);
    assert_eq!(next, go(Advance::Run { step: 3 }));
    assert_eq!(epic.steps[3].plan, PlanStep::run("test"));
    let next = run(&mut epic, next, passes);
    assert_eq!(next, go(Advance::Run { step: 4 }));
    assert_eq!(epic.steps[4].plan, PlanStep::run("review"));
    let next = run(&mut epic, next, passes);
    assert_eq!(next, done(EpicStatus::Completed));

    assert_eq!(epic.status, EpicStatus::Completed);
    assert_eq!(epic.error, None);
    assert_eq!(epic.finished_at, Some(at()));
    assert_eq!(epic.cursor, epic.plan.len());
    assert_eq!(epic.totals, Totals { cost_usd: 4.0, num_turns: 12, duration_ms: 4_000 });
    assert_eq!(epic.remaining_budget(), 6.0);
    let statuses: Vec<StepStatus> = epic.steps.iter().map(|s| s.status).collect();
    use StepStatus::{Approved, Passed};
    assert_eq!(statuses, vec![Passed, Approved, Passed, Passed, Passed]);

    let approval = &epic.steps[1];
    let decided = approval.decision.as_ref().expect("the decision is recorded");
    assert_eq!((decided.decision, decided.by.as_str()), (DecisionKind::Approve, "alice"));
    assert_eq!(approval.run_id, None);
    assert_eq!(approval.rollback_point, None);

    // Each run step went back to where the one before it left the branch.
    let mut head = "base".to_owned();
    for step in epic.steps.iter().filter(|s| matches!(s.plan, PlanStep::Run { .. })) {
        assert!(step.run_id.is_some());
        assert_eq!(step.rollback_point.as_deref(), Some(head.as_str()), "step {}", step.index);
        let last = format!("commit-{}", step.index);
        assert_eq!(step.head_after.as_deref(), Some(last.as_str()));
        assert_eq!(step.commits, vec![last.clone()]);
        assert_eq!(step.result_summary.as_deref(), Some(format!("{} finished", step.plan.name()).as_str()));
        assert_eq!((step.cost_usd, step.num_turns, step.duration_ms), (1.0, 3, 1_000));
        head = last;
    }
    assert_eq!(epic.known_head(), Some("commit-4"));
    assert_eq!(epic.first_run_step(), Some(0));
}

#[test]
fn a_run_step_without_commits_leaves_the_head_where_it_found_it() {
    let mut epic = epic(json!({"steps": ["review", "implement"]}));
    let next = epic.advance(After::Start, at());
    run(&mut epic, next, |r| r.commits.clear());
    assert_eq!(epic.steps[0].rollback_point.as_deref(), Some("base"));
    assert_eq!(epic.steps[0].head_after.as_deref(), Some("base"));
    assert!(epic.steps[0].commits.is_empty());
}

#[test]
fn a_long_result_is_cut_on_a_character_boundary_before_it_is_carried() {
    let mut epic = epic(json!({"steps": ["architect", "implement"]}));
    let long = "€".repeat(1_000); // 3,000 bytes, 3 bytes a character
    let next = epic.advance(After::Start, at());
    let summary = long.clone();
    run(&mut epic, next, move |r| r.result_summary = Some(summary));
    let kept = epic.steps[0].result_summary.as_deref().unwrap();
    assert!(kept.len() <= MAX_CARRIED_SUMMARY_BYTES && kept.len() > MAX_CARRIED_SUMMARY_BYTES - 3, "{}", kept.len());
    assert!(long.starts_with(kept));
}

#[test]
fn denying_an_approval_ends_the_epic_denied_and_runs_nothing_more() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = decide(&mut epic, next, DecisionKind::Deny, Some("not this quarter"));
    assert_eq!(next, done(EpicStatus::Denied));
    assert_eq!(epic.status, EpicStatus::Denied);
    let error = epic.error.clone().unwrap();
    assert_eq!(error.code, "denied");
    assert!(error.message.contains("alice") && error.message.contains("not this quarter"), "{}", error.message);
    assert_eq!(epic.steps.len(), 2);
    assert_eq!(epic.steps[1].status, StepStatus::Decided);
    assert_eq!(epic.steps[1].decision.as_ref().unwrap().comment.as_deref(), Some("not this quarter"));
    assert!(epic.pending_approval.is_none());
    assert_eq!(epic.finished_at, Some(at()));
}

#[test]
fn amending_reruns_the_design_with_the_comment_and_asks_again() {
    let comment = "Use PostgreSQL full-text search, not Elasticsearch";
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = decide(&mut epic, next, DecisionKind::Amend, Some(comment));
    assert_eq!(next, go(Advance::Run { step: 2 }));
    assert_eq!(epic.steps[1].status, StepStatus::Decided);
    let amended = run_of("architect", &format!("amend: {comment}"));
    assert_eq!(epic.steps[2].plan, amended);
    assert_eq!(
        epic.plan,
        vec![
            PlanStep::run("architect"),
            PlanStep::Approval,
            amended,
            PlanStep::Approval,
            PlanStep::run("implement"),
            PlanStep::run("test"),
            PlanStep::run("review"),
        ]
    );
    let message = epic.step_message(2, 100_000);
    assert!(message.contains("Epic step: architect"), "{message}");
    assert!(message.contains(comment), "the re-run design step gets the comment: {message}");

    let next = run(&mut epic, next, passes);
    assert_eq!(next, go(Advance::Approval { step: 3, timeout_seconds: 86_400 }));
    assert_eq!(
        epic.pending_approval.as_ref().unwrap().triggers,
        vec![ApprovalTrigger::Manual, ApprovalTrigger::Amended]
    );
    let next = approve(&mut epic, next);
    assert_eq!(next, go(Advance::Run { step: 4 }));
    assert_eq!(epic.steps[4].plan, PlanStep::run("implement"));
}

#[test]
fn an_amended_design_waits_for_a_person_even_in_auto_mode() {
    let mut epic = epic(json!({"approval": "auto"}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, says("Design: a new endpoint GET /search"));
    let next = decide(&mut epic, next, DecisionKind::Amend, Some("no new endpoint; extend GET /items"));
    let next = run(&mut epic, next, says("Design: extend GET /items with ?q="));
    assert_eq!(approval_index(&next), 3);
    assert_eq!(epic.pending_approval.as_ref().unwrap().triggers, vec![ApprovalTrigger::Amended]);
}

#[test]
fn a_rollback_decision_moves_the_branch_back_to_where_the_epic_found_it() {
    let mut epic = epic(json!({"steps": ["architect", "implement", "approval", "test"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = run(&mut epic, next, passes);
    let next = decide(&mut epic, next, DecisionKind::Rollback, Some("wrong direction"));
    let plan = rollback_plan(next);
    assert_eq!(
        plan,
        RollbackPlan {
            to_step: 0,
            to_commit: "base".into(),
            expected_head: "commit-1".into(),
            then: EpicStatus::RolledBack,
            error: None,
        }
    );
    assert!(!epic.status.is_terminal(), "the epic ends once the branch is back");
    assert_eq!(epic.steps[2].status, StepStatus::Decided);

    let answer = epic.rolled_back(plan, Ok(vec!["commit-1".into(), "commit-0".into()]), at());
    assert_eq!(answer, Advance::Done { status: EpicStatus::RolledBack });
    assert_eq!(epic.status, EpicStatus::RolledBack);
    assert_eq!(epic.error, None);
    assert_eq!(
        epic.rollback,
        Some(RollbackRecord {
            to_step: 0,
            to_commit: "base".into(),
            from_commit: "commit-1".into(),
            discarded: vec!["commit-1".into(), "commit-0".into()],
            at: at(),
        })
    );
    assert_eq!(epic.known_head(), Some("base"), "the epic knows where the branch is now");
    assert_eq!(epic.steps.len(), 3, "the test step never ran");
}

#[test]
fn a_rollback_decision_may_name_the_step_to_go_back_to() {
    let mut epic = epic(json!({"steps": ["architect", "implement", "approval", "test"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = run(&mut epic, next, passes);
    let approval_id = approval_index(&next);
    let decision = Decision { to_step: Some(1), ..decision(approval_id, DecisionKind::Rollback, None) };
    let plan = rollback_plan(epic.advance(After::Decided(decision), at()));
    assert_eq!((plan.to_step, plan.to_commit.as_str(), plan.expected_head.as_str()), (1, "commit-0", "commit-1"));
}

#[test]
fn a_refused_rollback_fails_the_epic_with_the_reason() {
    let mut epic = epic(json!({"steps": ["architect", "implement", "approval", "test"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = run(&mut epic, next, passes);
    let plan = rollback_plan(decide(&mut epic, next, DecisionKind::Rollback, None));
    let refused = RunError::new("branch_moved", "the branch is at 9f3c, not commit-1");
    let answer = epic.rolled_back(plan, Err(refused.clone()), at());
    assert_eq!(answer, Advance::Failed { status: EpicStatus::Failed });
    assert_eq!(epic.status, EpicStatus::Failed);
    assert_eq!(epic.error, Some(refused));
    assert_eq!(epic.rollback, None);
    assert_eq!(epic.known_head(), Some("commit-1"), "the branch was left alone");
}

#[test]
fn a_rollback_decision_with_nothing_run_just_ends_the_epic() {
    let mut epic = epic(json!({"steps": ["approval", "implement"]}));
    let next = epic.advance(After::Start, at());
    let next = decide(&mut epic, next, DecisionKind::Rollback, None);
    assert_eq!(next, done(EpicStatus::RolledBack));
    assert_eq!(epic.rollback, None);
}

#[test]
fn an_ended_epic_can_be_rolled_back_and_keeps_its_ending_when_that_is_refused() {
    let mut epic = epic(json!({"steps": ["implement"]}));
    let next = epic.advance(After::Start, at());
    assert_eq!(run(&mut epic, next, passes), done(EpicStatus::Completed));

    let mut refused = epic.clone();
    let plan = rollback_plan(refused.advance(After::RollbackRequested { to_step: 0 }, at()));
    let error = RunError::new("branch_moved", "someone pushed");
    assert_eq!(refused.rolled_back(plan, Err(error.clone()), at()), Advance::Done { status: EpicStatus::Completed });
    assert_eq!((refused.status, refused.error), (EpicStatus::Completed, Some(error)));

    let plan = rollback_plan(epic.advance(After::RollbackRequested { to_step: 0 }, at()));
    assert_eq!((plan.to_commit.as_str(), plan.expected_head.as_str()), ("base", "commit-0"));
    assert_eq!(plan.then, EpicStatus::RolledBack);
    assert_eq!(
        epic.rolled_back(plan, Ok(vec!["commit-0".into()]), at()),
        Advance::Done { status: EpicStatus::RolledBack }
    );
    assert_eq!(epic.status, EpicStatus::RolledBack);
}

#[test]
fn a_rollback_target_must_exist_and_have_a_rollback_point() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    run(&mut epic, next, passes);
    assert_eq!(epic.rollback_target(0), Ok("base"));
    assert!(epic.rollback_target(1).unwrap_err().contains("approval"), "an approval has no rollback point");
    assert!(epic.rollback_target(9).is_err());
}

#[test]
fn a_rollback_request_on_a_live_epic_changes_nothing() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let before = epic.clone();
    assert_eq!(epic.advance(After::RollbackRequested { to_step: 0 }, at()), next);
    assert_eq!(epic, before);
}

// --- auto approvals --------------------------------------------------------------------------

#[test]
fn in_auto_mode_an_approval_with_no_trigger_passes_by_itself() {
    let mut epic = epic(json!({"approval": "auto"}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, says("Design: a search index updated on write"));
    assert_eq!(next, go(Advance::Run { step: 2 }));
    assert_eq!(epic.steps[2].plan, PlanStep::run("implement"));
    let approval = &epic.steps[1];
    assert_eq!(approval.status, StepStatus::Approved);
    assert!(approval.triggers.is_empty());
    let decided = approval.decision.as_ref().unwrap();
    assert_eq!((decided.decision, decided.by.as_str()), (DecisionKind::Approve, "auto"));
    assert!(epic.pending_approval.is_none());
    assert_eq!(epic.status, EpicStatus::Running);
}

#[test]
fn in_auto_mode_a_design_mentioning_a_database_migration_waits_for_a_person() {
    let mut epic = epic(json!({"approval": "auto"}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, says("Design: add a tsvector column; needs a Database Migration."));
    assert_eq!(next, go(Advance::Approval { step: 1, timeout_seconds: 86_400 }));
    assert_eq!(epic.status, EpicStatus::AwaitingApproval);
    assert_eq!(epic.pending_approval.as_ref().unwrap().triggers, vec![ApprovalTrigger::DatabaseChange]);
    assert_eq!(epic.steps[1].triggers, vec![ApprovalTrigger::DatabaseChange]);
    assert_eq!(approve(&mut epic, next), go(Advance::Run { step: 2 }));
}

#[test]
fn an_auto_approval_at_the_end_of_the_plan_completes_the_epic() {
    let mut epic = epic(json!({"approval": "auto", "steps": ["implement", "approval"]}));
    let next = epic.advance(After::Start, at());
    assert_eq!(run(&mut epic, next, passes), done(EpicStatus::Completed));
    assert_eq!(epic.steps[1].status, StepStatus::Approved);
}

#[test]
fn a_manual_approval_at_the_end_asks_to_accept_the_result() {
    let mut epic = epic(json!({"steps": ["implement", "approval"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    assert!(epic.pending_approval.as_ref().unwrap().asked.starts_with("Accept"));
    assert_eq!(approve(&mut epic, next), done(EpicStatus::Completed));
}

#[test]
fn triggers_are_found_once_each_in_any_case() {
    let text = "A BREAKING CHANGE to auth: new endpoint, schema change and a migration; security review";
    assert_eq!(
        ApprovalTrigger::found_in(text),
        vec![
            ApprovalTrigger::BreakingChange,
            ApprovalTrigger::NewEndpoint,
            ApprovalTrigger::SecurityChange,
            ApprovalTrigger::DatabaseChange,
        ]
    );
    assert!(ApprovalTrigger::found_in("rename a local variable").is_empty());
}

// --- the fix loop ----------------------------------------------------------------------------

#[test]
fn a_completed_test_run_reporting_verdict_fail_goes_through_fix_and_test_again() {
    let mut epic = epic(json!({"steps": ["implement", "test"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = run(&mut epic, next, check_fails);
    assert_eq!(next, go(Advance::Run { step: 2 }));
    assert_eq!(epic.steps[1].status, StepStatus::Failed, "a completed run that reports a failure fails its step");
    assert_eq!(epic.fix_rounds, 1);
    let fix = run_of("fix", "fix round 1 of 2: the test step failed");
    assert_eq!(epic.plan, vec![PlanStep::run("implement"), PlanStep::run("test"), fix.clone(), PlanStep::run("test")]);
    assert_eq!(epic.steps[2].plan, fix);
    let message = epic.step_message(2, 100_000);
    assert!(message.contains("Why this step: fix round 1 of 2"), "{message}");
    assert!(
        message.contains("test (failed)") && message.contains("VERDICT: FAIL"),
        "the fix sees the failure: {message}"
    );

    let next = run(&mut epic, next, passes);
    assert_eq!(next, go(Advance::Run { step: 3 }));
    assert_eq!(epic.steps[3].plan, PlanStep::run("test"));
    assert_eq!(run(&mut epic, next, passes), done(EpicStatus::Completed));
    assert_eq!(epic.fix_rounds, 1);
}

#[test]
fn a_failing_review_goes_through_the_fix_loop_too() {
    let mut epic = epic(json!({"steps": ["review"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, says("Findings: unchecked input\nVERDICT: FAIL"));
    assert_eq!(run_index(&next), 1);
    assert_eq!(epic.steps[1].plan, run_of("fix", "fix round 1 of 2: the review step failed"));
}

#[test]
fn after_max_fix_rounds_failures_the_epic_fails_with_fix_rounds_exhausted() {
    let mut epic = epic(json!({"steps": ["implement", "test"]}));
    let next = epic.advance(After::Start, at());
    let mut next = run(&mut epic, next, passes);
    for round in 1..=2 {
        next = run(&mut epic, next, check_fails);
        assert_eq!(epic.fix_rounds, round);
        assert_eq!(epic.steps.last().unwrap().plan.name(), "fix");
        next = run(&mut epic, next, passes);
        assert_eq!(epic.steps.last().unwrap().plan.name(), "test");
    }
    let next = run(&mut epic, next, check_fails);
    assert_eq!(next, failed(EpicStatus::Failed));
    assert_eq!(epic.status, EpicStatus::Failed);
    assert_eq!(epic.error.as_ref().unwrap().code, "fix_rounds_exhausted");
    assert_eq!(epic.fix_rounds, 2);
    assert_eq!(epic.steps.len(), 6, "implement, then test and fix twice, then the last test");
}

#[test]
fn with_no_fix_rounds_a_failing_check_fails_the_epic_at_once() {
    let mut epic = epic(json!({"steps": ["implement", "test"], "max_fix_rounds": 0}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    assert_eq!(run(&mut epic, next, check_fails), failed(EpicStatus::Failed));
    assert_eq!(epic.error.as_ref().unwrap().code, "step_failed");
    assert_eq!(epic.plan.len(), 2);
}

#[test]
fn a_failing_implement_step_fails_the_epic_without_a_fix_loop() {
    let mut epic = epic(json!({"steps": ["implement", "test"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, |r| {
        r.status = RunStatus::Failed;
        r.error = Some(RunError::new("cli_failed", "exit code 1"));
        r.commits.clear();
    });
    assert_eq!(next, failed(EpicStatus::Failed));
    let error = epic.error.clone().unwrap();
    assert_eq!(error.code, "step_failed");
    assert!(error.message.contains("implement") && error.message.contains("cli_failed"), "{}", error.message);
    assert_eq!(epic.steps.len(), 1);
    assert_eq!(epic.steps[0].status, StepStatus::Failed);
    assert_eq!(epic.steps[0].error.as_ref().unwrap().code, "cli_failed");
    assert_eq!(epic.plan, vec![PlanStep::run("implement"), PlanStep::run("test")]);
    assert_eq!(epic.fix_rounds, 0);
}

#[test]
fn rollback_on_failure_moves_the_branch_back_when_a_step_fails_for_good() {
    let mut epic = epic(json!({"steps": ["architect", "implement"], "rollback_on_failure": true}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = run(&mut epic, next, |r| {
        r.status = RunStatus::Failed;
        r.error = Some(RunError::new("cli_failed", "exit code 1"));
    });
    let plan = rollback_plan(next);
    assert_eq!((plan.to_step, plan.to_commit.as_str()), (0, "base"));
    assert_eq!(plan.expected_head, "commit-1", "the failed run's own commit is the head to move from");
    assert_eq!(plan.then, EpicStatus::Failed);
    assert_eq!(plan.error.as_ref().unwrap().code, "step_failed");
    assert!(!epic.status.is_terminal());

    let answer = epic.rolled_back(plan, Ok(vec!["commit-1".into(), "commit-0".into()]), at());
    assert_eq!(answer, Advance::Failed { status: EpicStatus::Failed });
    assert_eq!(epic.error.as_ref().unwrap().code, "step_failed", "the failure is kept");
    assert_eq!(epic.rollback.as_ref().unwrap().to_commit, "base");
}

// --- the budget ------------------------------------------------------------------------------

#[test]
fn spending_the_budget_with_runs_to_go_ends_the_epic_budget_exhausted() {
    let mut epic = epic(json!({"steps": ["implement", "test"], "budget_usd": 2.0}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, costs(2.0));
    assert_eq!(next, failed(EpicStatus::BudgetExhausted));
    assert_eq!(epic.status, EpicStatus::BudgetExhausted);
    assert_eq!(epic.error.as_ref().unwrap().code, "budget_exhausted");
    assert_eq!(epic.steps.len(), 1);
    assert_eq!(epic.steps[0].status, StepStatus::Passed);
    assert_eq!(epic.remaining_budget(), 0.0);
}

#[test]
fn the_last_step_overspending_still_completes_the_epic() {
    let mut epic = epic(json!({"steps": ["implement"], "budget_usd": 2.0}));
    let next = epic.advance(After::Start, at());
    assert_eq!(run(&mut epic, next, costs(2.5)), done(EpicStatus::Completed));
    assert_eq!(epic.remaining_budget(), 0.0, "never negative");
}

#[test]
fn a_failing_step_that_spent_the_budget_ends_budget_exhausted_not_in_a_fix_loop() {
    let mut epic = epic(json!({"steps": ["test"], "budget_usd": 1.0}));
    let next = epic.advance(After::Start, at());
    assert_eq!(run(&mut epic, next, check_fails), failed(EpicStatus::BudgetExhausted));
    assert_eq!(epic.plan.len(), 1);
}

#[test]
fn a_run_stopped_for_its_budget_ends_the_epic_budget_exhausted() {
    let mut epic = epic(json!({"steps": ["implement", "test"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = run(&mut epic, next, |r| {
        r.status = RunStatus::Failed;
        r.error = Some(RunError::new("budget_exceeded", "the run's budget ran out"));
        r.cost_usd = 0.5;
    });
    assert_eq!(next, failed(EpicStatus::BudgetExhausted));
    assert_eq!(epic.error.as_ref().unwrap().code, "budget_exhausted");
    assert_eq!(epic.plan.len(), 2, "no fix round for a run that ran out of money");
    assert_eq!(epic.fix_rounds, 0);
}

#[test]
fn passing_80_percent_of_the_budget_asks_once_even_in_auto_mode() {
    let mut epic = epic(json!({"approval": "auto", "steps": ["implement", "test", "review"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, costs(8.5));
    assert_eq!(next, go(Advance::Approval { step: 1, timeout_seconds: 86_400 }));
    assert_eq!(
        epic.plan,
        vec![PlanStep::run("implement"), PlanStep::Approval, PlanStep::run("test"), PlanStep::run("review")]
    );
    assert_eq!(epic.pending_approval.as_ref().unwrap().triggers, vec![ApprovalTrigger::CostThreshold]);
    assert!(!epic.budget_approved);

    let next = approve(&mut epic, next);
    assert!(epic.budget_approved);
    assert_eq!(next, go(Advance::Run { step: 2 }));
    let next = run(&mut epic, next, costs(0.5));
    assert_eq!(next, go(Advance::Run { step: 3 }), "approved once, not asked again");
    assert_eq!(run(&mut epic, next, costs(0.5)), done(EpicStatus::Completed));
    assert_eq!(epic.plan.len(), 4);
}

#[test]
fn the_budget_threshold_joins_an_approval_already_next_instead_of_adding_one() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, costs(8.5));
    assert_eq!(approval_index(&next), 1);
    assert_eq!(epic.plan.len(), 5);
    assert_eq!(
        epic.pending_approval.as_ref().unwrap().triggers,
        vec![ApprovalTrigger::Manual, ApprovalTrigger::CostThreshold]
    );
    let next = approve(&mut epic, next);
    assert!(epic.budget_approved);
    let next = run(&mut epic, next, costs(0.5));
    assert_eq!(next, go(Advance::Run { step: 3 }));
}

#[test]
fn the_budget_threshold_is_not_asked_about_when_no_run_is_left() {
    let mut epic = epic(json!({"steps": ["implement"]}));
    let next = epic.advance(After::Start, at());
    assert_eq!(run(&mut epic, next, costs(9.0)), done(EpicStatus::Completed));
}

#[test]
fn passing_80_percent_on_a_failing_check_asks_before_the_fix() {
    let mut epic = epic(json!({"approval": "auto", "steps": ["implement", "test"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = run(&mut epic, next, |r| {
        check_fails(r);
        r.cost_usd = 7.5;
    });
    assert_eq!(approval_index(&next), 2, "8.5 of 10 USD spent: a person looks before more is spent");
    assert_eq!(epic.pending_approval.as_ref().unwrap().triggers, vec![ApprovalTrigger::CostThreshold]);
}

// --- idempotence -----------------------------------------------------------------------------

#[test]
fn starting_twice_answers_the_same() {
    let mut epic = epic(json!({}));
    let first = epic.advance(After::Start, at());
    let before = epic.clone();
    assert_eq!(epic.advance(After::Start, at()), first);
    assert_eq!(epic, before);
}

#[test]
fn run_ended_for_a_run_that_is_not_the_running_steps_changes_nothing() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    epic.step_submitted(0, RunId::new(), at());
    let before = epic.clone();
    let stranger = report(&epic, 0, RunId::new());
    assert_eq!(epic.advance(After::RunEnded(stranger), at()), next);
    assert_eq!(epic, before, "same version, same everything");
}

#[test]
fn run_ended_before_the_run_was_submitted_changes_nothing() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let before = epic.clone();
    let early = report(&epic, 0, RunId::new());
    assert_eq!(epic.advance(After::RunEnded(early), at()), next);
    assert_eq!(epic, before);
}

#[test]
fn a_redelivered_run_ended_answers_the_same_and_changes_nothing() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let run_id = RunId::new();
    epic.step_submitted(0, run_id, at());
    let ended = report(&epic, 0, run_id);
    let answer = epic.advance(After::RunEnded(ended.clone()), at());
    assert_eq!(approval_index(&answer), 1);
    assert_ne!(answer, next);
    let before = epic.clone();
    assert_eq!(epic.advance(After::RunEnded(ended), at()), answer);
    assert_eq!(epic, before);
    assert_eq!(epic.totals.cost_usd, 1.0, "counted once");
}

#[test]
fn a_decision_on_an_approval_that_is_not_pending_changes_nothing() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let before = epic.clone();
    for stranger in [0, 2, 99] {
        assert_eq!(epic.advance(After::Decided(decision(stranger, DecisionKind::Deny, None)), at()), next);
        assert_eq!(epic, before, "approval {stranger}");
    }

    let approved = approve(&mut epic, next);
    let before = epic.clone();
    let again = epic.advance(After::Decided(decision(1, DecisionKind::Deny, None)), at());
    assert_eq!(again, approved, "a second decision on a decided approval is not applied");
    assert_eq!(epic, before);
}

#[test]
fn an_approval_timeout_after_the_decision_changes_nothing() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let next = approve(&mut epic, next);
    let before = epic.clone();
    assert_eq!(epic.advance(After::ApprovalTimedOut, at()), next);
    assert_eq!(epic, before);
}

#[test]
fn an_ended_epic_answers_its_end_to_everything_but_a_rollback_request() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let end = decide(&mut epic, next, DecisionKind::Deny, None);
    assert_eq!(end, done(EpicStatus::Denied));
    let before = epic.clone();
    let events = [
        After::Start,
        After::RunEnded(report(&epic, 0, epic.steps[0].run_id.unwrap())),
        After::RunLost(RunError::new("heartbeat_timeout", "gone")),
        After::Decided(decision(1, DecisionKind::Approve, None)),
        After::ApprovalTimedOut,
    ];
    for event in events {
        let label = format!("{event:?}");
        assert_eq!(epic.advance(event, at()), end, "{label}");
        assert_eq!(epic, before, "{label}");
    }
}

// --- lost runs and timeouts ------------------------------------------------------------------

#[test]
fn a_lost_run_fails_the_epic_with_the_error_given() {
    let mut epic = epic(json!({}));
    epic.advance(After::Start, at());
    epic.step_submitted(0, RunId::new(), at());
    let lost = RunError::new("heartbeat_timeout", "the executor stopped heartbeating");
    assert_eq!(epic.advance(After::RunLost(lost.clone()), at()), failed(EpicStatus::Failed));
    assert_eq!(epic.status, EpicStatus::Failed);
    assert_eq!(epic.error, Some(lost.clone()));
    assert_eq!(epic.steps[0].status, StepStatus::TimedOut);
    assert_eq!(epic.steps[0].error, Some(lost));
    assert_eq!(epic.steps[0].finished_at, Some(at()));
}

#[test]
fn a_lost_run_while_an_approval_waits_changes_nothing() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    let before = epic.clone();
    assert_eq!(epic.advance(After::RunLost(RunError::new("heartbeat_timeout", "x")), at()), next);
    assert_eq!(epic, before);
}

#[test]
fn an_approval_not_decided_in_time_times_the_epic_out() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    run(&mut epic, next, passes);
    assert_eq!(epic.advance(After::ApprovalTimedOut, at()), failed(EpicStatus::TimedOut));
    assert_eq!(epic.status, EpicStatus::TimedOut);
    assert_eq!(epic.error.as_ref().unwrap().code, "approval_timed_out");
    assert_eq!(epic.steps[1].status, StepStatus::TimedOut);
    assert!(epic.pending_approval.is_none());
    assert_eq!(
        epic.advance(After::Decided(decision(1, DecisionKind::Approve, None)), at()),
        failed(EpicStatus::TimedOut)
    );
}

#[test]
fn an_approval_timeout_while_a_run_runs_changes_nothing() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let before = epic.clone();
    assert_eq!(epic.advance(After::ApprovalTimedOut, at()), next);
    assert_eq!(epic, before);
}

#[test]
fn ending_an_epic_abandons_the_running_step() {
    let mut epic = epic(json!({}));
    epic.advance(After::Start, at());
    epic.end(EpicStatus::Cancelled, None, at());
    assert_eq!(epic.steps[0].status, StepStatus::Abandoned);
    assert_eq!(epic.answer(), Advance::Done { status: EpicStatus::Cancelled });
}

// --- step messages ---------------------------------------------------------------------------

#[test]
fn a_step_message_carries_the_step_the_goal_and_what_earlier_steps_said() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, says("Design: a search_index table fed by triggers"));
    approve(&mut epic, next);
    let message = epic.step_message(2, 100_000);
    assert!(message.starts_with("Epic step: implement\n"), "{message}");
    assert!(message.contains("Epic: Search"), "{message}");
    assert!(message.contains(GOAL), "{message}");
    assert!(message.contains("architect (passed); commits commit-0"), "{message}");
    assert!(message.contains("Design: a search_index table fed by triggers"), "{message}");
    assert!(message.contains("approve by alice"), "{message}");
    assert!(!message.contains("Why this step"), "a planned step needs no reason: {message}");
}

#[test]
fn the_first_step_message_is_the_header_and_the_goal() {
    let mut epic = epic(json!({}));
    epic.advance(After::Start, at());
    let message = epic.step_message(0, 100_000);
    assert!(message.contains("Epic step: architect") && message.contains(GOAL), "{message}");
    assert!(!message.contains("earlier steps"), "{message}");
    assert_eq!(epic.step_message(42, 100_000), GOAL, "an unknown step gets the goal");
}

#[test]
fn an_approval_comment_reaches_later_steps_as_written() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    decide(&mut epic, next, DecisionKind::Approve, Some("Keep the `SearchIndex` type"));
    let message = epic.step_message(2, 100_000);
    assert!(message.contains("Keep the `SearchIndex` type"), "{message}");
}

#[test]
fn a_tight_step_message_keeps_the_newest_context_over_the_oldest() {
    let mut epic = epic(json!({"steps": ["architect", "implement", "test"]}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, says("OLDEST: the design, at some length"));
    run(&mut epic, next, says("NEWEST: the code is in src/search.rs"));
    let full = epic.step_message(2, 100_000);
    let oldest = full.find("- step 1,").unwrap();
    let newest = full.find("- step 2,").unwrap();
    assert!(full.contains("OLDEST") && full.contains("NEWEST"), "{full}");

    // Room for everything but the oldest entry.
    let max = full.len() - (newest - oldest);
    let tight = epic.step_message(2, max);
    assert!(tight.len() <= max, "{} > {max}", tight.len());
    assert!(tight.contains("NEWEST"), "{tight}");
    assert!(!tight.contains("OLDEST"), "{tight}");
    assert!(tight.contains(GOAL), "{tight}");

    // A byte less: the newest entry no longer fits either, and the goal stays.
    let tighter = epic.step_message(2, max - 1);
    assert!(!tighter.contains("NEWEST") && !tighter.contains("OLDEST"), "{tighter}");
    assert!(tighter.contains(GOAL), "{tighter}");

    for tiny in [0, 1, 10, 30] {
        assert!(epic.step_message(2, tiny).len() <= tiny, "max {tiny}");
    }
}

#[test]
fn a_tiny_step_message_is_cut_on_a_character_boundary() {
    let mut epic = Epic::start(Owner::new("alice"), check(json!({"message": "é".repeat(50)})).unwrap(), at());
    epic.advance(After::Start, at());
    let full = epic.step_message(0, 100_000);
    let cut = epic.step_message(0, full.find('é').unwrap() + 1);
    assert!(!cut.contains('é') && full.starts_with(&cut), "{cut}");
}

// --- verdicts --------------------------------------------------------------------------------

#[test]
fn a_verdict_fail_line_reports_a_failure() {
    for text in [
        "VERDICT: FAIL",
        "ran 12 tests\n\nVERDICT: FAIL\n",
        "verdict: failed, two regressions",
        "  `VERDICT: FAIL`  ",
        "## Verdict: Fail",
        "**VERDICT: FAIL**",
    ] {
        assert!(reports_failure(text), "{text:?}");
    }
    for text in ["VERDICT: PASS", "all good", "", "the verdict: fail is what we avoid? no", "VERDICT:"] {
        assert!(!reports_failure(text), "{text:?}");
    }
}

#[test]
fn a_bold_verdict_label_reports_a_failure() {
    assert!(reports_failure("**Verdict:** fail"));
    assert!(reports_failure("Summary\n**VERDICT:** FAIL — 3 tests fail"));
}

#[test]
fn the_last_verdict_wins() {
    assert!(!reports_failure("VERDICT: FAIL\nfixed it, ran again\nVERDICT: PASS"));
    assert!(reports_failure("VERDICT: PASS\nthen a flaky one failed\nVERDICT: FAIL"));
}

#[test]
fn a_report_passes_when_its_run_completed_without_reporting_a_failure() {
    let base = RunReport {
        run_id: RunId::new(),
        status: RunStatus::Completed,
        result_summary: None,
        error: None,
        cost_usd: 0.0,
        num_turns: 0,
        duration_ms: 0,
        base_commit: None,
        commits: vec![],
    };
    assert!(base.passed());
    assert!(RunReport { result_summary: Some("VERDICT: PASS".into()), ..base.clone() }.passed());
    assert!(!RunReport { result_summary: Some("VERDICT: FAIL".into()), ..base.clone() }.passed());
    for status in [RunStatus::Failed, RunStatus::Cancelled, RunStatus::TimedOut] {
        assert!(!RunReport { status, ..base.clone() }.passed(), "{status}");
    }
}

// --- names and wire forms --------------------------------------------------------------------

#[test]
fn advances_have_the_wire_form_the_state_machine_reads() {
    assert_eq!(serde_json::to_value(Advance::Run { step: 2 }).unwrap(), json!({"kind": "run", "step": 2}));
    assert_eq!(
        serde_json::to_value(Advance::Approval { step: 1, timeout_seconds: 60 }).unwrap(),
        json!({"kind": "approval", "step": 1, "timeout_seconds": 60})
    );
    assert_eq!(
        serde_json::to_value(Advance::Done { status: EpicStatus::Completed }).unwrap(),
        json!({"kind": "done", "status": "completed"})
    );
    assert_eq!(
        serde_json::to_value(Advance::Failed { status: EpicStatus::BudgetExhausted }).unwrap(),
        json!({"kind": "failed", "status": "budget_exhausted"})
    );
}

#[test]
fn epic_status_names_round_trip_and_only_two_are_live() {
    use EpicStatus::*;
    let all = [Running, AwaitingApproval, Completed, Denied, BudgetExhausted, Failed, Cancelled, TimedOut, RolledBack];
    for status in all {
        assert_eq!(status.as_str().parse::<EpicStatus>(), Ok(status));
        assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        assert_eq!(status.is_terminal(), !matches!(status, Running | AwaitingApproval), "{status}");
    }
    assert!("done".parse::<EpicStatus>().is_err());
}

#[test]
fn an_epic_survives_a_round_trip_through_json() {
    let mut epic = epic(json!({}));
    let next = epic.advance(After::Start, at());
    let next = run(&mut epic, next, passes);
    decide(&mut epic, next, DecisionKind::Amend, Some("smaller"));
    let back: Epic = serde_json::from_value(serde_json::to_value(&epic).unwrap()).unwrap();
    assert_eq!(back, epic);
}

#[test]
fn executions_after_the_first_are_numbered() {
    let epic = epic(json!({}));
    assert_eq!(epic.execution_name(0), epic.epic_id.to_string());
    assert_eq!(epic.execution_name(2), format!("{}-2", epic.epic_id));
    assert_eq!(epic.epic_id.to_string().parse::<EpicId>().unwrap(), epic.epic_id);
}
