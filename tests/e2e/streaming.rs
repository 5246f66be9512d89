//! Live frames over the WebSocket API, with real WebSocket clients and the real CLI.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use e2e::{Contract, RunnerFixture, WsClient};
use local::model::Turn;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn slow(turn: Turn) -> Turn {
    Turn::Delayed(Duration::from_millis(700), Box::new(turn))
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter(|f| f["kind"] != "end").map(|f| f["seq"].as_u64().unwrap()).collect()
}

async fn subscribed(f: &RunnerFixture, run_id: &str, after_seq: u64) -> WsClient {
    let mut client = WsClient::connect(&f.t.stack.ws_url, Some(f.t.key())).await.expect("connect");
    client.subscribe(run_id, after_seq).await;
    let ack = client.next_message(WAIT).await.expect("an answer to subscribe");
    assert_eq!(ack["type"], "subscribed", "{ack}");
    client
}

#[tokio::test]
async fn frames_of_a_real_run_arrive_live_in_order_and_end_with_end() {
    let turns = vec![slow(Turn::write("a.txt", "a")), slow(Turn::write("b.txt", "b")), slow(Turn::text("done"))];
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", json!({"message": "Two files", "branch": "main"})).await;
    let mut client = subscribed(&f, &run_id, 0).await;
    let frames = client.frames_until_end(WAIT).await;
    let end = frames.last().expect("frames");
    assert_eq!((end["kind"].as_str(), end["status"].as_str()), (Some("end"), Some("completed")));
    let stored: Vec<u64> = f.frames(&run_id).await.iter().map(|fr| fr.0 as u64).collect();
    assert_eq!(seqs(&frames), stored, "every stored frame, in order, none missing");
    assert_eq!(end["seq"].as_u64(), Some(stored.len() as u64 + 1));
    let contract = Contract::load();
    for message in &client.messages {
        contract.check(message);
    }
    f.stop().await;
}

#[tokio::test]
async fn two_subscribers_both_get_everything() {
    let turns = vec![slow(Turn::write("a.txt", "a")), slow(Turn::text("done"))];
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", json!({"message": "One file", "branch": "main"})).await;
    let (mut one, mut two) = (subscribed(&f, &run_id, 0).await, subscribed(&f, &run_id, 0).await);
    let (a, b) = tokio::join!(one.frames_until_end(WAIT), two.frames_until_end(WAIT));
    assert_eq!(seqs(&a), seqs(&b));
    assert!(!seqs(&a).is_empty());
    assert_eq!(a.last().unwrap()["kind"], "end");
    assert_eq!(b.last().unwrap()["kind"], "end");
    f.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_reconnects_with_after_seq_gets_exactly_the_missed_frames() {
    let turns = vec![
        slow(Turn::write("a.txt", "a")),
        slow(Turn::write("b.txt", "b")),
        slow(Turn::write("c.txt", "c")),
        slow(Turn::text("done")),
    ];
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", json!({"message": "Three files", "branch": "main"})).await;
    let mut first = subscribed(&f, &run_id, 0).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = first.next_frame(WAIT).await.expect("early frames");
        seen.push(frame["seq"].as_u64().unwrap());
    }
    first.close().await;
    let last = *seen.last().unwrap();
    let mut again = subscribed(&f, &run_id, last).await;
    let rest = again.frames_until_end(WAIT).await;
    let stored: Vec<u64> = f.frames(&run_id).await.iter().map(|fr| fr.0 as u64).collect();
    assert_eq!(
        seqs(&rest),
        stored.iter().copied().filter(|s| *s > last).collect::<Vec<_>>(),
        "exactly the missed frames"
    );
    assert_eq!(rest.last().unwrap()["kind"], "end");
    f.stop().await;
}

#[tokio::test]
async fn subscribers_joining_at_any_moment_get_every_later_frame_once_and_in_order() {
    let turns =
        (0..5).map(|i| slow(Turn::write(&format!("f{i}.txt"), "x"))).chain([slow(Turn::text("done"))]).collect();
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", json!({"message": "Five files", "branch": "main"})).await;
    // Joins spread over the whole run, each asking to resume from a different point: some land
    // while frames are being stored, published or not yet seen by the executor.
    let mut clients = Vec::new();
    for after_seq in 0..14u64 {
        clients.push((after_seq, subscribed(&f, &run_id, after_seq).await));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut received = Vec::new();
    for (after_seq, mut client) in clients {
        received.push((after_seq, client.frames_until_end(WAIT).await));
    }
    let stored: Vec<u64> = f.frames(&run_id).await.iter().map(|fr| fr.0 as u64).collect();
    for (after_seq, frames) in received {
        let expected: Vec<u64> = stored.iter().copied().filter(|s| *s > after_seq).collect();
        assert_eq!(seqs(&frames), expected, "subscriber after {after_seq}: each later frame once, in order");
        assert_eq!(frames.last().unwrap()["status"], "completed");
        assert_eq!(frames.last().unwrap()["kind"], "end");
    }
    f.stop().await;
}

#[tokio::test]
async fn a_subscriber_to_a_queued_run_that_is_cancelled_later_gets_its_end() {
    let turns = vec![Turn::text("start"), Turn::Delayed(Duration::from_secs(4), Box::new(Turn::text("busy")))];
    let f = RunnerFixture::start(turns, &[], true).await;
    let first = f.submit("implement", json!({"message": "start", "branch": "main"})).await;
    let session = f.wait_until_finished(&first).await["session_id"].as_str().unwrap().to_owned();
    // The session's next run is busy, so the one after it waits in the queue behind it.
    let busy = f.submit("implement", json!({"message": "busy", "branch": "main", "session_id": session})).await;
    let queued = f.submit("implement", json!({"message": "later", "branch": "main", "session_id": session})).await;
    let mut client = subscribed(&f, &queued, 0).await;
    // Long enough that the subscribe handler is done looking: the end must come from elsewhere.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = f.t.post_json(&format!("/agent/claude-code/run/{queued}/cancel"), f.t.key()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")), "{body}");
    let frames = client.frames_until_end(WAIT).await;
    assert_eq!(frames.len(), 1, "a run that never started has only its end: {frames:?}");
    assert_eq!((frames[0]["kind"].as_str(), frames[0]["status"].as_str()), (Some("end"), Some("cancelled")));
    assert_eq!(f.wait_until_finished(&busy).await["status"], "completed");
    f.stop().await;
}

#[tokio::test]
async fn a_frame_above_32_kb_arrives_whole_after_reassembly() {
    let content = "0123456789abcdef".repeat(8 * 1024); // 128 KB
    let f = RunnerFixture::start(vec![Turn::write("big.txt", &content), Turn::text("done")], &[], true).await;
    let run_id = f.submit("implement", json!({"message": "A big file", "branch": "main"})).await;
    let mut client = subscribed(&f, &run_id, 0).await;
    let frames = client.frames_until_end(WAIT).await;
    assert!(client.messages.iter().any(|m| m["type"] == "frame_part"), "it was split");
    assert!(client.messages.iter().all(|m| m.to_string().len() <= 32 * 1024), "no message above 32 KB");
    let tool_call = frames
        .iter()
        .find(|f| f["kind"] == "assistant" && f["data"]["message"]["content"][0]["type"] == "tool_use")
        .expect("the Write call");
    assert_eq!(tool_call["data"]["message"]["content"][0]["input"]["content"].as_str(), Some(content.as_str()));
    let contract = Contract::load();
    for message in &client.messages {
        contract.check(message);
    }
    f.stop().await;
}

#[tokio::test]
async fn strangers_bad_tokens_and_unknown_actions_are_refused_with_an_answer() {
    let f = RunnerFixture::start(vec![Turn::text("done")], &[], true).await;
    let response = f.t.submit("review", json!({"message": "Look", "branch": "main"})).await;
    let body: Value = response.json().await.unwrap();
    let run_id = body["run_id"].as_str().unwrap().to_owned();
    let contract = Contract::load();

    // Another key: connected, but the run is not theirs to see.
    let stranger = f.t.stack.issue_key("team-b").await.unwrap();
    let mut other = WsClient::connect(&f.t.stack.ws_url, Some(&stranger)).await.expect("a valid key connects");
    other.subscribe(&run_id, 0).await;
    let refused = other.next_message(WAIT).await.unwrap();
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("run_not_found")));
    contract.check(&refused);

    // No key, a bad key, a forged or foreign token: the handshake itself is refused.
    assert_eq!(WsClient::connect(&f.t.stack.ws_url, None).await.err(), Some(401));
    assert_eq!(WsClient::connect(&f.t.stack.ws_url, Some("crk_nope")).await.err(), Some(401));
    let forged = format!("{}?token=eyJydW5faWQiOiJ4In0.deadbeef", f.t.stack.ws_url);
    assert!(f.t.stack.ws_url.ends_with('/'));
    assert_eq!(WsClient::connect(&forged, None).await.err(), Some(401));

    // The token from the submit response works for that run, and only that run.
    let with_token = body["stream"]["url_with_token"].as_str().expect("a token URL");
    let mut scoped = WsClient::connect(with_token, None).await.expect("the token connects");
    let other_run = f.submit("review", json!({"message": "Another", "branch": "main"})).await;
    scoped.subscribe(&other_run, 0).await;
    let denied = scoped.next_message(WAIT).await.unwrap();
    assert_eq!(denied["code"], "run_not_found", "a token is scoped to its run");
    scoped.subscribe(&run_id, 0).await;
    assert_eq!(scoped.next_message(WAIT).await.unwrap()["type"], "subscribed");

    // An action that does not exist gets an error, not silence.
    scoped.send(json!({"action": "unsubscribe", "run_id": run_id})).await;
    let answer = loop {
        let m = scoped.next_message(WAIT).await.expect("an answer");
        if m["type"] == "error" {
            break m;
        }
    };
    assert_eq!(answer["code"], "unknown_action");
    contract.check(&answer);

    // One run per connection: a second subscribe is refused, and the first goes on to its end.
    scoped.subscribe(&run_id, 0).await;
    let again = loop {
        let m = scoped.next_message(WAIT).await.expect("an answer");
        if m["type"] == "error" {
            break m;
        }
    };
    assert_eq!(again["code"], "already_subscribed");
    contract.check(&again);
    let frames = scoped.frames_until_end(WAIT).await;
    assert_eq!(frames.last().unwrap()["kind"], "end");
    f.stop().await;
}

#[tokio::test]
async fn a_vanished_connection_is_removed_after_its_first_410_and_the_run_completes() {
    let turns = vec![slow(Turn::write("a.txt", "a")), slow(Turn::text("done"))];
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", json!({"message": "x", "branch": "main"})).await;
    // A subscriber whose socket vanished without a $disconnect (a dropped network).
    let dynamodb = aws_sdk_dynamodb::Client::new(&f.t.stack.sdk);
    let table = f.t.stack.resources["ConnectionsTable"].reference.clone();
    dynamodb
        .put_item()
        .table_name(&table)
        .item("connection_id", AttributeValue::S("ghost".into()))
        .item("owner", AttributeValue::S("local".into()))
        .item("run_id", AttributeValue::S(run_id.clone()))
        .item(
            "subscription",
            AttributeValue::M(
                [
                    ("id".to_owned(), AttributeValue::S(uuid::Uuid::new_v4().to_string())),
                    ("after_seq".to_owned(), AttributeValue::N("0".into())),
                    ("adopted".to_owned(), AttributeValue::Bool(false)),
                ]
                .into(),
            ),
        )
        .item("connected_at", AttributeValue::S("2026-11-27T00:00:00Z".into()))
        .item("expires_at", AttributeValue::S("2099-01-01T00:00:00Z".into()))
        .send()
        .await
        .unwrap();
    let mut live = subscribed(&f, &run_id, 0).await;
    let frames = live.frames_until_end(WAIT).await;
    assert_eq!(frames.last().unwrap()["status"], "completed", "the run and the live subscriber are unaffected");
    let ghost = dynamodb
        .get_item()
        .table_name(&table)
        .key("connection_id", AttributeValue::S("ghost".into()))
        .send()
        .await
        .unwrap()
        .item;
    assert!(ghost.is_none(), "the 410 removed the vanished connection");
    f.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_reads_nothing_delays_neither_another_subscriber_nor_the_run() {
    let content = "z".repeat(200 * 1024);
    let turns = (0..4).map(|i| Turn::write(&format!("f{i}.txt"), &content)).chain([Turn::text("done")]).collect();
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", json!({"message": "Many big files", "branch": "main"})).await;
    let _stalled = subscribed(&f, &run_id, 0).await; // never reads again
    let mut reader = subscribed(&f, &run_id, 0).await;
    let frames = reader.frames_until_end(WAIT).await;
    assert_eq!(frames.last().unwrap()["status"], "completed");
    let stored: Vec<u64> = f.frames(&run_id).await.iter().map(|fr| fr.0 as u64).collect();
    assert_eq!(seqs(&frames), stored);
    assert_eq!(f.status(&run_id).await["status"], "completed");
    f.stop().await;
}

#[tokio::test]
async fn subscribing_to_a_finished_run_replays_it_and_ends() {
    let f = RunnerFixture::start(vec![Turn::write("a.txt", "a"), Turn::text("done")], &[], true).await;
    let run_id = f.submit("implement", json!({"message": "x", "branch": "main"})).await;
    f.wait_until_finished(&run_id).await;
    let mut late = subscribed(&f, &run_id, 0).await;
    let frames = late.frames_until_end(WAIT).await;
    let stored: Vec<u64> = f.frames(&run_id).await.iter().map(|fr| fr.0 as u64).collect();
    assert_eq!(seqs(&frames), stored);
    assert_eq!(frames.last().unwrap()["status"], "completed");
    let failed = f.submit("implement", json!({"message": "x", "branch": "no-such-branch"})).await;
    f.wait_until_finished(&failed).await;
    let mut client = subscribed(&f, &failed, 0).await;
    let frames = client.frames_until_end(WAIT).await;
    assert_eq!(frames.len(), 1, "a run that never started has only its end");
    assert_eq!(frames[0]["status"], "failed");
    f.stop().await;
}
