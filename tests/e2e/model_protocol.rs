//! The real CLI against the parts of the Messages API protocol beyond one block per answer:
//! several content blocks in one message, errors before and in the middle of a stream, a
//! script of its own for each run, and the headers the CLI sends.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::RunnerFixture;
use local::model::Turn;
use serde_json::{Value, json};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn agent_loop(request: &Value) -> bool {
    request["tools"].as_array().is_some_and(|t| !t.is_empty())
}

#[tokio::test]
async fn text_and_two_parallel_tool_calls_in_one_message_complete_the_run_with_both_files() {
    let turns = vec![
        Turn::Blocks(vec![
            Turn::text("Writing both files at once."),
            Turn::write("left.txt", "left — ünïcode ✓\n"),
            Turn::write("right.txt", "right ✓ ŝide\n"),
        ]),
        Turn::text("Both files written."),
    ];
    let f = RunnerFixture::start(turns, &[], true).await;
    let before = f.origin.head("main");
    let run_id = f.submit("implement", json!({"message": "Write left.txt and right.txt", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["result_summary"], "Both files written.");

    // Both files, whose content came in several deltas, reached the origin in one commit.
    let after = f.origin.head("main");
    assert_ne!(after, before);
    assert_eq!(run["commits"], json!([after]));
    assert_eq!(f.origin.file("main", "left.txt").as_deref(), Some("left — ünïcode ✓\n"));
    assert_eq!(f.origin.file("main", "right.txt").as_deref(), Some("right ✓ ŝide\n"));
    assert_eq!(run["diff_stats"]["files_changed"], 2, "{run}");

    // The CLI took it as one assistant message of three blocks and answered both calls at once.
    let requests = f.model.requests();
    let last = requests.iter().rev().find(|r| agent_loop(r)).expect("an agent-loop request");
    let messages = last["messages"].as_array().expect("messages");
    let assistant = messages.iter().find(|m| m["role"] == "assistant").expect("the model's message is sent back");
    let blocks = assistant["content"].as_array().expect("content blocks");
    let kinds: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(kinds, ["text", "tool_use", "tool_use"], "one message, three blocks: {assistant}");
    let mut calls: Vec<&str> =
        blocks.iter().filter(|b| b["type"] == "tool_use").map(|b| b["id"].as_str().unwrap_or_default()).collect();
    assert_ne!(calls[0], calls[1], "each tool call has an id of its own");
    let mut results: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| b["tool_use_id"].as_str().unwrap_or_default())
        .collect();
    calls.sort_unstable();
    results.sort_unstable();
    assert_eq!(results, calls, "a result for each call");

    // In the frames: the text and both calls carry one message id; the final answer another.
    let frames: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT data #>> '{message,id}', data #>> '{message,content,0,type}' FROM claude_cli_outputs \
         WHERE run_id = $1 AND output_type = 'assistant' ORDER BY sequence_number",
    )
    .bind(uuid::Uuid::parse_str(&run_id).unwrap())
    .fetch_all(&f.t.stack.pool)
    .await
    .unwrap();
    let ids = |kind: &str| -> Vec<Option<String>> {
        frames.iter().filter(|(_, k)| k.as_deref() == Some(kind)).map(|(id, _)| id.clone()).collect()
    };
    let (texts, tools) = (ids("text"), ids("tool_use"));
    assert_eq!((texts.len(), tools.len()), (2, 2), "{frames:?}");
    assert!(tools[0].is_some() && tools[0] == tools[1] && texts[0] == tools[0], "{frames:?}");
    assert_ne!(texts[1], texts[0], "the final answer is a message of its own: {frames:?}");
    f.stop().await;
}

#[tokio::test]
async fn an_api_error_the_cli_gives_up_on_fails_the_run_with_cli_error() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    // Every agent-loop request fails: the CLI's own retries and fallbacks get the error too.
    f.model.set_fallback(Turn::Fail(400));
    let before = f.origin.head("main");
    let run_id = f.submit("implement", json!({"message": "Write something", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "cli_error", "{run}");
    let message = run["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("400") && message.contains("scripted failure"), "the API's error is quoted: {run}");
    assert!(f.model.requests().iter().any(agent_loop), "the model was asked");
    assert_eq!(f.origin.head("main"), before, "a failed run pushes nothing");
    f.stop().await;
}

#[tokio::test]
async fn an_error_in_the_middle_of_the_stream_fails_the_run_with_cli_error() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    // The CLI retries a broken stream without streaming; those requests get the same error.
    f.model.set_fallback(Turn::stream_error("invalid_request_error", "scripted stream failure"));
    let before = f.origin.head("main");
    let run_id = f.submit("implement", json!({"message": "Write something", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "cli_error", "{run}");
    assert!(
        run["error"]["message"].as_str().unwrap_or_default().contains("scripted stream failure"),
        "the error's message is quoted: {run}"
    );
    let requests = f.model.requests();
    let first = requests.iter().find(|r| agent_loop(r)).expect("the model was asked");
    assert_eq!(first["stream"], true, "the first answer was a stream, broken after message_start");
    assert_eq!(f.origin.head("main"), before, "a failed run pushes nothing");
    f.stop().await;
}

#[tokio::test]
async fn two_runs_at_once_each_follow_their_own_script() {
    let f = RunnerFixture::start(vec![], &[], true).await;
    // Branch `alpha` at main; branch `beta` one commit further, whose message names the OTHER
    // run's keyword: the CLI shows recent commits to the model beside the caller's message, so
    // only matching the caller's own text keeps run B off run A's script.
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    git(scratch.path(), &["clone", "--quiet", f.origin.url.as_str(), work.to_str().unwrap()]);
    git(&work, &["push", "--quiet", "origin", "main:refs/heads/alpha"]);
    git(&work, &["checkout", "--quiet", "-b", "beta"]);
    std::fs::write(work.join("NOTES.md"), "notes\n").unwrap();
    git(&work, &["add", "."]);
    git(
        &work,
        &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "Notes for KW-ALPHA"],
    );
    git(&work, &["push", "--quiet", "origin", "beta"]);

    // The first turns take a moment, so the two runs are in flight together.
    let slow = |turn: Turn| Turn::Delayed(Duration::from_secs(1), Box::new(turn));
    f.model.script("KW-ALPHA", vec![slow(Turn::write("alpha.txt", "alpha\n")), Turn::text("alpha done")]);
    f.model.script("KW-BETA", vec![slow(Turn::write("beta.txt", "beta\n")), Turn::text("beta done")]);
    let (a, b) = tokio::join!(
        f.submit("implement", json!({"message": "Write alpha.txt KW-ALPHA", "branch": "alpha"})),
        f.submit("implement", json!({"message": "Write beta.txt KW-BETA", "branch": "beta"}))
    );
    let (run_a, run_b) = tokio::join!(f.wait_until_finished(&a), f.wait_until_finished(&b));
    assert_eq!((run_a["status"].as_str(), run_b["status"].as_str()), (Some("completed"), Some("completed")));
    assert_eq!(
        (run_a["result_summary"].as_str(), run_b["result_summary"].as_str()),
        (Some("alpha done"), Some("beta done"))
    );

    assert_eq!(f.origin.file("alpha", "alpha.txt").as_deref(), Some("alpha\n"));
    assert_eq!(f.origin.file("beta", "beta.txt").as_deref(), Some("beta\n"));
    assert_eq!(f.origin.file("alpha", "beta.txt"), None, "nothing of B's script ran in A");
    assert_eq!(f.origin.file("beta", "alpha.txt"), None, "nothing of A's script ran in B");
    for (branch, run, id, keyword) in [("alpha", &run_a, &a, "KW-ALPHA"), ("beta", &run_b, &b, "KW-BETA")] {
        let head = f.origin.head(branch);
        assert_eq!(run["commits"], json!([head]), "{run}");
        let message = git(&f.origin.bare(), &["log", "-1", "--format=%B", branch]);
        assert!(message.contains(id.as_str()) && message.contains(keyword), "{branch}: {message}");
    }
    f.stop().await;
}

#[tokio::test]
async fn the_cli_sends_its_api_key_and_the_api_version_on_every_request() {
    let f = RunnerFixture::start(vec![Turn::write("a.txt", "a\n"), Turn::text("done")], &[], true).await;
    let run_id = f.submit("implement", json!({"message": "Write a.txt", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let requests = f.model.requests_with_headers();
    assert!(requests.iter().filter(|(_, body)| agent_loop(body)).count() >= 2, "a request per model turn");
    for (headers, body) in &requests {
        assert_eq!(
            headers.get("x-api-key").map(String::as_str),
            Some("sk-test-scripted"),
            "the key the stack was given: {headers:?} {}",
            body["model"]
        );
        assert!(headers.get("anthropic-version").is_some_and(|v| !v.is_empty()), "{headers:?}");
    }

    // Like the real API, the model refuses a request without them.
    let url = format!("{}/v1/messages", f.model.url());
    let body = json!({"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let no_key = f.t.http.post(&url).header("anthropic-version", "2023-06-01").json(&body).send().await.unwrap();
    assert_eq!(no_key.status().as_u16(), 401);
    assert_eq!(no_key.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");
    let no_version = f.t.http.post(&url).header("x-api-key", "sk-test-scripted").json(&body).send().await.unwrap();
    assert_eq!(no_version.status().as_u16(), 400);
    assert_eq!(no_version.json::<Value>().await.unwrap()["error"]["type"], "invalid_request_error");
    f.stop().await;
}
