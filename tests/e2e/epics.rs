//! Epics end to end (docs/epics.md): the state machine executed by the emulator's Step
//! Functions, every step an ordinary run of the real `claude` against the scripted model, the
//! branch in a real bare repository.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{RunnerFixture, StackSetup, TestStack};
use local::model::Turn;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

/// A stack with the executor on the real CLI, and the epic's helpers.
struct Epics {
    f: RunnerFixture,
}

impl Epics {
    async fn start(poll_queue: bool, parameters: &[(&str, &str)]) -> Self {
        let parameters = parameters.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<HashMap<_, _>>();
        let setup = StackSetup { parameters, ..StackSetup::default() };
        Self { f: RunnerFixture::start_setup(vec![], &[], poll_queue, setup).await }
    }

    /// What each workflow's run does, keyed by the header of its step's message.
    fn script(&self, workflow: &str, turns: Vec<Turn>) {
        self.f.model.script(&format!("Epic step: {workflow}\n"), turns);
    }

    fn script_defaults(&self) {
        self.script(
            "architect",
            vec![
                Turn::write("docs/design/plan.md", "# Plan\nAdd feature.txt.\n"),
                Turn::text("Design in docs/design/plan.md"),
            ],
        );
        self.script("implement", vec![Turn::write("feature.txt", "feature\n"), Turn::text("Implemented feature.txt")]);
        self.script("test", vec![Turn::text("All tests pass.\nVERDICT: PASS")]);
        self.script("review", vec![Turn::text("Looks right.\nVERDICT: PASS")]);
    }

    async fn start_epic(&self, body: Value) -> String {
        let (status, epic) = self.post("/agent/claude-code/epics", &body, self.f.t.key()).await;
        assert_eq!(status, 202, "{epic}");
        epic["epic_id"].as_str().unwrap().to_owned()
    }

    async fn post(&self, path: &str, body: &Value, key: &str) -> (u16, Value) {
        let t = &self.f.t;
        let response = t.http.post(t.url(path)).header("x-api-key", key).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, epic_id: &str) -> Value {
        let (status, epic) = self.f.t.get_json(&format!("/agent/claude-code/epics/{epic_id}"), self.f.t.key()).await;
        assert_eq!(status, 200, "{epic}");
        epic
    }

    /// Waits (bounded) until the epic satisfies `done`.
    async fn wait(&self, epic_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let found = TestStack::eventually(WAIT, || async {
            let epic = self.get(epic_id).await;
            *last.lock().unwrap() = epic.clone();
            done(&epic).then_some(epic)
        })
        .await;
        found.unwrap_or_else(|| panic!("epic {epic_id} never {what}; last seen: {:#}", last.lock().unwrap()))
    }

    async fn wait_status(&self, epic_id: &str, status: &str) -> Value {
        self.wait(epic_id, &format!("became {status}"), |e| e["status"] == status).await
    }

    /// Waits for the approval to be pending, then decides it.
    async fn decide(&self, epic_id: &str, body: Value) -> Value {
        let epic = self.wait_status(epic_id, "awaiting_approval").await;
        let approval = epic["pending_approval"]["approval_id"].as_u64().unwrap();
        let path = format!("/agent/claude-code/epics/{epic_id}/approvals/{approval}");
        // The approval's task token arrives with the state machine's message, a moment after
        // the epic says it waits: until then the decision is refused as not pending.
        let decided = TestStack::eventually(WAIT, || async {
            let (status, answer) = self.post(&path, &body, self.f.t.key()).await;
            match status {
                202 => Some(answer),
                409 if answer["error"]["code"] == "approval_not_pending" => None,
                _ => panic!("decision refused: {status} {answer}"),
            }
        })
        .await;
        decided.expect("the approval takes a decision")
    }

    /// The workflows of the epic's run steps, in order.
    fn run_steps(epic: &Value) -> Vec<String> {
        epic["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] == "run")
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The first user message of every agent-loop request the model got, for one workflow.
    fn messages_of(&self, workflow: &str) -> Vec<String> {
        let header = format!("Epic step: {workflow}\n");
        self.f
            .model
            .requests()
            .iter()
            .filter_map(|body| {
                let first = &body["messages"][0]["content"];
                let text = match first {
                    Value::String(s) => s.clone(),
                    Value::Array(blocks) => {
                        blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n")
                    }
                    _ => return None,
                };
                text.contains(&header).then_some(text)
            })
            .collect()
    }
}

fn epic_body(extra: Value) -> Value {
    let mut body = json!({
        "title": "Add a feature", "message": "Add feature.txt to the repository.", "branch": "main", "budget_usd": 5.0,
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn an_approved_epic_runs_every_step_in_order_and_completes_with_totals() {
    let e = Epics::start(true, &[]).await;
    e.script_defaults();
    let base = e.f.origin.head("main");
    let id = e.start_epic(epic_body(json!({}))).await;

    let waiting = e.wait_status(&id, "awaiting_approval").await;
    assert_eq!(Epics::run_steps(&waiting), ["architect"], "nothing is implemented before the approval");
    assert_eq!(waiting["pending_approval"]["triggers"], json!(["manual"]), "{waiting}");
    assert!(e.f.origin.file("main", "docs/design/plan.md").is_some(), "the design is on the branch");
    e.decide(&id, json!({"decision": "approve", "comment": "go"})).await;

    let epic = e.wait_status(&id, "completed").await;
    assert_eq!(Epics::run_steps(&epic), ["architect", "implement", "test", "review"], "{epic:#}");
    let steps = epic["steps"].as_array().unwrap();
    assert_eq!(steps[1]["kind"], "approval");
    assert_eq!(steps[1]["decision"]["decision"], "approve");
    assert_eq!(steps[0]["rollback_point"], base.as_str(), "the head before the first step");
    assert_eq!(e.f.origin.file("main", "feature.txt").as_deref(), Some("feature\n"));
    let mut cost = 0.0;
    for step in steps.iter().filter(|s| s["kind"] == "run") {
        assert_eq!(step["status"], "passed", "{step}");
        let run_id = step["run_id"].as_str().unwrap();
        let run = e.f.status(run_id).await;
        assert_eq!(run["status"], "completed", "each step is an ordinary run: {run}");
        assert_eq!(step["cost_usd"], run["cost_usd"]);
        cost += run["cost_usd"].as_f64().unwrap();
    }
    let total = epic["totals"]["cost_usd"].as_f64().unwrap();
    assert!((total - cost).abs() < 1e-9 && total > 0.0, "{total} vs {cost}");
    assert!(epic["totals"]["num_turns"].as_u64().unwrap() >= 4, "{epic}");

    // Each step starts informed: the implement step's message carries the design's summary.
    let implement = e.messages_of("implement");
    assert!(implement.iter().any(|m| m.contains("Design in docs/design/plan.md")), "{implement:?}");

    // The history lands in Postgres, like runs.
    let projected = TestStack::eventually(WAIT, || async {
        let row: Option<(String, i64, f64)> = sqlx::query_as(
            "SELECT status, jsonb_array_length(steps)::bigint, cost_usd FROM claude_cli_epics WHERE epic_id = $1",
        )
        .bind(uuid::Uuid::parse_str(&id).unwrap())
        .fetch_optional(&e.f.t.stack.pool)
        .await
        .unwrap();
        row.filter(|(status, _, _)| status == "completed")
    })
    .await;
    let (_, steps_stored, cost_stored) = projected.expect("the epic is projected to Postgres");
    assert_eq!(steps_stored, 5);
    assert!((cost_stored - total).abs() < 1e-9);

    // Another key sees none of it.
    let other = e.f.t.stack.issue_key("mallory").await.unwrap();
    let (status, body) = e.f.t.get_json(&format!("/agent/claude-code/epics/{id}"), &other).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("epic_not_found")));
    let (status, list) = e.f.t.get_json("/agent/claude-code/epics", &other).await;
    assert_eq!((status, list["epics"].as_array().map(Vec::len)), (200, Some(0)));
    let (status, _) = e.post(&format!("/agent/claude-code/epics/{id}/cancel"), &json!({}), &other).await;
    assert_eq!(status, 404);
    let (_, mine) = e.f.t.get_json("/agent/claude-code/epics", e.f.t.key()).await;
    assert_eq!(mine["epics"][0]["epic_id"], id.as_str());
    e.f.stop().await;
}

#[tokio::test]
async fn a_denied_epic_ends_without_implementing() {
    let e = Epics::start(true, &[]).await;
    e.script_defaults();
    let id = e.start_epic(epic_body(json!({}))).await;
    e.decide(&id, json!({"decision": "deny", "comment": "not now"})).await;
    let epic = e.wait_status(&id, "denied").await;
    assert_eq!(Epics::run_steps(&epic), ["architect"]);
    assert_eq!(epic["error"]["code"], "denied");
    assert!(e.messages_of("implement").is_empty(), "no implement run");
    assert_eq!(e.f.origin.file("main", "feature.txt"), None);
    // A second decision finds nothing pending.
    let (status, body) = e
        .post(&format!("/agent/claude-code/epics/{id}/approvals/1"), &json!({"decision": "approve"}), e.f.t.key())
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("epic_ended")));
    e.f.stop().await;
}

#[tokio::test]
async fn amend_reruns_the_architect_with_the_comment() {
    let e = Epics::start(true, &[]).await;
    e.script_defaults();
    e.script("architect", vec![Turn::write("docs/design/plan.md", "# Plan v2\n"), Turn::text("Design v2")]);
    let id = e.start_epic(epic_body(json!({"steps": ["architect", "approval", "implement"]}))).await;
    e.decide(&id, json!({"decision": "amend", "comment": "Use a SearchIndex type instead"})).await;
    // The amended design asks again.
    let again = e
        .wait(&id, "asked again", |e| e["status"] == "awaiting_approval" && e["steps"].as_array().unwrap().len() == 4)
        .await;
    assert_eq!(Epics::run_steps(&again), ["architect", "architect"]);
    assert!(again["pending_approval"]["triggers"].as_array().unwrap().contains(&json!("amended")), "{again}");
    let architect = e.messages_of("architect");
    assert!(architect.iter().any(|m| m.contains("Use a SearchIndex type instead")), "{architect:?}");
    e.decide(&id, json!({"decision": "approve"})).await;
    let epic = e.wait_status(&id, "completed").await;
    assert_eq!(Epics::run_steps(&epic), ["architect", "architect", "implement"]);
    e.f.stop().await;
}

#[tokio::test]
async fn a_failing_test_step_runs_the_fix_loop_and_stops_at_its_bound() {
    let e = Epics::start(true, &[]).await;
    e.script("implement", vec![Turn::write("feature.txt", "feature\n"), Turn::text("Implemented")]);
    e.script(
        "fix",
        vec![
            Turn::write("fix1.txt", "1\n"),
            Turn::text("Fixed once"),
            Turn::write("fix2.txt", "2\n"),
            Turn::text("Fixed twice"),
        ],
    );
    e.script(
        "test",
        vec![
            Turn::text("1 test fails.\nVERDICT: FAIL"),
            Turn::text("Still failing.\nVERDICT: FAIL"),
            Turn::text("Failing again.\nVERDICT: FAIL"),
        ],
    );
    let body = epic_body(json!({"steps": ["implement", "test"], "approval": "auto", "max_fix_rounds": 2}));
    let id = e.start_epic(body).await;
    let epic = e.wait_status(&id, "failed").await;
    assert_eq!(Epics::run_steps(&epic), ["implement", "test", "fix", "test", "fix", "test"], "{epic:#}");
    assert_eq!((epic["error"]["code"].as_str(), epic["fix_rounds"].as_u64()), (Some("fix_rounds_exhausted"), Some(2)));
    // The fix step is told what failed.
    let fixes = e.messages_of("fix");
    assert!(fixes.iter().any(|m| m.contains("1 test fails.")), "{fixes:?}");
    assert_eq!(e.f.origin.file("main", "fix2.txt").as_deref(), Some("2\n"), "both fix rounds pushed");
    e.f.stop().await;
}

#[tokio::test]
async fn a_budget_below_the_second_step_ends_the_epic_budget_exhausted() {
    let e = Epics::start(true, &[]).await;
    // What one step costs with this script (the scripted model's usage is fixed).
    let turns = || vec![Turn::write("docs/design/plan.md", "# Plan\n"), Turn::text("Design done")];
    e.f.model.script("MEASURE-COST", turns());
    let probe = e.f.submit("architect", json!({"message": "MEASURE-COST", "branch": "main"})).await;
    let probe = e.f.wait_until_finished(&probe).await;
    let step_cost = probe["cost_usd"].as_f64().expect("a cost");
    e.script("architect", turns());
    e.script("implement", vec![Turn::write("feature.txt", "x\n"), Turn::text("Implemented")]);
    // Enough for the first step, not for the second; under 80% after the first, so no approval.
    let budget = step_cost * 1.3;
    let id = e
        .start_epic(epic_body(json!({"steps": ["architect", "implement"], "approval": "auto", "budget_usd": budget})))
        .await;
    let epic = e.wait_status(&id, "budget_exhausted").await;
    assert_eq!(epic["steps"][0]["status"], "passed", "{epic:#}");
    assert_eq!(epic["error"]["code"], "budget_exhausted");
    assert!(epic["spent_usd"].as_f64().unwrap() >= step_cost, "{epic}");
    e.f.stop().await;
}

#[tokio::test]
async fn a_rollback_restores_the_recorded_head_and_refuses_when_the_branch_moved() {
    let e = Epics::start(true, &[]).await;
    e.script_defaults();
    let base = e.f.origin.head("main");
    let body = epic_body(json!({"steps": ["architect", "implement", "approval"]}));
    let id = e.start_epic(body).await;
    let waiting = e.wait_status(&id, "awaiting_approval").await;
    let head = e.f.origin.head("main");
    assert_ne!(head, base, "the steps pushed commits");
    assert_eq!(waiting["steps"][1]["head_after"], head.as_str());

    // Rolled back as the approval's decision: the branch is where it was before the epic.
    e.decide(&id, json!({"decision": "rollback", "to_step": 0})).await;
    let epic = e.wait_status(&id, "rolled_back").await;
    assert_eq!(e.f.origin.head("main"), base, "the bare repository's branch is back: {epic:#}");
    assert_eq!(epic["rollback"]["to_commit"], base.as_str());
    assert_eq!(epic["rollback"]["from_commit"], head.as_str());
    assert_eq!(epic["rollback"]["discarded"].as_array().unwrap().len(), 2, "the design and the feature: {epic}");

    // A second epic whose branch someone else pushed to since: the rollback is refused.
    e.script_defaults();
    let second = e.start_epic(epic_body(json!({"steps": ["architect"], "approval": "auto"}))).await;
    let done = e.wait_status(&second, "completed").await;
    let outside = e.f.origin.push_commit("main", "outside.txt", "someone else\n");
    let (status, answer) =
        e.post(&format!("/agent/claude-code/epics/{second}/rollback"), &json!({"to_step": 0}), e.f.t.key()).await;
    assert_eq!(status, 202, "{answer}");
    let refused = e.wait(&second, "refused the rollback", |e| e["error"]["code"] == "branch_moved").await;
    assert_eq!(e.f.origin.head("main"), outside, "nothing was moved");
    assert_eq!(refused["status"], "completed", "the epic keeps its ending: {refused:#}");
    assert!(refused["rollback"].is_null());
    assert_eq!(done["steps"][0]["status"], "passed");

    // Asking for a step without a rollback point, or while a step runs, is refused up front.
    let (status, body) =
        e.post(&format!("/agent/claude-code/epics/{second}/rollback"), &json!({"to_step": 7}), e.f.t.key()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_rollback")));
    e.f.stop().await;
}

#[tokio::test]
async fn an_approval_that_times_out_ends_the_epic() {
    let e = Epics::start(true, &[]).await;
    e.script_defaults();
    let id = e.start_epic(epic_body(json!({"approval_timeout_seconds": 2}))).await;
    let epic = e.wait_status(&id, "timed_out").await;
    assert_eq!(epic["error"]["code"], "approval_timed_out", "{epic:#}");
    assert_eq!(epic["steps"][1]["status"], "timed_out");
    assert!(epic["pending_approval"].is_null());
    assert!(e.messages_of("implement").is_empty());
    e.f.stop().await;
}

#[tokio::test]
async fn a_killed_executor_fails_the_step_through_the_heartbeat_timeout() {
    // Nothing polls the runs queue: the test runs the executor itself, then kills it.
    let e = Epics::start(false, &[("EpicStepHeartbeatSeconds", "5")]).await;
    e.script("implement", vec![Turn::Stall]);
    let id = e.start_epic(epic_body(json!({"steps": ["implement"], "approval": "auto"}))).await;
    let queued = e.wait(&id, "queued its run", |e| e["steps"][0]["run_id"].is_string()).await;
    let run_id = queued["steps"][0]["run_id"].as_str().unwrap().to_owned();
    let executor = std::sync::Arc::new(e.f.t.stack.executor(&e.f.executor).await.unwrap());
    let doomed = {
        let (executor, event) = (executor.clone(), e2e::run_message(&run_id));
        tokio::spawn(async move { executor::handle(&executor, event).await })
    };
    e.f.wait_for(&run_id, &["running"], Duration::from_secs(30)).await;
    // Longer than the heartbeat timeout: the executor's heartbeats keep the step alive.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(e.get(&id).await["status"], "running", "a live executor's step does not time out");
    doomed.abort();
    let _ = doomed.await;
    let epic = e.wait_status(&id, "failed").await;
    assert_eq!(epic["error"]["code"], "step_lost", "{epic:#}");
    assert_eq!(epic["steps"][0]["status"], "timed_out");
    e.f.stop().await;
}

#[tokio::test]
async fn bad_epic_requests_are_refused_with_their_codes() {
    let e = Epics::start(false, &[]).await;
    let cases = [
        (json!({"title": "", "message": "m", "branch": "main", "budget_usd": 1}), 400, "invalid_title"),
        (json!({"title": "t", "message": "m", "branch": "main", "budget_usd": 0}), 400, "invalid_budget"),
        (
            json!({"title": "t", "message": "m", "branch": "main", "budget_usd": 1, "steps": ["deploy"]}),
            400,
            "invalid_steps",
        ),
        (json!({"title": "t", "message": "m", "branch": "a..b", "budget_usd": 1}), 400, "invalid_branch"),
        (
            json!({"title": "t", "message": "m", "branch": "main", "budget_usd": 1, "max_fix_rounds": 9}),
            400,
            "invalid_fix_rounds",
        ),
        (
            json!({"title": "t", "message": "m", "branch": "main", "budget_usd": 1, "approval": "maybe"}),
            400,
            "invalid_json",
        ),
        (json!({"title": "t", "message": "m", "branch": "main"}), 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = e.post("/agent/claude-code/epics", &body, e.f.t.key()).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{body} → {answer}");
    }
    let (status, answer) = e.f.t.get_json("/agent/claude-code/epics/not-an-id", e.f.t.key()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("epic_not_found")));
    let (status, answer) = e.f.t.get_json("/agent/claude-code/epics?limit=0", e.f.t.key()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_query")));
    let (status, _) = e.f.t.get_json("/agent/claude-code/epics", "cr_wrong").await;
    assert_eq!(status, 401);
    e.f.stop().await;
}
