//! Memory end to end: what a run proposes, what a person accepts, what the next run of the same
//! repository is told (in the system prompt the scripted model receives), failures counted by
//! fingerprint, epic decisions kept — and none of it crossing repositories or keys.

use std::time::Duration;

use e2e::{GitOrigin, RunnerFixture, StackSetup, TestStack};
use local::model::Turn;
use serde_json::{Value, json};

const TAUGHT: &str = "What this repository has taught earlier runs";

fn block(json: &str) -> String {
    format!("Done.\n```memory\n{json}\n```")
}

/// The system prompt text of every agent-loop request whose caller text contains `keyword`.
fn system_of(f: &RunnerFixture, keyword: &str) -> String {
    let requests = f.model.requests();
    let mine: Vec<&Value> = requests
        .iter()
        .filter(|body| {
            let first = &body["messages"][0]["content"];
            let text = match first {
                Value::String(s) => s.clone(),
                Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n"),
                _ => String::new(),
            };
            text.contains(keyword)
        })
        .collect();
    assert!(!mine.is_empty(), "the model saw no request for {keyword}");
    mine.iter()
        .map(|body| match &body["system"] {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n"),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn send(f: &RunnerFixture, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let t = &f.t;
    let mut request = t.http.request(method, t.url(path)).header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn memory_of(f: &RunnerFixture, query: &str, key: &str) -> Vec<Value> {
    let (status, body) = f.t.get_json(&format!("/agent/claude-code/memory?{query}"), key).await;
    assert_eq!(status, 200, "{body}");
    body["memory"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_accepted_memory_reaches_the_next_run_of_its_repository_and_no_other() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    let repo = f.origin.url.clone();
    let taught = r#"{"patterns": [{"problem": "tests collide on a fixed port", "solution": "bind port 0 in tests", "confidence": 0.9}],
                    "learnings": [{"insight": "the CI image has no network", "prevention": "vendor test fixtures"}]}"#;
    f.model.script("KW-TEACH", vec![Turn::text(block(taught))]);
    let first = f.submit("implement", json!({"message": "KW-TEACH look around", "branch": "main"})).await;
    let run = f.wait_until_finished(&first).await;
    assert_eq!(run["status"], "completed", "{run}");
    let produced = run["memory"]["produced"].as_array().unwrap().clone();
    assert_eq!(produced.len(), 2, "{run}");
    let proposed = memory_of(&f, &format!("repository={repo}&status=proposed"), f.t.key()).await;
    assert_eq!(proposed.len(), 2, "{proposed:#?}");
    assert!(proposed.iter().all(|m| m["run_id"] == first.as_str() && m["workflow"] == "implement"));
    // The run's session lists what its runs produced.
    let session = run["session_id"].as_str().expect("the run's session");
    let (status, page) = f.t.get_json(&format!("/agent/claude-code/sessions/{session}"), f.t.key()).await;
    assert_eq!((status, page["memory"].as_array().map(Vec::len)), (200, Some(2)), "{page}");

    // Proposed is not given to runs.
    f.model.script("KW-BEFORE", vec![Turn::text("ok")]);
    let before = f.submit("implement", json!({"message": "KW-BEFORE", "branch": "main"})).await;
    f.wait_until_finished(&before).await;
    assert!(!system_of(&f, "KW-BEFORE").contains("bind port 0"), "a proposal is not memory yet");

    // Accepted, it is.
    let pattern = proposed.iter().find(|m| m["kind"] == "pattern").unwrap();
    let id = pattern["memory_id"].as_str().unwrap();
    let path = format!("/agent/claude-code/memory/{id}");
    let (status, accepted) =
        send(&f, reqwest::Method::PATCH, &path, f.t.key(), Some(json!({"status": "accepted"}))).await;
    assert_eq!((status, accepted["status"].as_str()), (200, Some("accepted")), "{accepted}");
    f.model.script("KW-AFTER", vec![Turn::text("ok")]);
    let after = f.submit("implement", json!({"message": "KW-AFTER fix the port tests", "branch": "main"})).await;
    let run = f.wait_until_finished(&after).await;
    let system = system_of(&f, "KW-AFTER");
    assert!(system.contains(TAUGHT) && system.contains("bind port 0 in tests"), "{system}");
    assert!(!system.contains("no network"), "the learning is still only proposed");
    assert_eq!(run["memory"]["used"], json!([id]), "{run}");

    // Another repository of the same owner is told nothing.
    let other = GitOrigin::new();
    f.model.script("KW-ELSEWHERE", vec![Turn::text("ok")]);
    let elsewhere =
        f.submit("implement", json!({"message": "KW-ELSEWHERE", "branch": "main", "repository_url": other.url})).await;
    f.wait_until_finished(&elsewhere).await;
    assert!(!system_of(&f, "KW-ELSEWHERE").contains(TAUGHT));

    // Another key: the same repository tells it nothing, and the entries do not exist for it.
    let mallory = f.t.stack.issue_key("mallory").await.unwrap();
    f.model.script("KW-MALLORY", vec![Turn::text("ok")]);
    let response =
        f.t.http
            .post(f.t.url("/agent/claude-code/implement/run"))
            .header("x-api-key", &mallory)
            .json(&json!({"message": "KW-MALLORY", "branch": "main"}))
            .send()
            .await
            .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let theirs: Value = response.json().await.unwrap();
    let theirs = theirs["run_id"].as_str().unwrap().to_owned();
    TestStack::eventually(Duration::from_secs(90), || async {
        let (_, run) = f.t.get_json(&format!("/agent/claude-code/run/{theirs}/status"), &mallory).await;
        (run["status"] == "completed").then_some(())
    })
    .await
    .expect("mallory's run ends");
    assert!(!system_of(&f, "KW-MALLORY").contains(TAUGHT));
    let (status, _) = f.t.get_json(&path, &mallory).await;
    assert_eq!(status, 404);
    assert!(memory_of(&f, "", &mallory).await.is_empty());
    let (status, _) = send(&f, reqwest::Method::DELETE, &path, &mallory, None).await;
    assert_eq!(status, 404);
    f.stop().await;
}

#[tokio::test]
async fn the_same_failure_twice_is_one_entry_and_another_failure_is_another() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    let repo = f.origin.url.clone();
    for _ in 0..2 {
        let run_id = f.submit("implement", json!({"message": "x", "branch": "feature/missing"})).await;
        let run = f.wait_until_finished(&run_id).await;
        assert_eq!(run["error"]["code"], "branch_not_found");
        assert_eq!(run["memory"]["produced"].as_array().map(Vec::len), Some(1), "{run}");
    }
    let failures = memory_of(&f, &format!("repository={repo}&kind=failure"), f.t.key()).await;
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0]["occurrences"], 2);
    assert_eq!(failures[0]["status"], "accepted", "a failure is a fact");

    f.model.script("KW-TURNS", vec![Turn::write("a.txt", "a\n"), Turn::write("b.txt", "b\n")]);
    let run_id = f.submit("implement", json!({"message": "KW-TURNS", "branch": "main", "max_turns": 1})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["error"]["code"], "max_turns_exhausted", "{run}");
    let failures = memory_of(&f, &format!("repository={repo}&kind=failure"), f.t.key()).await;
    assert_eq!(failures.len(), 2, "{failures:#?}");

    // The next run is told about them.
    f.model.script("KW-NEXT", vec![Turn::text("ok")]);
    let next = f.submit("implement", json!({"message": "KW-NEXT branch missing", "branch": "main"})).await;
    f.wait_until_finished(&next).await;
    let system = system_of(&f, "KW-NEXT");
    assert!(system.contains("seen 2 times") && system.contains("branch_not_found"), "{system}");
    f.stop().await;
}

#[tokio::test]
async fn a_malformed_memory_block_leaves_the_run_completed_and_stores_nothing() {
    let f = RunnerFixture::start(vec![Turn::text(block("{not json"))], &[], true).await;
    let run_id = f.submit("implement", json!({"message": "m", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(run["memory"]["produced"].as_array().unwrap().is_empty());
    assert!(memory_of(&f, "", f.t.key()).await.is_empty());
    f.stop().await;
}

#[tokio::test]
async fn epic_decisions_become_decision_entries() {
    let f = RunnerFixture::start_setup(vec![], &[], true, StackSetup::default()).await;
    f.model.script("Epic step: architect\n", vec![Turn::write("docs/design/m.md", "# M\n"), Turn::text("Designed.")]);
    let body = json!({"title": "Remembered", "message": "m", "branch": "main", "budget_usd": 5, "steps": ["architect", "approval"]});
    let (status, epic) = send(&f, reqwest::Method::POST, "/agent/claude-code/epics", f.t.key(), Some(body)).await;
    assert_eq!(status, 202, "{epic}");
    let id = epic["epic_id"].as_str().unwrap().to_owned();
    let decided = TestStack::eventually(Duration::from_secs(90), || async {
        let path = format!("/agent/claude-code/epics/{id}/approvals/1");
        let decision = json!({"decision": "approve", "comment": "Keep the schema additive"});
        let (status, _) = send(&f, reqwest::Method::POST, &path, f.t.key(), Some(decision)).await;
        (status == 202).then_some(())
    })
    .await;
    assert!(decided.is_some(), "the approval took the decision");
    let found = TestStack::eventually(Duration::from_secs(60), || async {
        let entries = memory_of(&f, "kind=decision", f.t.key()).await;
        (!entries.is_empty()).then_some(entries)
    })
    .await
    .expect("a decision entry");
    assert_eq!(found[0]["epic_id"], id.as_str());
    assert!(found[0]["text"].as_str().unwrap().contains("Keep the schema additive"), "{found:#?}");
    assert_eq!(found[0]["fields"]["decision"], "approve");
    f.stop().await;
}

#[tokio::test]
async fn a_person_adds_searches_edits_and_deletes_notes() {
    let f = RunnerFixture::start(vec![], &[], false).await;
    let key = f.t.key().to_owned();
    let note = |text: &str| json!({"text": text, "kind": "learning"});
    let (status, added) = send(
        &f,
        reqwest::Method::POST,
        "/agent/claude-code/memory",
        &key,
        Some(note("Run migrations with sqlx before tests")),
    )
    .await;
    assert_eq!((status, added["status"].as_str()), (201, Some("accepted")), "{added}");
    send(&f, reqwest::Method::POST, "/agent/claude-code/memory", &key, Some(note("The frontend uses pnpm, not npm")))
        .await;
    let found = memory_of(&f, "q=sqlx%20migrations", &key).await;
    assert_eq!(found[0]["memory_id"], added["memory_id"], "similar first: {found:#?}");
    let path = format!("/agent/claude-code/memory/{}", added["memory_id"].as_str().unwrap());
    let (status, edited) =
        send(&f, reqwest::Method::PATCH, &path, &key, Some(json!({"text": "Run sqlx migrate first"}))).await;
    assert_eq!((status, edited["text"].as_str()), (200, Some("Run sqlx migrate first")));
    for (body, code) in [
        (json!({"text": ""}), "invalid_memory"),
        (json!({}), "invalid_memory"),
        (json!({"status": "maybe"}), "invalid_json"),
    ] {
        let (status, answer) = send(&f, reqwest::Method::PATCH, &path, &key, Some(body)).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{answer}");
    }
    let (status, answer) = f.t.get_json("/agent/claude-code/memory?kind=gossip", &key).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_query")));
    let (status, _) = send(&f, reqwest::Method::DELETE, &path, &key, None).await;
    assert_eq!(status, 204);
    let (status, answer) = f.t.get_json(&path, &key).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("memory_not_found")));
    f.stop().await;
}
