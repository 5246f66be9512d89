//! Every bad input gets its status and machine-readable code, and writes nothing.

use e2e::TestStack;
use serde_json::{Value, json};

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    key: Option<String>,
    content_type: Option<&'static str>,
    extra_header: Option<(&'static str, &'static str)>,
    body: Option<String>,
    status: u16,
    code: &'static str,
}

fn post_run(name: &'static str, workflow: &str, body: Value, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method: "POST",
        path: format!("/agent/claude-code/{workflow}/run"),
        key: None,
        content_type: Some("application/json"),
        extra_header: None,
        body: Some(body.to_string()),
        status,
        code,
    }
}

fn get(name: &'static str, path: &str, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method: "GET",
        path: path.to_owned(),
        key: None,
        content_type: None,
        extra_header: None,
        body: None,
        status,
        code,
    }
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

#[tokio::test]
async fn each_bad_input_gets_its_status_and_code_and_writes_nothing() {
    let t = TestStack::start().await;
    let ok = json!({"message": "do the thing", "branch": "main"});
    let mut cases = vec![
        post_run("unknown workflow", "deploy", ok.clone(), 404, "unknown_workflow"),
        post_run("bad branch", "implement", with(ok.clone(), "branch", json!("a..b")), 400, "invalid_branch"),
        post_run("branch with space", "implement", with(ok.clone(), "branch", json!("a b")), 400, "invalid_branch"),
        post_run(
            "branch too long",
            "implement",
            with(ok.clone(), "branch", json!("b".repeat(300))),
            400,
            "branch_too_long",
        ),
        post_run("empty message", "implement", with(ok.clone(), "message", json!("  ")), 400, "empty_message"),
        post_run(
            "message too large",
            "implement",
            with(ok.clone(), "message", json!("x".repeat(100 * 1024 + 1))),
            400,
            "message_too_large",
        ),
        post_run("max_turns 0", "implement", with(ok.clone(), "max_turns", json!(0)), 400, "invalid_max_turns"),
        post_run("max_turns 201", "implement", with(ok.clone(), "max_turns", json!(201)), 400, "invalid_max_turns"),
        post_run(
            "session not a uuid",
            "implement",
            with(ok.clone(), "session_id", json!("abc")),
            400,
            "invalid_session_id",
        ),
        post_run(
            "repository with credentials",
            "implement",
            with(ok.clone(), "repository_url", json!("https://u:p@git.example.com/acme/x.git")),
            400,
            "invalid_repository_url",
        ),
        post_run(
            "repository outside the allowlist",
            "implement",
            with(ok.clone(), "repository_url", json!("https://elsewhere.example.com/x.git")),
            400,
            "repository_not_allowed",
        ),
        post_run(
            "metadata not an object",
            "implement",
            with(ok.clone(), "metadata", json!([1])),
            400,
            "invalid_metadata",
        ),
        post_run(
            "metadata too large",
            "implement",
            with(ok.clone(), "metadata", json!({"k": "v".repeat(17 * 1024)})),
            400,
            "metadata_too_large",
        ),
        post_run("unknown field", "implement", with(ok.clone(), "max_turn", json!(3)), 400, "invalid_json"),
        post_run("missing branch", "implement", json!({"message": "m"}), 400, "invalid_json"),
        post_run("wrong type", "implement", with(ok.clone(), "max_turns", json!("five")), 400, "invalid_json"),
        get("unknown run", &format!("/agent/claude-code/run/{}/status", uuid::Uuid::now_v7()), 404, "run_not_found"),
        get("run id not a uuid", "/agent/claude-code/run/nope/status", 400, "invalid_run_id"),
        get("bad status filter", "/agent/claude-code/runs?status=done", 400, "invalid_query"),
        get("bad limit", "/agent/claude-code/runs?limit=0", 400, "invalid_query"),
        get("limit too big", "/agent/claude-code/runs?limit=101", 400, "invalid_query"),
        get("unknown query parameter", "/agent/claude-code/runs?sort=asc", 400, "invalid_query"),
        get("unknown workflow filter", "/agent/claude-code/runs?workflow=deploy", 404, "unknown_workflow"),
        get("bad cursor", "/agent/claude-code/runs?cursor=!!!", 400, "invalid_cursor"),
        get("forged cursor", "/agent/claude-code/runs?cursor=bm90LWEtdXVpZA", 400, "invalid_cursor"),
        get("no such route", "/agent/claude-code/nothing/here", 404, "not_found"),
    ];
    let mut malformed = post_run("malformed JSON", "implement", json!(null), 400, "invalid_json");
    malformed.body = Some("{\"message\": ".into());
    cases.push(malformed);
    let mut no_type = post_run("no content type", "implement", ok.clone(), 415, "unsupported_media_type");
    no_type.content_type = None;
    cases.push(no_type);
    let mut text = post_run("text body", "implement", ok.clone(), 415, "unsupported_media_type");
    text.content_type = Some("text/plain");
    cases.push(text);
    let mut huge = post_run("body over the limit", "implement", ok.clone(), 413, "payload_too_large");
    huge.body = Some(format!("{{\"message\": \"{}\", \"branch\": \"main\"}}", "x".repeat(300 * 1024)));
    cases.push(huge);
    let mut bad_idem = post_run("bad idempotency key", "implement", ok.clone(), 400, "invalid_idempotency_key");
    bad_idem.extra_header = Some(("Idempotency-Key", "has spaces in it"));
    cases.push(bad_idem);
    let mut wrong_method = get("wrong method", "/agent/claude-code/implement/run", 405, "method_not_allowed");
    wrong_method.key = Some(t.key().to_owned());
    cases.push(wrong_method);
    let mut no_key = post_run("no key", "implement", ok.clone(), 401, "unauthorized");
    no_key.key = Some(String::new());
    cases.push(no_key);
    let mut bad_key = post_run("unknown key", "implement", ok.clone(), 401, "unauthorized");
    bad_key.key = Some("crk_0000".into());
    cases.push(bad_key);
    let mut no_key_get = get(
        "no key on status",
        &format!("/agent/claude-code/run/{}/status", uuid::Uuid::now_v7()),
        401,
        "unauthorized",
    );
    no_key_get.key = Some(String::new());
    cases.push(no_key_get);

    let mut failures = Vec::new();
    for case in cases {
        let mut request = match case.method {
            "POST" => t.http.post(t.url(&case.path)),
            _ => t.http.get(t.url(&case.path)),
        };
        match case.key.as_deref() {
            None => request = request.header("x-api-key", t.key()),
            Some("") => {}
            Some(key) => request = request.header("x-api-key", key),
        }
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some((name, value)) = case.extra_header {
            request = request.header(name, value);
        }
        if let Some(body) = case.body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("<none>").to_owned();
        let has_message = body["error"]["message"].as_str().is_some_and(|m| !m.is_empty());
        if status != case.status || code != case.code || !has_message {
            failures.push(format!("{}: got {status} {code} ({body}), want {} {}", case.name, case.status, case.code));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let (_, list) = t.get_json("/agent/claude-code/runs", t.key()).await;
    assert_eq!(list["runs"], json!([]), "no bad request created a run");
    t.stop().await;
}
