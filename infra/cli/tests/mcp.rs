//! `claude-runner mcp` driven as an MCP client drives it: JSON-RPC lines on its stdin and stdout,
//! against the local stack with the real CLI and a scripted model.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use e2e::{RunnerFixture, TestStack};
use local::model::Turn;

/// A quick answer: the server answers from the API at once.
const QUICK: Duration = Duration::from_secs(30);
/// A tool call that waits for a run of the real CLI.
const RUN: Duration = Duration::from_secs(180);

const TOOLS: [&str; 9] = [
    "run_workflow",
    "get_workflow_status",
    "list_workflows",
    "kill_workflow",
    "list_runs",
    "get_run_output",
    "resume_session",
    "search_memory",
    "add_memory",
];

struct McpClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    _dir: tempfile::TempDir,
}

impl McpClient {
    fn start(f: &RunnerFixture) -> Self {
        let dir = tempfile::tempdir().unwrap(); // no .local/endpoints.json to pick up by accident
        let mut child = Command::new(env!("CARGO_BIN_EXE_claude-runner"))
            .args(["--url", &f.t.stack.http_url, "--ws-url", &f.t.stack.ws_url, "--api-key", f.t.key()])
            .arg("mcp")
            .current_dir(dir.path())
            .env_remove("RUST_BACKTRACE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, stdin: Some(stdin), stdout, next_id: 0, _dir: dir }
    }

    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Sends a request and reads lines until its response (skipping anything else the server
    /// sends, such as notifications), for at most `timeout`.
    async fn request(&mut self, method: &str, params: Value, timeout: Duration) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        let stdout = &mut self.stdout;
        let response = tokio::time::timeout(timeout, async {
            loop {
                let line = stdout.next_line().await.unwrap().expect("the server closed its stdout");
                let message: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON-RPC on stdout ({e}): {line}"));
                let is_response = message.get("result").is_some() || message.get("error").is_some();
                if is_response && message["id"] == json!(id) {
                    return message;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} within {timeout:?}"));
        assert_eq!(response["jsonrpc"], "2.0");
        assert!(response.get("error").is_none(), "{method} failed at the protocol level: {response}");
        response["result"].clone()
    }

    /// `tools/call`: the call's result (`content`, `isError`).
    async fn call_tool(&mut self, name: &str, arguments: Value, timeout: Duration) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments}), timeout).await
    }
}

/// The text of a tool result's single text block.
fn text(result: &Value) -> &str {
    assert_eq!(result["content"][0]["type"], "text", "{result}");
    result["content"][0]["text"].as_str().unwrap()
}

/// A successful tool result's text, parsed as the JSON it is.
fn ok_json(result: &Value) -> Value {
    assert_ne!(result["isError"], true, "the tool failed: {result}");
    serde_json::from_str(text(result)).unwrap_or_else(|e| panic!("not JSON ({e}): {result}"))
}

/// A failed tool result's API error code.
fn error_code(result: &Value) -> String {
    assert_eq!(result["isError"], true, "expected an error result: {result}");
    let body: Value = serde_json::from_str(text(result)).unwrap_or_else(|e| panic!("not JSON ({e}): {result}"));
    body["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_mcp_client_runs_a_workflow_and_reads_its_status_output_and_errors() {
    let turns = vec![Turn::text("The answer is 42."), Turn::text("Still 42.")];
    let f = RunnerFixture::start(turns, &[], true).await;
    let mut mcp = McpClient::start(&f);

    // The handshake, at the protocol version the client asks for.
    let init = mcp
        .request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "genie-test", "version": "0.0.0"},
            }),
            QUICK,
        )
        .await;
    assert_eq!(init["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(init["serverInfo"]["name"], env!("CARGO_PKG_NAME"), "{init}");
    assert_eq!(init["serverInfo"]["version"], env!("CARGO_PKG_VERSION"), "{init}");
    assert!(init["capabilities"]["tools"].is_object(), "tools are announced: {init}");
    mcp.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;

    // Every tool, each described, each with an object schema for its input.
    let listed = mcp.request("tools/list", json!({}), QUICK).await;
    let tools = listed["tools"].as_array().unwrap_or_else(|| panic!("{listed}"));
    for name in TOOLS {
        let tool = tools.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no tool {name}: {listed}"));
        assert!(tool["description"].as_str().is_some_and(|d| !d.is_empty()), "{tool}");
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }
    let run_workflow = tools.iter().find(|t| t["name"] == "run_workflow").unwrap();
    let required: Vec<&str> =
        run_workflow["inputSchema"]["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for field in ["workflow", "message", "branch"] {
        assert!(required.contains(&field), "{field} is required: {run_workflow}");
    }
    assert!(!required.contains(&"wait"), "wait is optional: {run_workflow}");
    let add_memory = tools.iter().find(|t| t["name"] == "add_memory").unwrap();
    assert_eq!(add_memory["inputSchema"]["required"], json!(["text"]), "only the text is required: {add_memory}");

    let workflows = ok_json(&mcp.call_tool("list_workflows", json!({}), QUICK).await);
    let names: Vec<&str> =
        workflows["workflows"].as_array().unwrap().iter().filter_map(|w| w["name"].as_str()).collect();
    assert!(names.contains(&"implement"), "{workflows}");

    // run_workflow with wait returns the run's final status.
    let arguments = json!({
        "workflow": "implement", "message": "What is the answer?", "branch": "main", "wait": true, "timeout_seconds": 150,
    });
    let run = ok_json(&mcp.call_tool("run_workflow", arguments, RUN).await);
    assert_eq!(run["status"], "completed", "{run}");
    assert!(run["result_summary"].as_str().unwrap_or_default().contains("The answer is 42."), "{run}");
    assert!(run.get("wait_timed_out").is_none(), "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let session = run["session_id"].as_str().expect("the run has a session").to_owned();

    let status = ok_json(&mcp.call_tool("get_workflow_status", json!({"run_id": run_id}), QUICK).await);
    assert_eq!((status["run_id"].as_str(), status["status"].as_str()), (Some(run_id.as_str()), Some("completed")));

    let runs = ok_json(&mcp.call_tool("list_runs", json!({"workflow": "implement", "limit": 5}), QUICK).await);
    assert!(runs["runs"].as_array().unwrap().iter().any(|r| r["run_id"] == run_id.as_str()), "{runs}");

    // The output of an ended run (polled: the API may say output_not_ready for a moment).
    let output = {
        let client = tokio::sync::Mutex::new(&mut mcp);
        TestStack::eventually(QUICK, || async {
            let result = client.lock().await.call_tool("get_run_output", json!({"run_id": run_id}), QUICK).await;
            (result["isError"] != true || error_code(&result) != "output_not_ready").then_some(result)
        })
        .await
        .expect("the run's output became ready")
    };
    let output = ok_json(&output);
    let frames = output["frames"].as_array().unwrap();
    assert!(frames.len() > 1, "{output}");
    assert_eq!(frames.last().unwrap()["kind"], "result", "the frames end with the result: {output}");
    let only_results =
        ok_json(&mcp.call_tool("get_run_output", json!({"run_id": run_id, "kinds": ["result"]}), QUICK).await);
    let kinds: Vec<&str> =
        only_results["frames"].as_array().unwrap().iter().filter_map(|fr| fr["kind"].as_str()).collect();
    assert_eq!(kinds, ["result"], "only the kinds asked for: {only_results}");

    // API errors are tool errors carrying the API's code; the server goes on serving.
    let kill = mcp.call_tool("kill_workflow", json!({"run_id": run_id}), QUICK).await;
    assert_eq!(error_code(&kill), "invalid_transition", "a finished run cannot be cancelled: {kill}");
    let unknown = mcp
        .call_tool("run_workflow", json!({"workflow": "no-such-workflow", "message": "Hi", "branch": "main"}), QUICK)
        .await;
    assert_eq!(error_code(&unknown), "unknown_workflow", "{unknown}");

    // resume_session continues the session: same workflow and branch, the next answer (and it
    // waits for the end by default).
    let resumed = ok_json(
        &mcp.call_tool("resume_session", json!({"session_id": session, "message": "Are you sure?"}), RUN).await,
    );
    assert_eq!(resumed["status"], "completed", "{resumed}");
    assert_eq!(resumed["session_id"], session.as_str(), "{resumed}");
    assert_eq!((resumed["workflow"].as_str(), resumed["branch"].as_str()), (Some("implement"), Some("main")));
    assert!(resumed["result_summary"].as_str().unwrap_or_default().contains("Still 42."), "{resumed}");
    assert_ne!(resumed["run_id"], run_id.as_str(), "a new run");

    // When the client closes its end, the server exits cleanly.
    drop(mcp.stdin.take());
    let exit = tokio::time::timeout(QUICK, mcp.child.wait()).await.expect("the server exited").unwrap();
    assert!(exit.success(), "{exit:?}");
    f.stop().await;
}
