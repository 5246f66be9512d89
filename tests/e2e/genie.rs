//! Genie's queue contract end to end (docs/genie.md): CloudEvents on the requests queue, the real
//! `claude` behind them, replies on the results queue — every message checked against its
//! published schema in shared/schemas.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{RunnerFixture, StackSetup, repo_root};
use local::model::Turn;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// shared/schemas, compiled with format checking, by event type.
struct Schemas(HashMap<String, jsonschema::Validator>);

impl Schemas {
    fn load() -> Self {
        let mut by_type = HashMap::new();
        for entry in std::fs::read_dir(repo_root().join("shared/schemas")).unwrap() {
            let schema: Value = serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
            let types: Vec<String> = match &schema["properties"]["type"] {
                t if t["const"].is_string() => vec![t["const"].as_str().unwrap().to_owned()],
                t => t["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
            };
            for kind in types {
                let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
                by_type.insert(kind, validator);
            }
        }
        Self(by_type)
    }

    fn check(&self, event: &Value) {
        let kind = event["type"].as_str().expect("a CloudEvent type");
        let schema = self.0.get(kind).unwrap_or_else(|| panic!("no published schema for {kind}"));
        let errors: Vec<String> = schema.iter_errors(event).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{kind} breaks its schema: {errors:?}\n{event}");
    }
}

/// A stack with the executor on the real CLI, and Genie's queues.
struct Genie {
    f: RunnerFixture,
    sqs: aws_sdk_sqs::Client,
    requests: String,
    results: String,
    schemas: Schemas,
    /// An API key of the Genie queue's owner, to look at its runs through the HTTP API.
    key: String,
}

impl Genie {
    async fn start(turns: Vec<Turn>, poll_queue: bool) -> Self {
        // Every queue of the local emulator may receive replies; nothing else may.
        let parameters = HashMap::from([("GenieReplyAllowlist".to_owned(), "http://127.0.0.1:*".to_owned())]);
        let setup = StackSetup { parameters, ..StackSetup::default() };
        let f = RunnerFixture::start_setup(turns, &[], poll_queue, setup).await;
        let sqs = aws_sdk_sqs::Client::new(&f.t.stack.sdk);
        let requests = f.t.stack.resources["GenieRequestsQueue"].reference.clone();
        let results = f.t.stack.resources["GenieResultsQueue"].reference.clone();
        let key = f.t.stack.issue_key("genie").await.unwrap();
        Self { f, sqs, requests, results, schemas: Schemas::load(), key }
    }

    async fn send(&self, event: &Value) {
        self.schemas.check(event);
        self.send_raw(&event.to_string()).await;
    }

    async fn send_raw(&self, body: &str) {
        self.sqs.send_message().queue_url(&self.requests).message_body(body).send().await.unwrap();
    }

    /// Replies on `queue` until one satisfies `done` (bounded), each checked against its schema
    /// and its attributes; deleted as read.
    async fn replies_until(&self, queue: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut replies: Vec<Value> = Vec::new();
        while tokio::time::Instant::now() < deadline {
            let out = self
                .sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            for message in out.messages.unwrap_or_default() {
                let reply: Value = serde_json::from_str(message.body.as_deref().unwrap()).unwrap();
                self.schemas.check(&reply);
                let attributes = message.message_attributes.unwrap_or_default();
                let ce_type = attributes.get("ce_type").and_then(|a| a.string_value.clone());
                assert_eq!(ce_type.as_deref(), reply["type"].as_str(), "the ce_type attribute names the type");
                if let Some(correlation) = reply["data"]["correlation_id"].as_str() {
                    let attribute = attributes.get("correlation_id").and_then(|a| a.string_value.clone());
                    assert_eq!(attribute.as_deref(), Some(correlation), "the correlation id travels as an attribute");
                }
                self.sqs
                    .delete_message()
                    .queue_url(queue)
                    .receipt_handle(message.receipt_handle.unwrap())
                    .send()
                    .await
                    .unwrap();
                replies.push(reply);
            }
            if replies.iter().any(&done) {
                return replies;
            }
        }
        panic!("no reply ended the wait; got {replies:#?}");
    }

    /// A reply queue of the caller's own (on the allowlist: it is the emulator's).
    async fn reply_queue(&self, purpose: &str) -> String {
        let name = format!("{}-genie-replies-{purpose}", uuid::Uuid::new_v4().simple());
        self.sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap()
    }

    /// The queue owner's runs, through the HTTP API.
    async fn runs(&self) -> Vec<Value> {
        let (status, body) = self.f.t.get_json("/agent/claude-code/runs", &self.key).await;
        assert_eq!(status, 200, "{body}");
        body["runs"].as_array().cloned().unwrap_or_default()
    }

    async fn run(&self, run_id: &str) -> Value {
        self.f.t.get_json(&format!("/agent/claude-code/run/{run_id}/status"), &self.key).await.1
    }
}

fn requested(id: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "urn:genie:tests", "type": "dev.claude-runner.run.requested.v1",
        "subject": "epic:7:implement", "time": chrono::Utc::now(), "datacontenttype": "application/json",
        "data": data,
    })
}

fn is_terminal(reply: &Value) -> bool {
    ["completed", "failed", "cancelled", "timed_out"]
        .iter()
        .any(|s| reply["type"] == format!("dev.claude-runner.run.{s}.v1"))
}

#[tokio::test]
async fn a_request_event_makes_one_run_and_one_terminal_reply_that_matches_it_even_when_sent_again() {
    let g =
        Genie::start(vec![Turn::write("genie.txt", "from the queue\n"), Turn::text("Wrote genie.txt.")], true).await;
    let event = requested(
        "req-1",
        json!({"workflow": "implement", "message": "Write genie.txt", "branch": "main", "correlation_id": "corr-1",
               "metadata": {"epic": 7}}),
    );
    g.send(&event).await;
    g.send(&event).await; // a redelivery, or Genie sending twice
    let replies = g.replies_until(&g.results, is_terminal).await;
    let kinds: Vec<&str> = replies.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"dev.claude-runner.run.accepted.v1"), "{kinds:?}");
    assert!(kinds.contains(&"dev.claude-runner.run.started.v1"), "{kinds:?}");
    let terminal: Vec<&Value> = replies.iter().filter(|r| is_terminal(r)).collect();
    assert_eq!(terminal.len(), 1, "exactly one terminal reply: {kinds:?}");
    let done = terminal[0];
    assert_eq!(done["type"], "dev.claude-runner.run.completed.v1");
    for reply in &replies {
        assert_eq!(reply["data"]["correlation_id"], "corr-1");
    }
    let accepted: Vec<&Value> = replies.iter().filter(|r| r["type"] == "dev.claude-runner.run.accepted.v1").collect();
    assert!(accepted.windows(2).all(|w| w[0]["id"] == w[1]["id"]), "a repeated reply keeps its id");
    assert!(accepted[0]["data"]["stream"]["token"].is_string(), "the caller can stream the run");

    // The reply carries the run as the API shows it.
    let run_id = done["data"]["run_id"].as_str().unwrap();
    let run = g.run(run_id).await;
    assert_eq!(run["status"], "completed");
    for field in ["session_id", "commits", "num_turns", "cost_usd", "diff_stats", "duration_ms"] {
        assert_eq!(done["data"][field], run[field], "{field}");
    }
    assert_eq!(done["data"]["result"], run["result_summary"]);
    assert_eq!(done["data"]["log_key"], format!("runs/{run_id}/output.ndjson"));
    assert_eq!(done["subject"], run_id);
    assert_eq!(g.f.origin.file("main", "genie.txt").as_deref(), Some("from the queue\n"));

    // Sent again after the run ended: still that one run, and the same acceptance.
    g.send(&event).await;
    let again = g.replies_until(&g.results, |r| r["type"] == "dev.claude-runner.run.accepted.v1").await;
    assert_eq!(again.last().unwrap()["data"]["run_id"], run_id);
    assert_eq!(again.last().unwrap()["id"], accepted[0]["id"]);
    assert_eq!(g.runs().await.len(), 1, "one event, one run");
    g.f.stop().await;
}

#[tokio::test]
async fn bad_requests_are_rejected_with_the_http_apis_codes_and_store_nothing() {
    let g = Genie::start(vec![], true).await;
    g.send_raw("this is not JSON").await;
    let malformed = g.replies_until(&g.results, |r| r["type"] == "dev.claude-runner.run.rejected.v1").await;
    assert_eq!(malformed.last().unwrap()["data"]["error"]["code"], "invalid_json");

    let cases = [
        (json!({"workflow": "deploy", "message": "m", "branch": "main"}), "unknown_workflow"),
        (json!({"workflow": "implement", "message": "m", "branch": "bad..name"}), "invalid_branch"),
        (json!({"workflow": "implement", "message": "", "branch": "main"}), "empty_message"),
        (json!({"workflow": "implement", "message": "m", "branch": "main", "max_budget_usd": -1}), "invalid_budget"),
        (json!({"workflow": "implement", "message": "m", "branch": "main", "surprise": 1}), "invalid_json"),
    ];
    for (index, (data, code)) in cases.into_iter().enumerate() {
        let mut data = data;
        data["correlation_id"] = json!(format!("bad-{index}"));
        let event = requested(&format!("bad-{index}"), data);
        g.send_raw(&event.to_string()).await;
        let replies = g.replies_until(&g.results, |r| r["data"]["correlation_id"] == format!("bad-{index}")).await;
        let rejected = replies.last().unwrap();
        assert_eq!(rejected["type"], "dev.claude-runner.run.rejected.v1");
        assert_eq!(rejected["data"]["error"]["code"], code, "{rejected}");
        assert_eq!(rejected["data"]["request_id"], format!("bad-{index}"));
    }
    let mut envelope = requested("no-spec", json!({"workflow": "implement", "message": "m", "branch": "main"}));
    envelope["specversion"] = json!("0.3");
    g.send_raw(&envelope.to_string()).await;
    let replies = g
        .replies_until(&g.results, |r| {
            r["data"]["request_id"] == "no-spec" || r["data"]["error"]["code"] == "invalid_event"
        })
        .await;
    assert_eq!(replies.last().unwrap()["data"]["error"]["code"], "invalid_event");

    // A reply queue outside the allowlist is never written to: the refusal goes to the results queue.
    let outside = requested(
        "elsewhere",
        json!({"workflow": "implement", "message": "m", "branch": "main",
               "reply_to": "https://sqs.us-east-1.amazonaws.com/999999999999/someone-elses-queue"}),
    );
    g.send(&outside).await;
    let replies = g.replies_until(&g.results, |r| r["data"]["request_id"] == "elsewhere").await;
    assert_eq!(replies.last().unwrap()["data"]["error"]["code"], "reply_not_allowed");
    assert!(g.runs().await.is_empty(), "nothing was stored");
    assert!(g.f.model.requests().is_empty(), "nothing ran");
    g.f.stop().await;
}

#[tokio::test]
async fn a_cancel_event_ends_a_queued_run_and_a_running_one() {
    // No executor on the queue at first: the first run stays queued.
    let g = Genie::start(vec![Turn::Delayed(Duration::from_secs(30), Box::new(Turn::text("too late")))], false).await;
    let reply_queue = g.reply_queue("cancel").await;
    g.send(&requested(
        "queued-1",
        json!({"workflow": "implement", "message": "wait", "branch": "main", "reply_to": reply_queue}),
    ))
    .await;
    let accepted = g.replies_until(&reply_queue, |r| r["type"] == "dev.claude-runner.run.accepted.v1").await;
    let queued = accepted.last().unwrap()["data"]["run_id"].as_str().unwrap().to_owned();
    let cancel = |id: &str, run_id: &str| {
        json!({"specversion": "1.0", "id": id, "source": "urn:genie:tests",
               "type": "dev.claude-runner.cancel.requested.v1", "data": {"run_id": run_id}})
    };
    g.send(&cancel("cancel-1", &queued)).await;
    let replies = g.replies_until(&reply_queue, is_terminal).await;
    assert_eq!(replies.last().unwrap()["type"], "dev.claude-runner.run.cancelled.v1", "to the run's own reply queue");
    assert_eq!(g.run(&queued).await["status"], "cancelled");

    // A running one: an executor takes the next request, and the cancel stops its CLI.
    let executor = g.f.t.stack.executor(&g.f.executor).await.unwrap();
    g.send(&requested(
        "running-1",
        json!({"workflow": "implement", "message": "think", "branch": "main", "reply_to": reply_queue}),
    ))
    .await;
    let accepted = g.replies_until(&reply_queue, |r| r["type"] == "dev.claude-runner.run.accepted.v1").await;
    let running = accepted.last().unwrap()["data"]["run_id"].as_str().unwrap().to_owned();
    let execution = executor::handle(&executor, e2e::run_message(&running));
    let cancelling = async {
        let started =
            e2e::TestStack::eventually(WAIT, || async { (g.run(&running).await["status"] == "running").then_some(()) })
                .await;
        assert!(started.is_some(), "the run started");
        g.send(&cancel("cancel-2", &running)).await;
    };
    let (handled, ()) = tokio::join!(execution, cancelling);
    assert!(handled.batch_item_failures.is_empty());
    let replies = g.replies_until(&reply_queue, is_terminal).await;
    assert_eq!(replies.last().unwrap()["type"], "dev.claude-runner.run.cancelled.v1");
    assert_eq!(g.run(&running).await["status"], "cancelled");

    // Cancelling an ended run is refused with the API's code.
    g.send(&cancel("cancel-3", &running)).await;
    let replies = g.replies_until(&g.results, |r| r["data"]["request_id"] == "cancel-3").await;
    assert_eq!(replies.last().unwrap()["data"]["error"]["code"], "invalid_transition");
    g.f.stop().await;
}

#[tokio::test]
async fn the_python_tool_for_genie_returns_the_runs_result_and_streams_its_frames_in_order() {
    let expected = "The Python tool got this.";
    let g = Genie::start(vec![Turn::text(expected)], true).await;
    let reply_queue = g.reply_queue("py").await;
    let endpoint = g.f.t.stack.aws_endpoint_of("SQS").to_owned();
    let python = repo_root().join(".tools/venv/bin/python");
    let output = tokio::process::Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "clients/python/tests"])
        .current_dir(repo_root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("CLAUDE_RUNNER_REQUESTS_QUEUE_URL", &g.requests)
        .env("CLAUDE_RUNNER_REPLY_QUEUE_URL", &reply_queue)
        .env("CLAUDE_RUNNER_SCHEMAS_DIR", repo_root().join("shared/schemas"))
        .env("CLAUDE_RUNNER_EXPECTED_RESULT", expected)
        .env("CLAUDE_RUNNER_TEST_TIMEOUT", "120")
        .env("CLAUDE_RUNNER_API_URL", &g.f.t.stack.http_url)
        .env("CLAUDE_RUNNER_API_KEY", &g.key)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), output).await.expect("pytest finishes").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "pytest failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("4 passed"), "every Python test ran:\n{stdout}");
    g.f.stop().await;
}

fn epic_event(id: &str, kind: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "urn:genie:tests", "type": format!("dev.claude-runner.{kind}.v1"),
        "time": chrono::Utc::now(), "datacontenttype": "application/json", "data": data,
    })
}

#[tokio::test]
async fn genie_starts_an_epic_hears_its_approval_decides_it_and_hears_the_end() {
    let g = Genie::start(vec![], true).await;
    g.f.model.script("Epic step: architect\n", vec![Turn::write("docs/design/q.md", "# Q\n"), Turn::text("Designed.")]);
    g.f.model.script("Epic step: implement\n", vec![Turn::write("q.txt", "q\n"), Turn::text("Implemented.")]);
    let request = epic_event(
        "epic-1",
        "epic.requested",
        json!({"title": "Queue epic", "message": "Add q.txt", "branch": "main", "budget_usd": 5,
               "steps": ["architect", "approval", "implement"], "correlation_id": "corr-epic"}),
    );
    g.send(&request).await;
    g.send(&request).await; // redelivered: the same epic, the same accepted reply
    let replies = g.replies_until(&g.results, |r| r["type"] == "dev.claude-runner.epic.approval_requested.v1").await;
    let accepted: Vec<&Value> = replies.iter().filter(|r| r["type"] == "dev.claude-runner.epic.accepted.v1").collect();
    assert_eq!(accepted.len(), 2, "{replies:#?}");
    assert_eq!(accepted[0]["id"], accepted[1]["id"], "one epic, named twice");
    let epic_id = accepted[0]["data"]["epic_id"].as_str().unwrap().to_owned();
    let (_, epics) = g.f.t.get_json("/agent/claude-code/epics", &g.key).await;
    assert_eq!(epics["epics"].as_array().unwrap().len(), 1, "{epics}");
    let asked = replies.last().unwrap();
    assert_eq!(asked["data"]["epic_id"], epic_id.as_str());
    assert_eq!(asked["data"]["correlation_id"], "corr-epic");
    assert_eq!(asked["data"]["triggers"], json!(["manual"]));

    // Genie decides over the queue; a decision on someone else's epic id is refused.
    let approval_id = asked["data"]["approval_id"].as_u64().unwrap();
    let stranger = uuid::Uuid::now_v7().to_string();
    g.send(&epic_event(
        "dec-0",
        "epic.decision.requested",
        json!({"epic_id": stranger, "approval_id": 1, "decision": "approve"}),
    ))
    .await;
    let refused = g.replies_until(&g.results, |r| r["type"] == "dev.claude-runner.run.rejected.v1").await;
    assert_eq!(refused.last().unwrap()["data"]["error"]["code"], "epic_not_found");
    let decision = json!({"epic_id": epic_id, "approval_id": approval_id, "decision": "approve", "comment": "ok"});
    g.send(&epic_event("dec-1", "epic.decision.requested", decision)).await;
    let replies = g.replies_until(&g.results, |r| r["type"] == "dev.claude-runner.epic.ended.v1").await;
    let ended = replies.last().unwrap();
    assert_eq!(ended["data"]["status"], "completed", "{ended:#}");
    assert_eq!(ended["data"]["correlation_id"], "corr-epic");
    let steps: Vec<&str> =
        ended["data"]["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(steps, ["architect", "approval", "implement"]);
    assert_eq!(g.f.origin.file("main", "q.txt").as_deref(), Some("q\n"));
    g.f.stop().await;
}
