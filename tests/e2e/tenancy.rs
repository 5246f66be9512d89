//! A key is a tenant: its bursts of submits and connections, and its runs in flight, are capped
//! (by the deployment, or by the key's own limits), and one key at its limits leaves the others
//! untouched. Refusals are 429s that say when to retry.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use e2e::{TestStack, WsClient};
use runner_core::domain::ApiKey;
use serde_json::json;

async fn submit(t: &TestStack, key: &str, idempotency_key: Option<&str>) -> reqwest::Response {
    let mut request = t
        .http
        .post(t.url("/agent/claude-code/implement/run"))
        .header("x-api-key", key)
        .json(&json!({"message": "limits", "branch": "main"}));
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    request.send().await.unwrap()
}

async fn refusal(response: reqwest::Response) -> (u16, Option<u64>, String) {
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, retry_after, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

/// Sets attributes on a key's item, as an operator would with `aws dynamodb update-item`.
async fn set_on_key(t: &TestStack, key: &str, expression: &str, values: &[(&str, AttributeValue)]) {
    let hash = ApiKey::from_presented(key).unwrap().hash();
    let mut update = aws_sdk_dynamodb::Client::new(&t.stack.sdk)
        .update_item()
        .table_name(&t.stack.settings.api_keys_table)
        .key("key_hash", AttributeValue::S(hash.as_str().to_owned()))
        .update_expression(expression);
    for (name, value) in values {
        update = update.expression_attribute_values(*name, value.clone());
    }
    update.send().await.unwrap();
}

#[tokio::test]
async fn a_burst_of_submits_beyond_the_limit_is_refused_with_when_to_retry_and_other_keys_go_on() {
    let t = TestStack::start_with(HashMap::from([
        ("TenantSubmitBurst".to_owned(), "3".to_owned()),
        ("TenantSubmitsPerMinute".to_owned(), "1".to_owned()),
    ]))
    .await;
    for _ in 0..3 {
        assert_eq!(submit(&t, t.key(), None).await.status().as_u16(), 202);
    }
    let (status, retry_after, code) = refusal(submit(&t, t.key(), None).await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)), "Retry-After: {retry_after:?}");

    // Nothing was created for the refused submission.
    let (_, page) = t.get_json("/agent/claude-code/runs?limit=100", t.key()).await;
    assert_eq!(page["runs"].as_array().map(Vec::len), Some(3), "{page}");
    // Another tenant is not slowed by this one.
    let other = t.stack.issue_key("other-team").await.unwrap();
    assert_eq!(submit(&t, &other, None).await.status().as_u16(), 202);
    let refused =
        t.stack.metrics().recent().iter().any(|e| e.measurements.iter().any(|m| m.name == "RateLimitRefusals"));
    assert!(refused, "the refusal is counted");
    t.stop().await;
}

#[tokio::test]
async fn a_keys_own_cap_on_runs_in_flight_holds_until_one_ends_and_a_replay_is_never_refused() {
    let t = TestStack::start().await;
    let key = t.stack.issue_key("capped-team").await.unwrap();
    // An operator gives the key its own limit, as docs/operations.md says.
    set_on_key(&t, &key, "SET max_active_runs = :n", &[(":n", AttributeValue::N("2".into()))]).await;

    let first: serde_json::Value = submit(&t, &key, Some("first")).await.json().await.unwrap();
    assert_eq!(submit(&t, &key, None).await.status().as_u16(), 202);
    let (status, retry_after, code) = refusal(submit(&t, &key, Some("third")).await).await;
    assert_eq!((status, code.as_str()), (429, "quota_exceeded"));
    assert!(retry_after.is_some());
    // The refused request's key was released: the same request goes through once there is room.
    let replay = submit(&t, &key, Some("first")).await;
    assert_eq!(replay.status().as_u16(), 202, "a replay creates nothing and is never refused");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    // The deployment's default still applies to the stack's own key.
    assert_eq!(submit(&t, t.key(), None).await.status().as_u16(), 202);

    let run_id = first["run_id"].as_str().unwrap();
    let (status, _) = t.post_json(&format!("/agent/claude-code/run/{run_id}/cancel"), &key).await;
    assert_eq!(status, 200);
    assert_eq!(submit(&t, &key, Some("third")).await.status().as_u16(), 202, "an ended run frees its place");
    t.stop().await;
}

#[tokio::test]
async fn websocket_connections_beyond_the_keys_burst_are_refused() {
    let t = TestStack::start_with(HashMap::from([
        ("TenantConnectBurst".to_owned(), "2".to_owned()),
        ("TenantConnectsPerMinute".to_owned(), "0".to_owned()),
    ]))
    .await;
    let _first = WsClient::connect(&t.stack.ws_url, Some(t.key())).await.expect("first connection");
    let _second = WsClient::connect(&t.stack.ws_url, Some(t.key())).await.expect("second connection");
    let third = WsClient::connect(&t.stack.ws_url, Some(t.key())).await;
    assert_eq!(third.err(), Some(429), "the third handshake is refused with 429");
    let other = t.stack.issue_key("other-team").await.unwrap();
    assert!(WsClient::connect(&t.stack.ws_url, Some(&other)).await.is_ok(), "another key connects");
    t.stop().await;
}

#[tokio::test]
async fn a_key_holds_no_more_websocket_connections_open_than_its_cap_and_a_closed_one_frees_its_place() {
    let t = TestStack::start().await;
    let key = t.stack.issue_key("chatty-team").await.unwrap();
    set_on_key(&t, &key, "SET max_connections = :n", &[(":n", AttributeValue::N("2".into()))]).await;
    let first = WsClient::connect(&t.stack.ws_url, Some(&key)).await.expect("first connection");
    let _second = WsClient::connect(&t.stack.ws_url, Some(&key)).await.expect("second connection");
    let third = WsClient::connect(&t.stack.ws_url, Some(&key)).await;
    assert_eq!(third.err(), Some(429), "a third open connection is refused");
    assert!(WsClient::connect(&t.stack.ws_url, Some(t.key())).await.is_ok(), "the deployment's cap for others");
    first.close().await;
    let again = TestStack::eventually(std::time::Duration::from_secs(10), || async {
        WsClient::connect(&t.stack.ws_url, Some(&key)).await.ok()
    })
    .await;
    assert!(again.is_some(), "a closed connection frees its place");
    t.stop().await;
}

#[tokio::test]
async fn a_keys_own_repository_allowlist_replaces_the_deployments_for_its_runs_only() {
    let t = TestStack::start().await;
    let key = t.stack.issue_key("tools-team").await.unwrap();
    let allowlist = vec!["https://git.example.com/acme/tools/*".into(), "https://git.other.org/*".into()];
    set_on_key(&t, &key, "SET repository_allowlist = :list", &[(":list", AttributeValue::Ss(allowlist))]).await;
    let submit_to = |key: String, url: &'static str| {
        let request = t
            .http
            .post(t.url("/agent/claude-code/implement/run"))
            .header("x-api-key", key)
            .json(&json!({"message": "where", "branch": "main", "repository_url": url}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
    };
    let stack_key = t.key().to_owned();
    // The key's list, not the deployment's: narrower inside acme, wider outside it.
    assert_eq!(submit_to(key.clone(), "https://git.example.com/acme/tools/cli.git").await.0, 202);
    assert_eq!(submit_to(key.clone(), "https://git.other.org/lib.git").await.0, 202);
    let refused = submit_to(key.clone(), "https://git.example.com/acme/billing.git").await;
    assert_eq!(refused, (400, "repository_not_allowed".to_owned()));
    // Dot segments do not climb out of the key's prefix either.
    let climbed = submit_to(key.clone(), "https://git.example.com/acme/tools/../billing.git").await;
    assert_eq!(climbed, (400, "repository_not_allowed".to_owned()));
    // Other keys keep the deployment's list.
    assert_eq!(submit_to(stack_key.clone(), "https://git.example.com/acme/billing.git").await.0, 202);
    assert_eq!(submit_to(stack_key, "https://git.other.org/lib.git").await, (400, "repository_not_allowed".to_owned()));
    t.stop().await;
}

#[tokio::test]
async fn a_revoked_key_loses_its_open_connections_and_its_stream_tokens_at_the_next_sweep() {
    let t = TestStack::start().await;
    let key = t.stack.issue_key("leaving-team").await.unwrap();
    let submitted: serde_json::Value = submit(&t, &key, None).await.json().await.unwrap();
    let token = submitted["stream"]["token"].as_str().expect("a stream token").to_owned();
    let token_url = format!("{}?token={token}", t.stack.ws_url);
    let mut by_key = WsClient::connect(&t.stack.ws_url, Some(&key)).await.expect("the key connects");
    let mut by_token = WsClient::connect(&token_url, None).await.expect("its token connects");
    let mut other = WsClient::connect(&t.stack.ws_url, Some(t.key())).await.expect("another key connects");

    set_on_key(&t, &key, "SET revoked = :yes", &[(":yes", AttributeValue::Bool(true))]).await;
    // At once: nothing new opens with the key, or with a token its requests got.
    assert_eq!(WsClient::connect(&t.stack.ws_url, Some(&key)).await.err(), Some(401));
    assert_eq!(WsClient::connect(&token_url, None).await.err(), Some(401));
    let (status, _) = t.get_json("/agent/claude-code/runs", &key).await;
    assert_eq!(status, 401);

    // The sweep (every minute on AWS) closes what is still open, and nothing else.
    assert_eq!(t.stack.janitor().close_revoked().await.unwrap(), 2);
    assert!(by_key.closed_within(Duration::from_secs(10)).await, "the key's connection is closed");
    assert!(by_token.closed_within(Duration::from_secs(10)).await, "the token's connection is closed");
    assert!(!other.closed_within(Duration::from_secs(1)).await, "another key's connection stays");
    assert_eq!(t.stack.janitor().close_revoked().await.unwrap(), 0, "nothing left to close");
    t.stop().await;
}
