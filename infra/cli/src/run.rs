//! Commands about one run: `submit`, `status`, `cancel`, `resume`, `tail`, and following a run
//! until it ends.

use std::io::IsTerminal as _;

use clap::Args;
use serde_json::{Value, json};

use crate::api::{Api, run_path, segment};
use crate::error::{Error, Result};
use crate::output::{Output, json_line};
use crate::progress::Progress;
use crate::stream;

#[derive(Args)]
pub struct SubmitArgs {
    workflow: String,
    message: String,
    #[arg(long, default_value = "main")]
    branch: String,
    #[arg(long)]
    max_turns: Option<u32>,
    #[arg(long)]
    session_id: Option<String>,
    #[arg(long)]
    repository_url: Option<String>,
    /// Make a retried submit return the same run.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Follow the run's frames until it ends; exits 0 only if it completed.
    #[arg(long)]
    follow: bool,
    /// With --follow: print raw frames as JSON lines after the run id (with `--output json`
    /// every line is JSON, the submit answer first).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RunIdArgs {
    run_id: String,
}

#[derive(Args)]
pub struct TailArgs {
    run_id: String,
    /// Start after this frame (0: from the first).
    #[arg(long, default_value_t = 0)]
    after_seq: u64,
    /// Print raw frames as JSON lines (the same as `--output json`).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ResumeArgs {
    session_id: String,
    message: String,
    #[arg(long)]
    max_turns: Option<u32>,
    /// Follow the new run's frames until it ends; exits 0 only if it completed.
    #[arg(long)]
    follow: bool,
    /// With --follow: print raw frames as JSON lines after the run id.
    #[arg(long)]
    json: bool,
}

pub async fn submit(api: &Api, output: Output, args: SubmitArgs) -> Result<()> {
    let mut body = json!({"message": args.message, "branch": args.branch});
    if let Some(n) = args.max_turns {
        body["max_turns"] = json!(n);
    }
    if let Some(s) = args.session_id {
        body["session_id"] = json!(s);
    }
    if let Some(r) = args.repository_url {
        body["repository_url"] = json!(r);
    }
    let path = format!("/agent/claude-code/{}/run", segment(&args.workflow));
    let mut request = api.request(reqwest::Method::POST, &path).json(&body);
    if let Some(key) = args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let submitted = api.send(request).await?;
    submitted_run(api, output, &submitted, args.follow, args.json).await
}

pub async fn status(api: &Api, output: Output, args: RunIdArgs) -> Result<()> {
    let run = api.get(&run_path(&args.run_id, "status")).await?;
    if output.is_json() {
        return json_line(&run);
    }
    println!("{}", serde_json::to_string_pretty(&run)?);
    Ok(())
}

pub async fn cancel(api: &Api, output: Output, args: RunIdArgs) -> Result<()> {
    let run = api.post(&run_path(&args.run_id, "cancel"), None).await?;
    if output.is_json() {
        return json_line(&run);
    }
    let status = run["status"].as_str().unwrap_or("");
    let requested = if run["cancel_requested"] == true { " (cancel requested)" } else { "" };
    println!("{} {status}{requested}", args.run_id);
    Ok(())
}

pub async fn resume(api: &Api, output: Output, args: ResumeArgs) -> Result<()> {
    let session = api.get(&format!("/agent/claude-code/sessions/{}", segment(&args.session_id))).await?;
    let workflow = session["workflow"]
        .as_str()
        .ok_or_else(|| Error::InvalidResponse("the session names no workflow".to_owned()))?;
    let mut body = json!({
        "message": args.message,
        "branch": session["branch"],
        "repository_url": session["repository_url"],
        "session_id": args.session_id,
    });
    if let Some(n) = args.max_turns {
        body["max_turns"] = json!(n);
    }
    let submitted = api.post(&format!("/agent/claude-code/{}/run", segment(workflow)), Some(&body)).await?;
    submitted_run(api, output, &submitted, args.follow, args.json).await
}

pub async fn tail(api: &Api, output: Output, args: TailArgs) -> Result<()> {
    let ws = api.endpoints().ws()?.to_owned();
    follow(api, &ws, &args.run_id, args.after_seq, output.is_json() || args.json).await
}

/// Prints the new run (its id, or in json mode the API's answer) and, with `follow`, its
/// frames until it ends.
async fn submitted_run(api: &Api, output: Output, submitted: &Value, follow_it: bool, json: bool) -> Result<()> {
    let run_id = submitted["run_id"]
        .as_str()
        .ok_or_else(|| Error::InvalidResponse("no run id in the API's answer".to_owned()))?;
    if output.is_json() {
        json_line(submitted)?;
    } else {
        println!("{run_id}");
    }
    if !follow_it {
        return Ok(());
    }
    let ws = match submitted["stream"]["url"].as_str() {
        Some(url) => url.to_owned(),
        None => api.endpoints().ws.clone().ok_or_else(|| {
            Error::config("no_ws_endpoint", "the deployment announced no WebSocket URL: pass --ws-url")
        })?,
    };
    follow(api, &ws, run_id, 0, output.is_json() || json).await
}

/// Prints the run's frames until it ends (with a progress line on a terminal while it waits to
/// start); `Unsuccessful` unless it completed.
async fn follow(api: &Api, ws: &str, run_id: &str, after_seq: u64, json: bool) -> Result<()> {
    let progress = (!json && std::io::stderr().is_terminal()).then(|| Progress::start(api.clone(), run_id.to_owned()));
    let status = stream::follow(ws, &api.endpoints().key, run_id, after_seq, json, progress).await?;
    if status == "completed" { Ok(()) } else { Err(Error::Unsuccessful(status)) }
}
