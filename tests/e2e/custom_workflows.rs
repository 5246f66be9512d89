//! The custom workflow of docs/workflows.md, deployed the way that guide says (a folder named by
//! `WorkflowsDir`), runs through the stack: its prompt, tools and MCP configuration reach the
//! real CLI, and what it writes is committed and pushed.

use std::collections::HashMap;

use e2e::{RunnerFixture, StackSetup, repo_root};
use local::model::Turn;
use serde_json::{Value, json};

#[tokio::test]
async fn the_documented_example_workflow_runs_as_the_guide_deploys_it() {
    let examples = repo_root().join("docs/examples/workflows");
    // The loader the functions use accepts the folder as it is.
    let loaded = runner_adapters::files::load_workflows(&examples).expect("docs/examples/workflows loads");
    assert!(loaded.get("changelog").is_some(), "the example is named changelog");

    let setup = StackSetup {
        parameters: HashMap::from([("WorkflowsDir".to_owned(), examples.display().to_string())]),
        ..StackSetup::default()
    };
    let f = RunnerFixture::start_setup(vec![], &[], true, setup).await;
    f.model.script(
        "KW-CHANGELOG",
        vec![
            Turn::write("CHANGELOG.md", "# Changelog\n\n## [Unreleased]\n\n### Added\n\n- A changelog.\n"),
            Turn::text("Added an Unreleased entry to CHANGELOG.md."),
        ],
    );
    let (status, workflows) = f.t.get_json("/agent/claude-code/workflows", f.t.key()).await;
    assert_eq!(status, 200, "{workflows}");
    let names: Vec<&str> =
        workflows["workflows"].as_array().into_iter().flatten().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(names, vec!["changelog"], "WorkflowsDir replaces the shipped set: {workflows}");

    let run_id = f.submit("changelog", json!({"message": "KW-CHANGELOG the last commits", "branch": "main"})).await;
    let run = f.wait_until_finished(&run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["commits"].as_array().map(Vec::len), Some(1), "auto_commit commits what it wrote: {run}");

    // What the CLI was given: the workflow's prompt and its allowed tools, its MCP server.
    let requests = f.model.requests();
    let system: String = requests
        .iter()
        .flat_map(|body| body["system"].as_array().cloned().unwrap_or_default())
        .filter_map(|block| block["text"].as_str().map(str::to_owned))
        .collect();
    assert!(system.contains("Role: changelog writer"), "the workflow's prompt reaches the model");
    let (status, output) = f.t.get_json(&format!("/agent/claude-code/run/{run_id}/output"), f.t.key()).await;
    assert_eq!(status, 200, "{output}");
    let init = output["frames"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|frame| frame["kind"] == "system" && frame["subtype"] == "init")
        .cloned()
        .unwrap_or(Value::Null);
    let servers: Vec<&str> =
        init["data"]["mcp_servers"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(servers, vec!["git"], "the workflow's .mcp.json reaches the CLI: {init}");
    f.stop().await;
}
