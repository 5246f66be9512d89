//! Live frames over the WebSocket API, with real WebSocket clients and the real CLI.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use e2e::{Contract, RunnerFixture, StackSetup, WsClient};
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
    // Once the subscribe handler is done looking (its late check included), the end must come
    // from elsewhere.
    let done =
        e2e::TestStack::eventually(WAIT, || async { (f.t.stack.websocket_invocations_in_flight() == 0).then_some(()) })
            .await;
    assert!(done.is_some(), "the subscribe handler finished");
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
    // Pretty JSON with quoted strings: every quote and newline is escaped once in the frame and
    // again inside a part's `data`, which is what a part's budget must count (~130 KB here).
    let rows: Vec<Value> = (0..2500).map(|i| json!({"id": i, "name": format!("row \"{i}\"\tok")})).collect();
    let content = serde_json::to_string_pretty(&rows).unwrap();
    assert!(content.len() > 96 * 1024);
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
    // Tiny bounds everywhere, so every slow path runs: each subscriber's queue holds 2 frames
    // (the reader falls behind and catches up from the stored frames), the gateway holds 64
    // messages per client (then it answers 429 and the fan-out backs off: the stalled client's
    // ~180 parts overflow it; a reader on a loaded 2-core machine must not), and the stalled client
    // stops reading at once (it backs up, and is disconnected once posting gives up).
    let content = "z".repeat(256 * 1024);
    let turns = (0..8).map(|i| Turn::write(&format!("f{i}.txt"), &content)).chain([Turn::text("done")]).collect();
    let setup = StackSetup { ws_client_buffer: Some(64), ..StackSetup::default() };
    let env = [("FANOUT_QUEUE_FRAMES", "2"), ("FANOUT_QUEUE_BYTES", "65536")];
    let f = RunnerFixture::start_setup(turns, &env, true, setup).await;
    let run_id = f.submit("implement", json!({"message": "Many big files", "branch": "main"})).await;
    let mut stalled = subscribed(&f, &run_id, 0).await;
    f.t.stack.stall_websocket_clients().await;
    let mut reader = subscribed(&f, &run_id, 0).await;
    let frames = reader.frames_until_end(WAIT).await;
    let last = frames.last().unwrap();
    assert_eq!(
        last["status"],
        "completed",
        "the reader got to the end: {} frames, the last {}",
        frames.len(),
        last["seq"]
    );
    let stored: Vec<u64> = f.frames(&run_id).await.iter().map(|fr| fr.0 as u64).collect();
    assert_eq!(seqs(&frames), stored, "every frame once, in order, through a queue of 2");
    assert_eq!(f.status(&run_id).await["status"], "completed");

    // The stalled client got a prefix of the frames, then was disconnected without the end...
    let got = stalled.frames_until_end(WAIT).await;
    assert!(got.last().is_none_or(|last| last["kind"] != "end"), "a client that never read was let go");
    let got = seqs(&got);
    assert_eq!(got, stored[..got.len()], "what it did get came in order");
    // ... and a reconnect with its last seq gets exactly the rest.
    let mut resumed = subscribed(&f, &run_id, got.last().copied().unwrap_or(0)).await;
    let rest = resumed.frames_until_end(WAIT).await;
    assert_eq!(rest.last().unwrap()["kind"], "end");
    assert_eq!([got, seqs(&rest)].concat(), stored);
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

#[tokio::test]
async fn an_idle_subscriber_hears_heartbeats_while_the_run_is_quiet() {
    // Heartbeats are settable; at one second, a run that is quiet for four gives several.
    let turns = vec![Turn::Delayed(Duration::from_secs(4), Box::new(Turn::text("done")))];
    let f = RunnerFixture::start(turns, &[("STREAM_HEARTBEAT_SECONDS", "1")], true).await;
    let run_id = f.submit("implement", json!({"message": "Think a while", "branch": "main"})).await;
    let mut client = subscribed(&f, &run_id, 0).await;
    let frames = client.frames_until_end(WAIT).await;
    assert_eq!(frames.last().unwrap()["status"], "completed");
    let heartbeats: Vec<&Value> = client.messages.iter().filter(|m| m["type"] == "heartbeat").collect();
    assert!(heartbeats.len() >= 2, "a heartbeat each idle second: {:?}", client.messages);
    let contract = Contract::load();
    for message in &client.messages {
        contract.check(message);
    }
    f.stop().await;
}

#[tokio::test]
async fn an_executor_that_loses_its_lease_hands_its_subscribers_to_the_next() {
    use runner_core::ports::RunStore as _;
    let turns = vec![Turn::write("a.txt", "a"), Turn::Stall];
    let f = RunnerFixture::start(turns, &[], false).await;
    let run_id = f.submit("implement", json!({"message": "Write, then think forever", "branch": "main"})).await;
    let first = std::sync::Arc::new(f.t.stack.executor(&f.executor).await.unwrap());
    let running = {
        let (executor, event) = (first.clone(), e2e::run_message(&run_id));
        tokio::spawn(async move { executor::handle(&executor, event).await })
    };
    let mut client = subscribed(&f, &run_id, 0).await;
    let mut before = Vec::new();
    while before.len() < 3 {
        before.push(client.next_frame(WAIT).await.expect("live frames from the first executor"));
    }

    // Another executor took the run over and then vanished too: the first one's heartbeat finds
    // the lease gone, it stops and hands its subscriber back with how far it got.
    let store = runner_adapters::DynamoRunStore::new(
        runner_adapters::aws::dynamodb(&f.t.stack.sdk),
        &f.t.stack.settings.runs_table,
        &f.t.stack.settings.idempotency_table,
    );
    let mut run = store.get(run_id.parse().unwrap()).await.unwrap().unwrap();
    let expected = run.version;
    run.lease_owner = Some("ghost".into());
    run.lease_expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    run.version += 1;
    store.update(&run, expected).await.unwrap();
    let handed_back = tokio::time::timeout(WAIT, running).await.expect("the first executor stops").unwrap();
    assert!(handed_back.batch_item_failures.is_empty());

    // The next delivery ends the lost run, and the subscriber gets the rest from it, then the end.
    let next = f.t.stack.executor(&f.executor).await.unwrap();
    assert!(executor::handle(&next, e2e::run_message(&run_id)).await.batch_item_failures.is_empty());
    let rest = client.frames_until_end(WAIT).await;
    let stored: Vec<u64> = f.frames(&run_id).await.iter().map(|fr| fr.0 as u64).collect();
    assert_eq!([seqs(&before), seqs(&rest)].concat(), stored, "every frame once, in order, across the hand-over");
    let end = rest.last().unwrap();
    assert_eq!((end["kind"].as_str(), end["status"].as_str()), (Some("end"), Some("failed")));
    assert_eq!(f.status(&run_id).await["error"]["code"], "executor_lost");
    f.stop().await;
}

#[tokio::test]
async fn live_frames_do_not_wait_for_persistence() {
    let turns = vec![slow(Turn::write("a.txt", "a")), Turn::text("done")];
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", json!({"message": "x", "branch": "main"})).await;
    let mut client = subscribed(&f, &run_id, 0).await;
    let handed_over =
        e2e::TestStack::eventually(WAIT, || async { (f.t.stack.websocket_invocations_in_flight() == 0).then_some(()) })
            .await;
    assert!(handed_over.is_some(), "the subscribe handler is done");

    // Postgres takes no frame while this lock is held (reads still work).
    let mut stall = f.t.stack.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE claude_cli_outputs IN EXCLUSIVE MODE").execute(&mut *stall).await.unwrap();
    let stored_count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM claude_cli_outputs WHERE run_id = $1")
            .bind(uuid::Uuid::parse_str(&run_id).unwrap())
            .fetch_one(&f.t.stack.pool)
            .await
            .unwrap()
    };
    let stored_before = stored_count().await;
    let mut live = Vec::new();
    while live.last().is_none_or(|frame: &Value| frame["kind"] != "result") {
        live.push(client.next_frame(WAIT).await.expect("live frames while persistence is stalled"));
    }
    assert_eq!(stored_count().await, stored_before, "persistence was stalled all along");
    let newest = live.last().unwrap()["seq"].as_i64().unwrap();
    assert!(newest > stored_before, "frames the store did not have came live: {newest} > {stored_before}");
    stall.rollback().await.unwrap();

    let rest = client.frames_until_end(WAIT).await;
    let stored: Vec<u64> = f.frames(&run_id).await.iter().map(|fr| fr.0 as u64).collect();
    assert_eq!([seqs(&live), seqs(&rest)].concat(), stored, "and nothing was lost or repeated");
    assert_eq!(rest.last().unwrap()["status"], "completed");
    f.stop().await;
}

#[tokio::test]
async fn subscribers_before_the_cli_starts_mid_run_after_the_result_and_after_the_end_get_every_frame_once() {
    let turns = vec![slow(Turn::write("a.txt", "a")), slow(Turn::write("b.txt", "b")), slow(Turn::text("done"))];
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", json!({"message": "Two files", "branch": "main"})).await;
    let mut first = subscribed(&f, &run_id, 0).await; // queued: the CLI has not started
    let mut seen = Vec::new();
    let mut joined = Vec::new();
    loop {
        let frame = first.next_frame(WAIT).await.expect("frames until the end");
        let kind = frame["kind"].as_str().unwrap_or_default().to_owned();
        seen.push(frame);
        if seen.len() == 2 {
            joined.push(("mid-run", subscribed(&f, &run_id, 0).await));
        }
        if kind == "result" {
            joined.push(("after the result", subscribed(&f, &run_id, 0).await));
        }
        if kind == "end" {
            break;
        }
    }
    joined.push(("after the end", subscribed(&f, &run_id, 0).await));
    let stored: Vec<u64> = f.frames(&run_id).await.iter().map(|fr| fr.0 as u64).collect();
    assert_eq!(seqs(&seen), stored, "before the CLI started");
    for (when, mut client) in joined {
        let frames = client.frames_until_end(WAIT).await;
        assert_eq!(seqs(&frames), stored, "{when}: every frame once, in order");
        assert_eq!(frames.last().unwrap()["status"], "completed", "{when}");
    }
    f.stop().await;
}
