//! Promises of the HTTP and WebSocket APIs that need no executor: stream tokens that expire and
//! stay scoped, subscribe errors, sessions that are expired or another key's, session paging,
//! a deployment without a default repository, a failing backing store, idempotency expiry.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use e2e::{Contract, StackSetup, TestStack, WsClient};
use runner_adapters::{DynamoRunStore, DynamoSessionStore};
use runner_core::domain::{Owner, RunId, StreamClaims, StreamTokens};
use runner_core::ports::{IdempotencyRecord, RunStore as _, SessionStore as _};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
/// The stack's `StreamTokenSecret`, so the test can sign tokens the stack accepts.
const SECRET: &str = "e2e-promises-stream-token-secret-0123456789";

fn run_body() -> Value {
    json!({"message": "Add a /version endpoint", "branch": "feature/version"})
}

/// Submits with the stack's key and returns the run id.
async fn submitted(t: &TestStack) -> String {
    let response = t.submit("implement", run_body()).await;
    assert_eq!(response.status().as_u16(), 202);
    response.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_owned()
}

/// The next message that is not a heartbeat.
async fn answer(client: &mut WsClient) -> Value {
    loop {
        let message = client.next_message(WAIT).await.expect("an answer");
        if message["type"] != "heartbeat" {
            return message;
        }
    }
}

/// Reserves an `implement` session with `key` and returns its id.
async fn reserve(t: &TestStack, key: &str) -> String {
    let response = t
        .http
        .post(t.url("/agent/claude-code/sessions"))
        .header("x-api-key", key)
        .json(&json!({"workflow": "implement", "branch": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json::<Value>().await.unwrap()["session_id"].as_str().unwrap().to_owned()
}

/// Any method, with `key`; the body as JSON (`Null` when there is none).
async fn call(t: &TestStack, method: reqwest::Method, path: &str, key: &str) -> (u16, Value) {
    let response = t.http.request(method, t.url(path)).header("x-api-key", key).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn sessions_store(t: &TestStack) -> DynamoSessionStore {
    DynamoSessionStore::new(aws_sdk_dynamodb::Client::new(&t.stack.sdk), &t.stack.settings.sessions_table)
}

async fn table_items(t: &TestStack, table: &str) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    aws_sdk_dynamodb::Client::new(&t.stack.sdk).scan().table_name(table).send().await.unwrap().items.unwrap_or_default()
}

#[tokio::test]
async fn stream_tokens_expire_and_grant_one_run_of_one_owner() {
    let t = TestStack::start_setup(StackSetup {
        parameters: HashMap::from([("StreamTokenSecret".to_owned(), SECRET.to_owned())]),
        ..StackSetup::default()
    })
    .await;
    let tokens = StreamTokens::new(SECRET.as_bytes().to_vec());
    let response = t.submit("implement", run_body()).await;
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    let run_id: RunId = body["run_id"].as_str().unwrap().parse().unwrap();
    // The stack signs with the secret it was given: its own token verifies under it.
    let with_token = body["stream"]["url_with_token"].as_str().expect("a token URL");
    let (_, issued) = with_token.split_once("?token=").expect("a token in the URL");
    let claims = tokens.verify(issued, Utc::now()).expect("the submit's token is signed with the stack's secret");
    assert_eq!((claims.run_id, claims.owner.as_str()), (run_id, "local"));
    let other_run = submitted(&t).await;
    let url = |claims: &StreamClaims| format!("{}?token={}", t.stack.ws_url, tokens.issue(claims));
    let contract = Contract::load();

    // Genuine, of the right owner and run, but past its expiry: the handshake is refused.
    let expired = StreamClaims {
        run_id,
        owner: Owner::new("local"),
        expires_at: Utc::now() - chrono::Duration::seconds(5),
        key: None,
    };
    assert_eq!(WsClient::connect(&url(&expired), None).await.err(), Some(401), "an expired token");

    let fresh = StreamClaims {
        run_id,
        owner: Owner::new("local"),
        expires_at: Utc::now() + chrono::Duration::minutes(5),
        key: None,
    };
    // The same claims under another secret are refused too.
    let foreign = StreamTokens::new(b"another-secret-that-is-at-least-32-chars".to_vec()).issue(&fresh);
    let foreign_url = format!("{}?token={foreign}", t.stack.ws_url);
    assert_eq!(WsClient::connect(&foreign_url, None).await.err(), Some(401), "a token of another secret");

    // A fresh one connects; it grants its run and no other.
    let mut client = WsClient::connect(&url(&fresh), None).await.expect("a fresh token connects");
    client.subscribe(&other_run, 0).await;
    let denied = answer(&mut client).await;
    assert_eq!((denied["type"].as_str(), denied["code"].as_str()), (Some("error"), Some("run_not_found")), "{denied}");
    client.subscribe(&run_id.to_string(), 0).await;
    let ack = answer(&mut client).await;
    let run_str = run_id.to_string();
    assert_eq!((ack["type"].as_str(), ack["run_id"].as_str()), (Some("subscribed"), Some(run_str.as_str())), "{ack}");

    // A genuine token naming this run for another owner does not open it.
    let stranger_claims = StreamClaims { run_id, owner: Owner::new("team-b"), expires_at: fresh.expires_at, key: None };
    let mut stranger = WsClient::connect(&url(&stranger_claims), None).await.expect("a genuine token connects");
    stranger.subscribe(&run_id.to_string(), 0).await;
    let refused = answer(&mut stranger).await;
    assert_eq!(refused["code"], "run_not_found", "the owner in the token is checked: {refused}");

    for message in client.messages.iter().chain(&stranger.messages) {
        contract.check(message);
    }
    client.close().await;
    stranger.close().await;
    t.stop().await;
}

#[tokio::test]
async fn bad_subscribe_messages_get_their_error_code_and_leave_the_connection_usable() {
    let t = TestStack::start().await;
    let run_id = submitted(&t).await;
    let mut client = WsClient::connect(&t.stack.ws_url, Some(t.key())).await.expect("connect");
    let cases = [
        (json!({"action": "subscribe"}), "invalid_message"),
        (json!({"action": "subscribe", "run_id": 42}), "invalid_message"),
        (json!({"action": "subscribe", "run_id": run_id, "after_seq": -1}), "invalid_message"),
        (json!({"action": "subscribe", "run_id": "nope"}), "invalid_run_id"),
        (json!({"action": "subscribe", "run_id": RunId::new().to_string()}), "run_not_found"),
    ];
    for (message, code) in cases {
        client.send(message.clone()).await;
        let error = answer(&mut client).await;
        assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some(code)), "{message}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    }
    // None of them took the connection's one subscription.
    client.subscribe(&run_id, 0).await;
    let ack = answer(&mut client).await;
    assert_eq!((ack["type"].as_str(), ack["run_id"].as_str()), (Some("subscribed"), Some(run_id.as_str())));
    let contract = Contract::load();
    assert!(client.messages.len() >= 6);
    for message in &client.messages {
        contract.check(message);
    }
    client.close().await;
    t.stop().await;
}

#[tokio::test]
async fn expired_and_another_keys_sessions_are_unknown_to_read_history_and_delete() {
    let t = TestStack::start().await;
    let stranger = t.stack.issue_key("team-b").await.unwrap();
    let theirs = reserve(&t, &stranger).await;
    let mine = reserve(&t, t.key()).await;
    // Before: each is there for its owner.
    assert_eq!(t.get_json(&format!("/agent/claude-code/sessions/{theirs}"), &stranger).await.0, 200);
    assert_eq!(t.get_json(&format!("/agent/claude-code/sessions/{mine}"), t.key()).await.0, 200);
    assert_eq!(t.get_json(&format!("/agent/claude-code/sessions/{mine}/history"), t.key()).await.0, 200);

    // Mine lapses (the janitor is off: the record stays in the table).
    let sessions = sessions_store(&t);
    let mine_id: uuid::Uuid = mine.parse().unwrap();
    let mut lapsed = sessions.get(mine_id).await.unwrap().unwrap();
    let expected = lapsed.version;
    lapsed.expires_at = Utc::now() - chrono::Duration::minutes(1);
    lapsed.version += 1;
    sessions.update(&lapsed, expected).await.unwrap();

    for (what, session) in [("another key's", &theirs), ("expired", &mine)] {
        let routes = [
            (reqwest::Method::GET, format!("/agent/claude-code/sessions/{session}")),
            (reqwest::Method::GET, format!("/agent/claude-code/sessions/{session}/history")),
            (reqwest::Method::DELETE, format!("/agent/claude-code/sessions/{session}")),
        ];
        for (method, path) in routes {
            let (status, body) = call(&t, method.clone(), &path, t.key()).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (404, Some("unknown_session")),
                "{what} session, {method} {path}: {body}"
            );
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        }
    }

    // DELETE removed neither.
    let theirs_id: uuid::Uuid = theirs.parse().unwrap();
    assert!(sessions.get(theirs_id).await.unwrap().is_some(), "another key's session is still stored");
    let still = sessions.get(mine_id).await.unwrap().expect("the expired session is still stored");
    assert_eq!(still.version, lapsed.version, "and unchanged");
    assert_eq!(t.get_json(&format!("/agent/claude-code/sessions/{theirs}"), &stranger).await.0, 200);
    let (_, list) = t.get_json("/agent/claude-code/sessions", t.key()).await;
    assert_eq!(list["sessions"], json!([]), "an expired session is not listed either");
    t.stop().await;
}

#[tokio::test]
async fn session_listing_pages_through_every_session_once() {
    let t = TestStack::start().await;
    let mut reserved = Vec::new();
    for _ in 0..5 {
        reserved.push(reserve(&t, t.key()).await);
    }
    let stranger = t.stack.issue_key("team-b").await.unwrap();
    let foreign = reserve(&t, &stranger).await;

    let (sessions, sizes) = t.every_page("/agent/claude-code/sessions", "sessions", t.key(), 2).await;
    assert!(sizes.iter().all(|n| *n <= 2), "at most 2 a page: {sizes:?}");
    let pages = sizes.len();
    let seen: Vec<String> = sessions.iter().map(|s| s["session_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(seen.len(), reserved.len(), "each session once: {seen:?}");
    let (mut seen_sorted, mut reserved_sorted) = (seen.clone(), reserved.clone());
    seen_sorted.sort();
    reserved_sorted.sort();
    assert_eq!(seen_sorted, reserved_sorted, "every session of the key");
    assert!(!seen.contains(&foreign), "never another key's");
    assert!(pages >= 3);
    t.stop().await;
}

#[tokio::test]
async fn without_a_default_repository_a_request_naming_none_is_refused_and_stores_nothing() {
    let t = TestStack::start_setup(StackSetup {
        parameters: HashMap::from([("DefaultRepositoryUrl".to_owned(), String::new())]),
        ..StackSetup::default()
    })
    .await;
    let send = |body: Value| {
        t.http
            .post(t.url("/agent/claude-code/implement/run"))
            .header("x-api-key", t.key())
            .header("Idempotency-Key", "no-repository")
            .json(&body)
            .send()
    };
    let response = send(run_body()).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "repository_required", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let (status, session) = {
        let response = t
            .http
            .post(t.url("/agent/claude-code/sessions"))
            .header("x-api-key", t.key())
            .json(&json!({"workflow": "implement", "branch": "main"}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    assert_eq!((status, session["error"]["code"].as_str()), (400, Some("repository_required")), "{session}");

    // Nothing stored: no run, no claimed key, no session.
    let (_, list) = t.get_json("/agent/claude-code/runs", t.key()).await;
    assert_eq!(list["runs"], json!([]));
    assert!(table_items(&t, &t.stack.settings.runs_table).await.is_empty(), "no run record");
    assert!(table_items(&t, &t.stack.settings.idempotency_table).await.is_empty(), "no idempotency record");
    assert!(table_items(&t, &t.stack.settings.sessions_table).await.is_empty(), "no session record");

    // Naming an allowed repository works, under the same key: the refusal did not claim it.
    let named =
        send(json!({"message": "m", "branch": "main", "repository_url": e2e::DEFAULT_REPOSITORY})).await.unwrap();
    assert_eq!(named.status().as_u16(), 202);
    assert_eq!(named.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("false"));
    let run: Value = named.json().await.unwrap();
    let status_path = format!("/agent/claude-code/run/{}/status", run["run_id"].as_str().unwrap());
    let (_, view) = t.get_json(&status_path, t.key()).await;
    assert_eq!(view["repository_url"], e2e::DEFAULT_REPOSITORY);
    t.stop().await;
}

#[tokio::test]
async fn a_missing_runs_table_is_a_503_dependency_failed_that_names_no_table() {
    let t = TestStack::start().await;
    let run_id = submitted(&t).await;
    let (status, _) = t.get_json(&format!("/agent/claude-code/run/{run_id}/status"), t.key()).await;
    assert_eq!(status, 200);
    let table = t.stack.settings.runs_table.clone();
    aws_sdk_dynamodb::Client::new(&t.stack.sdk).delete_table().table_name(&table).send().await.unwrap();

    let status_path = format!("/agent/claude-code/run/{run_id}/status");
    let cancel_path = format!("/agent/claude-code/run/{run_id}/cancel");
    let mut answers = vec![
        ("status", t.get_json(&status_path, t.key()).await),
        ("cancel", t.post_json(&cancel_path, t.key()).await),
        ("list", t.get_json("/agent/claude-code/runs", t.key()).await),
    ];
    let submit = t.submit("implement", run_body()).await;
    let submit_status = submit.status().as_u16();
    answers.push(("submit", (submit_status, submit.json().await.unwrap_or(Value::Null))));
    for (what, (status, body)) in answers {
        assert_eq!((status, body["error"]["code"].as_str()), (503, Some("dependency_failed")), "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{what}: {body}");
        for secret in [table.as_str(), "ResourceNotFound", "dynamodb"] {
            assert!(!message.contains(secret), "{what}: the message leaks {secret:?}: {message}");
        }
    }
    t.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_past_its_24_hours_makes_a_new_run() {
    const KEY: &str = "nightly-2026-11-27";
    let t = TestStack::start().await;
    let body = run_body();
    let send = || t.submit_keyed("implement", &body, t.key(), KEY);
    let (status, replayed, first) = send().await;
    assert_eq!((status, replayed.as_str()), (202, "false"));
    let first_id = first["run_id"].as_str().unwrap().to_owned();

    // The key is remembered for 24 hours.
    let records: Vec<IdempotencyRecord> = table_items(&t, &t.stack.settings.idempotency_table)
        .await
        .into_iter()
        .map(|item| serde_dynamo::from_item(item).expect("an idempotency record"))
        .collect();
    let record = records.into_iter().find(|r| r.key == KEY).expect("the key's record");
    assert_eq!(record.run_id.to_string(), first_id);
    let window = record.expires_at - Utc::now();
    assert!(
        window > chrono::Duration::hours(23) && window <= chrono::Duration::hours(24),
        "remembered for 24 h, not {window}"
    );

    // The same record as it stands a day later, before DynamoDB's TTL has swept it.
    let store = DynamoRunStore::new(
        aws_sdk_dynamodb::Client::new(&t.stack.sdk),
        &t.stack.settings.runs_table,
        &t.stack.settings.idempotency_table,
    );
    store.release_idempotency_key(&record.owner, &record.key).await.unwrap();
    let lapsed = IdempotencyRecord { expires_at: Utc::now() - chrono::Duration::hours(1), ..record.clone() };
    assert_eq!(store.claim_idempotency_key(&lapsed).await.unwrap(), None, "the lapsed record is written");

    let (status, replayed, second) = send().await;
    assert_eq!((status, replayed.as_str()), (202, "false"), "{second}");
    let second_id = second["run_id"].as_str().unwrap().to_owned();
    assert_ne!(second_id, first_id, "a new run, not a replay of the old one");
    assert_eq!(second["status"], "queued");

    // The key now names the new run, for a fresh 24 hours.
    let (status, replayed, third) = send().await;
    assert_eq!((status, replayed.as_str()), (202, "true"));
    assert_eq!(third["run_id"].as_str(), Some(second_id.as_str()));
    let (_, list) = t.get_json("/agent/claude-code/runs", t.key()).await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 2, "the old run and the new one");
    t.stop().await;
}
