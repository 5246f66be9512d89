//! What an operator relies on: one trace id from the request to every log line, frame row,
//! queue message and metric of its run; the local `/metrics` endpoint; the HTTP API fuzzed
//! against its OpenAPI contract by schemathesis; every alarm naming a runbook that exists.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{RunnerFixture, TestStack, repo_root};
use local::model::Turn;
use serde_json::{Value, json};

/// Log output captured in memory, as the JSON lines Lambda would ship.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Every log line of this process from now on, in Lambda's JSON format (nextest runs each
    /// test in a process of its own, so the global subscriber is this test's).
    fn install() -> Self {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber =
            tracing_subscriber::fmt().json().with_env_filter("info").with_writer(move || writer.clone()).finish();
        tracing::subscriber::set_global_default(subscriber).expect("the test's own log subscriber");
        logs
    }

    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn one_trace_id_runs_from_the_request_through_log_lines_frame_rows_replies_and_metrics() {
    let logs = CapturedLogs::install();
    let f = RunnerFixture::start(vec![], &[], true).await;
    f.model.script("KW-TRACE", vec![Turn::text("traced")]);
    let response =
        f.t.http
            .post(f.t.url("/agent/claude-code/implement/run"))
            .header("x-api-key", f.t.key())
            .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
            .json(&json!({"message": "KW-TRACE follow me", "branch": "main"}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let echoed = response.headers().get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(echoed.starts_with(&format!("00-{TRACE}-")), "the response names the caller's trace: {echoed}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["trace_id"], TRACE, "{body}");
    let run_id = body["run_id"].as_str().unwrap().to_owned();
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!((run["status"].as_str(), run["trace_id"].as_str()), (Some("completed"), Some(TRACE)), "{run}");

    // Frame rows.
    let (frames, traced): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE trace_id = $2) FROM claude_cli_outputs WHERE run_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&run_id).unwrap())
    .bind(TRACE)
    .fetch_one(&f.t.stack.pool)
    .await
    .unwrap();
    assert!(frames > 0 && traced == frames, "{traced} of {frames} frame rows carry the trace");

    // The Postgres copy of the run (the projector's), once it has caught up.
    let projected = TestStack::eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT trace_id FROM claude_cli_runs WHERE run_id = $1 AND status = 'completed'",
        )
        .bind(uuid::Uuid::parse_str(&run_id).unwrap())
        .fetch_optional(&f.t.stack.pool)
        .await
        .unwrap()
        .flatten()
    })
    .await;
    assert_eq!(projected.as_deref(), Some(TRACE));

    // The executor's log lines: the run's span names the trace on every line inside it.
    let lines = logs.lines();
    let of_trace: Vec<&Value> = lines.iter().filter(|line| line.to_string().contains(TRACE)).collect();
    let messages: Vec<&str> = of_trace.iter().filter_map(|line| line["fields"]["message"].as_str()).collect();
    for expected in ["run queued", "claimed", "run finished"] {
        assert!(messages.contains(&expected), "no {expected:?} line in the trace; its lines: {messages:?}");
    }
    let claimed = of_trace.iter().find(|line| line["fields"]["message"] == "claimed").unwrap();
    assert_eq!(claimed["span"]["trace_id"], TRACE, "{claimed}");

    // Metrics: each of the run's events carries the trace. The run's end is measured by the
    // projector, as it applies the ended run.
    let of_run = || -> Vec<_> {
        let recent = f.t.stack.metrics().recent();
        recent.into_iter().filter(|event| event.run_id.map(|id| id.to_string()) == Some(run_id.clone())).collect()
    };
    let finished = |events: &Vec<runner_core::ports::MetricEvent>| {
        events.iter().any(|e| e.measurements.iter().any(|m| m.name == "RunsFinished"))
    };
    TestStack::eventually(Duration::from_secs(20), || async { finished(&of_run()).then_some(()) }).await;
    let events = of_run();
    let names: Vec<&str> = events.iter().flat_map(|e| e.measurements.iter().map(|m| m.name)).collect();
    for expected in ["RunsSubmitted", "RunsStarted", "QueueWait", "Frames", "RunsFinished", "CliTime", "EndToEnd"] {
        assert!(names.contains(&expected), "{expected} missing from the run's metrics: {names:?}");
    }
    assert!(events.iter().all(|e| e.trace_id.as_ref().map(|t| t.as_str()) == Some(TRACE)), "{events:?}");

    // The local /metrics endpoint counts the run.
    let text = f.t.http.get(f.t.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for expected in [
        "claude_runner_runs_submitted_total{workflow=\"implement\"} 1",
        "claude_runner_runs_finished_total{workflow=\"implement\",status=\"completed\"} 1",
        "claude_runner_runs_failed_total{workflow=\"implement\",status=\"completed\"} 0",
        "# TYPE claude_runner_cli_time_milliseconds histogram",
    ] {
        assert!(text.contains(expected), "/metrics lacks {expected:?}:\n{text}");
    }
    f.stop().await;
}

#[tokio::test]
async fn a_queued_runs_message_carries_its_trace_and_a_malformed_traceparent_starts_a_new_one() {
    let t = TestStack::start().await;
    let submit = |traceparent: &'static str| {
        t.http
            .post(t.url("/agent/claude-code/implement/run"))
            .header("x-api-key", t.key())
            .header("traceparent", traceparent)
            .json(&json!({"message": "queued", "branch": "main"}))
            .send()
    };
    let kept: Value =
        submit("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").await.unwrap().json().await.unwrap();
    let fresh: Value = submit("00-not-a-trace-01").await.unwrap().json().await.unwrap();
    assert_eq!(kept["trace_id"], TRACE);
    let new_trace = fresh["trace_id"].as_str().unwrap_or_default();
    assert!(new_trace.len() == 32 && new_trace != TRACE, "a malformed header starts a trace of ours: {fresh}");

    let sqs = aws_sdk_sqs::Client::new(&t.stack.sdk);
    let mut attributes = Vec::new();
    for _ in 0..5 {
        let out = sqs
            .receive_message()
            .queue_url(&t.stack.settings.runs_queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(60)
            .send()
            .await
            .unwrap();
        for message in out.messages.unwrap_or_default() {
            let body: Value = serde_json::from_str(message.body().unwrap_or("{}")).unwrap();
            let header = message
                .message_attributes()
                .and_then(|a| a.get("traceparent"))
                .and_then(|v| v.string_value())
                .unwrap_or_default()
                .to_owned();
            attributes.push((body["run_id"].as_str().unwrap_or_default().to_owned(), header));
        }
        if attributes.len() >= 2 {
            break;
        }
    }
    for (run, trace) in [(&kept, TRACE), (&fresh, new_trace)] {
        let run_id = run["run_id"].as_str().unwrap();
        let header = attributes.iter().find(|(id, _)| id == run_id).map(|(_, h)| h.clone()).unwrap_or_default();
        assert!(header.starts_with(&format!("00-{trace}-")), "run {run_id}'s message: traceparent {header:?}");
    }
    // Every response names its trace, errors included.
    let missing = t.http.get(t.url("/agent/claude-code/nowhere")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert!(missing.headers().contains_key("traceparent"));
    t.stop().await;
}

/// The checks schemathesis runs: all of them but `positive_data_acceptance` (a schema cannot say
/// which repositories and workflows a deployment allows, so schema-valid requests are rightly
/// refused) and `object_level_authorization` (needs a second tenant's resources; tests/e2e/api.rs
/// covers it).
const EXCLUDED_CHECKS: &str = "positive_data_acceptance,object_level_authorization";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_undocumented_status_or_nonconforming_body() {
    let t = TestStack::start().await;
    let schemathesis = repo_root().join(".tools/venv/bin/schemathesis");
    let reports = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(t.url("/openapi.json"))
        .args(["--checks", "all", "--exclude-checks", EXCLUDED_CHECKS])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        // Fixed seed and examples: the same cases every run, so a failure reproduces.
        .args(["--max-examples", "10", "--seed", "20261128", "--workers", "2"])
        .args(["--request-timeout", "20", "--max-failures", "20"])
        .args(["--header", &format!("x-api-key: {}", t.key())])
        .args(["--report", "junit", "--report-dir"])
        .arg(reports.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), output)
        .await
        .expect("schemathesis finishes within 10 minutes")
        .expect("run schemathesis (cargo xtask tools installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found contract failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Tested: 23"), "every operation was tested:\n{stdout}");
    t.stop().await;
}

#[test]
fn every_alarm_notifies_the_topic_and_names_a_runbook_that_exists() {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let template: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let resources = template["Resources"].as_mapping().unwrap();
    let mut alarms = 0;
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        let name = name.as_str().unwrap();
        let actions = format!("{:?}", resource["Properties"]["AlarmActions"]);
        // The long-runs scaling alarms drive autoscaling, not people.
        if actions.contains("ScaleOutPolicy") || actions.contains("ScaleToZeroPolicy") {
            continue;
        }
        alarms += 1;
        assert!(actions.contains("AlarmTopic"), "{name} notifies nobody: {actions}");
        let description = resource["Properties"]["AlarmDescription"].as_str().unwrap_or_default();
        let runbook = description
            .rsplit_once("Runbook: ")
            .map(|(_, path)| path.trim().to_owned())
            .unwrap_or_else(|| panic!("{name}'s description names no runbook: {description}"));
        assert!(repo_root().join(&runbook).is_file(), "{name}'s runbook {runbook} does not exist");
        let index = std::fs::read_to_string(repo_root().join("docs/runbooks/README.md")).unwrap();
        let file = runbook.trim_start_matches("docs/runbooks/");
        assert!(index.contains(file), "docs/runbooks/README.md does not list {file}");
    }
    assert!(alarms >= 12, "only {alarms} operator alarms");
    let dashboards = resources.values().filter(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Dashboard")).count();
    assert_eq!(dashboards, 1);
}

#[tokio::test]
async fn each_service_runs_on_the_emulator_the_test_command_named() {
    let t = TestStack::start().await;
    let routes = std::env::var("CLAUDE_RUNNER_TEST_AWS_SERVICES").unwrap_or_default();
    let localstack = routes.split(',').find_map(|r| r.strip_prefix("SQS=")).map(str::to_owned);
    let moto = std::env::var("CLAUDE_RUNNER_TEST_AWS_ENDPOINT").ok();
    let queue = &t.stack.settings.runs_queue_url;
    match (localstack, moto) {
        (Some(localstack), _) => assert!(queue.starts_with(&localstack), "SQS should be LocalStack's: {queue}"),
        (None, Some(moto)) => assert!(queue.starts_with(&moto), "SQS should be moto's: {queue}"),
        (None, None) => {} // run alone: the test's own moto
    }
    // A queue and a bucket of this stack answer where they were provisioned.
    let sqs = aws_sdk_sqs::Client::new(&t.stack.sdk);
    sqs.get_queue_attributes().queue_url(queue).send().await.expect("the runs queue answers");
    t.stop().await;
}
