//! Runs longer than Lambda allows go to the long-runs queue and its worker (ECS on AWS, a second
//! executor in the local stack), with the real `claude`.

use std::collections::HashMap;

use e2e::{RunnerFixture, StackSetup};
use local::model::Turn;
use serde_json::json;

/// A deployment's own workflows: `marathon` may take an hour, `sprint` ten minutes.
fn workflows() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (name, timeout) in [("marathon", 3600), ("sprint", 600)] {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("prompt.md"), format!("You are the {name} workflow. Do what is asked.")).unwrap();
        std::fs::write(dir.join("allowed_tools.json"), r#"["Write", "Read"]"#).unwrap();
        let config = json!({"timeout_seconds": timeout, "auto_commit": true, "max_turns": 5});
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    }
    root
}

#[tokio::test]
async fn a_run_longer_than_lambda_allows_goes_to_the_long_runs_worker_and_completes() {
    let dir = workflows();
    let parameters = HashMap::from([("WorkflowsDir".to_owned(), dir.path().display().to_string())]);
    let turns = vec![Turn::write("long.txt", "a long job\n"), Turn::text("Done at length.")];
    let f = RunnerFixture::start_setup(turns, &[], true, StackSetup { parameters, ..StackSetup::default() }).await;

    let long = f.submit("marathon", json!({"message": "Take your time", "branch": "main"})).await;
    let run = f.wait_until_finished(&long).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["time_limit_seconds"], 3600);
    assert_eq!(f.t.stack.long_run_messages_sent(), 1, "it went to the long-runs queue");
    assert_eq!(f.origin.file("main", "long.txt").as_deref(), Some("a long job\n"));

    f.model.push([Turn::text("Quick.")]);
    let short = f.submit("sprint", json!({"message": "Be quick", "branch": "main"})).await;
    assert_eq!(f.wait_until_finished(&short).await["status"], "completed");
    assert_eq!(f.t.stack.long_run_messages_sent(), 1, "a run Lambda can hold stays on the runs queue");
    assert_eq!(f.t.stack.run_messages_sent(), 2);
    f.stop().await;
}
