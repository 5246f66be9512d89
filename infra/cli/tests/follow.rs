//! `claude-runner submit --follow` against the local stack, as a person runs it.

use tokio::process::Command;

use e2e::RunnerFixture;
use local::model::Turn;

async fn claude_runner(f: &RunnerFixture, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap(); // no .local/endpoints.json to pick up by accident
    Command::new(env!("CARGO_BIN_EXE_claude-runner"))
        .args(["--url", &f.t.stack.http_url, "--ws-url", &f.t.stack.ws_url, "--api-key", f.t.key()])
        .args(args)
        .current_dir(dir.path())
        .env_remove("RUST_BACKTRACE")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn submit_follow_prints_the_run_through_to_its_result() {
    let turns = vec![Turn::write("notes.md", "# Notes\n"), Turn::text("I added notes.md.")];
    let f = RunnerFixture::start(turns, &[], true).await;
    let output = claude_runner(&f, &["submit", "implement", "Add notes", "--follow"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].parse::<uuid_like::Id>().is_ok(), "the run id comes first: {stdout}");
    assert!(stdout.contains("● session"), "{stdout}");
    assert!(stdout.contains("→ Write("), "tool calls are shown: {stdout}");
    assert!(stdout.contains("I added notes.md."), "{stdout}");
    assert!(stdout.contains("✔ done in 2 turns"), "the result with turns and cost: {stdout}");
    assert_eq!(lines.last().copied(), Some("■ run completed"));

    let run_id = lines[0];
    let status = claude_runner(&f, &["status", run_id]).await;
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"completed\""));
    let list = claude_runner(&f, &["list"]).await;
    assert!(String::from_utf8_lossy(&list.stdout).contains(run_id));
    let cancel = claude_runner(&f, &["cancel", run_id]).await;
    assert_eq!(cancel.status.code(), Some(2), "cancelling a finished run is an error");
    assert!(String::from_utf8_lossy(&cancel.stderr).contains("invalid_transition"));
    f.stop().await;
}

#[tokio::test]
async fn tail_reconnects_after_a_dropped_connection_and_prints_every_frame_once() {
    let slow = |turn: Turn| Turn::Delayed(std::time::Duration::from_millis(700), Box::new(turn));
    let turns = vec![
        slow(Turn::write("a.txt", "a")),
        Turn::Delayed(std::time::Duration::from_secs(3), Box::new(Turn::write("b.txt", "b"))),
        slow(Turn::text("done")),
    ];
    let f = RunnerFixture::start(turns, &[], true).await;
    let run_id = f.submit("implement", serde_json::json!({"message": "Two files", "branch": "main"})).await;
    let dir = tempfile::tempdir().unwrap();
    let tail = Command::new(env!("CARGO_BIN_EXE_claude-runner"))
        .args(["--url", &f.t.stack.http_url, "--ws-url", &f.t.stack.ws_url, "--api-key", f.t.key()])
        .args(["tail", &run_id, "--json"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Once it follows the run and some frames are out, the gateway drops its connection (as API
    // Gateway does after two hours, or a network does any time).
    let dynamodb = aws_sdk_dynamodb::Client::new(&f.t.stack.sdk);
    let table = f.t.stack.resources["ConnectionsTable"].reference.clone();
    let connection = e2e::TestStack::eventually(std::time::Duration::from_secs(30), || async {
        if f.frames(&run_id).await.len() < 2 {
            return None;
        }
        let items = dynamodb.scan().table_name(&table).send().await.unwrap().items.unwrap_or_default();
        items.iter().find_map(|item| {
            let follows = item.get("run_id").and_then(|v| v.as_s().ok()) == Some(&run_id);
            follows.then(|| item["connection_id"].as_s().unwrap().clone())
        })
    })
    .await
    .expect("the tail subscribed");
    let management = f.t.stack.ws_url.replacen("ws://", "http://", 1);
    let dropped = reqwest::Client::new().delete(format!("{management}@connections/{connection}")).send().await.unwrap();
    assert_eq!(dropped.status().as_u16(), 204);

    let output =
        tokio::time::timeout(std::time::Duration::from_secs(90), tail.wait_with_output()).await.unwrap().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "exit {:?}\n{stdout}\n{stderr}", output.status);
    let frames: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let printed: Vec<i64> =
        frames.iter().filter(|fr| fr["kind"] != "end").map(|fr| fr["seq"].as_i64().unwrap()).collect();
    let stored: Vec<i64> = f.frames(&run_id).await.iter().map(|fr| fr.0).collect();
    assert_eq!(printed, stored, "every frame once, in order, across the reconnect");
    assert_eq!(frames.last().unwrap()["kind"], "end");
    assert!(stderr.contains("reconnect"), "it said it reconnected: {stderr}");
    f.stop().await;
}

#[tokio::test]
async fn json_follow_and_the_logs_of_the_finished_run() {
    let turns =
        vec![Turn::write("notes.md", "# Notes\n"), Turn::text("I added notes.md."), Turn::text("Nothing to do.")];
    let f = RunnerFixture::start(turns, &[], true).await;

    // `--output json submit --follow`: every line JSON, the submit answer first, the end last.
    let output = claude_runner(&f, &["--output", "json", "submit", "implement", "Add notes", "--follow"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let run_id = lines[0]["run_id"].as_str().expect("the submit answer first").to_owned();
    assert!(lines[0]["stream"].is_object(), "{}", lines[0]);
    assert_eq!(lines.last().unwrap()["kind"], "end");
    assert_eq!(lines.last().unwrap()["status"], "completed");
    let streamed: Vec<serde_json::Value> = lines[1..lines.len() - 1].to_vec();
    assert!(streamed.iter().any(|fr| fr["kind"] == "result"), "{stdout}");

    // `logs`: the stored log, once the API has it.
    let logs = e2e::TestStack::eventually(std::time::Duration::from_secs(30), || async {
        let output = claude_runner(&f, &["logs", &run_id]).await;
        (!String::from_utf8_lossy(&output.stderr).contains("output_not_ready")).then_some(output)
    })
    .await
    .expect("the log became ready");
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.status.success(), "{logs:?}");
    assert!(text.contains("● session"), "{text}");
    assert!(text.contains("→ Write("), "tool calls are shown: {text}");
    assert!(text.contains("I added notes.md."), "{text}");
    assert!(text.contains("✔ done in 2 turns"), "{text}");
    assert_eq!(text.lines().last(), Some("■ run completed"), "{text}");

    // `-o json logs`: the frames as stored, one per line: the same ones the stream carried.
    let logs = claude_runner(&f, &["-o", "json", "logs", &run_id]).await;
    assert!(logs.status.success(), "{logs:?}");
    let frames: Vec<serde_json::Value> =
        String::from_utf8_lossy(&logs.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seqs = |frames: &[serde_json::Value]| frames.iter().map(|fr| fr["seq"].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(seqs(&frames), seqs(&streamed), "every frame of the log, in order");
    assert_eq!(frames.last().unwrap()["kind"], "result");

    // The old `submit --follow --json` is unchanged: the run id, then frames as JSON lines.
    let output = claude_runner(&f, &["submit", "implement", "Anything?", "--follow", "--json"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let mut lines = stdout.lines();
    assert!(lines.next().is_some_and(|l| l.parse::<uuid_like::Id>().is_ok()), "the bare run id first: {stdout}");
    let rest: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rest.last().unwrap()["kind"], "end", "{stdout}");
    f.stop().await;
}

mod uuid_like {
    pub struct Id;
    impl std::str::FromStr for Id {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            (s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4).then_some(Id).ok_or(())
        }
    }
}
