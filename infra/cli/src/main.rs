//! `claude-runner`: submit runs and follow them from a terminal.
//!
//! Endpoint and key come from flags, then `CLAUDE_RUNNER_URL` / `CLAUDE_RUNNER_WS_URL` /
//! `CLAUDE_RUNNER_API_KEY`, then `.local/endpoints.json` (the local stack's) in this directory or
//! a parent.

mod epic;
mod mcp;
mod render;
mod stream;

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "claude-runner", about = "Run Claude Code workflows on claude-runner and follow them live")]
struct Cli {
    /// HTTP API base URL.
    #[arg(long, global = true, env = "CLAUDE_RUNNER_URL")]
    url: Option<String>,
    /// WebSocket URL.
    #[arg(long, global = true, env = "CLAUDE_RUNNER_WS_URL")]
    ws_url: Option<String>,
    #[arg(long, global = true, env = "CLAUDE_RUNNER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Queue a run; prints its id (and follows it with --follow).
    Submit {
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
        #[arg(long)]
        follow: bool,
        /// With --follow: print raw frames as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// A run's status.
    Status { run_id: String },
    /// Your runs, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue a listing (printed at the end of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Follow a run's frames live (replaying what came before).
    Tail {
        run_id: String,
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run.
    Cancel { run_id: String },
    /// Your sessions, newest first.
    Sessions {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Continue a session's conversation with a new message (same workflow, repository and branch).
    Resume {
        session_id: String,
        message: String,
        #[arg(long)]
        max_turns: Option<u32>,
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Epics: one goal carried through several workflow runs on one branch, with approvals, a
    /// budget, a fix loop and rollback points (docs/epics.md).
    Epic(epic::EpicArgs),
    /// Serve the API as MCP tools on stdin/stdout (run_workflow, get_workflow_status, …), for an
    /// MCP client such as an orchestrating agent.
    Mcp,
}

pub struct Endpoints {
    pub http: String,
    pub ws: Option<String>,
    pub key: String,
}

fn local_endpoints() -> Option<Value> {
    let mut dir: Option<PathBuf> = std::env::current_dir().ok();
    while let Some(d) = dir {
        let candidate = d.join(".local/endpoints.json");
        if let Ok(bytes) = std::fs::read(&candidate) {
            return serde_json::from_slice(&bytes).ok();
        }
        dir = d.parent().map(PathBuf::from);
    }
    None
}

impl Cli {
    fn endpoints(&self) -> Result<Endpoints> {
        let local = local_endpoints();
        let from_local = |name: &str| local.as_ref().and_then(|l| l[name].as_str().map(str::to_owned));
        let http = self
            .url
            .clone()
            .or_else(|| from_local("http_url"))
            .context("no endpoint: pass --url, set CLAUDE_RUNNER_URL, or start the local stack (cargo xtask up)")?;
        let key = self
            .api_key
            .clone()
            .or_else(|| from_local("api_key"))
            .context("no API key: pass --api-key or set CLAUDE_RUNNER_API_KEY")?;
        let ws = self.ws_url.clone().or_else(|| from_local("ws_url"));
        Ok(Endpoints { http: http.trim_end_matches('/').to_owned(), ws, key })
    }
}

async fn call(client: &reqwest::Client, request: reqwest::RequestBuilder) -> Result<Value> {
    let response = request.send().await.context("the API did not answer")?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or("");
        bail!("{status}: {code}: {message}");
    }
    let _ = client;
    Ok(body)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("claude-runner: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let endpoints = cli.endpoints()?;
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let api = |method: reqwest::Method, path: &str| {
        client.request(method, format!("{}{path}", endpoints.http)).header("x-api-key", &endpoints.key)
    };
    match cli.command {
        Command::Mcp => return mcp::serve(client.clone(), &endpoints).await,
        Command::Epic(args) => return epic::run(&client, &endpoints, args).await,
        Command::Submit {
            workflow,
            message,
            branch,
            max_turns,
            session_id,
            repository_url,
            idempotency_key,
            follow,
            json,
        } => {
            let mut body = json!({"message": message, "branch": branch});
            if let Some(n) = max_turns {
                body["max_turns"] = json!(n);
            }
            if let Some(s) = session_id {
                body["session_id"] = json!(s);
            }
            if let Some(r) = repository_url {
                body["repository_url"] = json!(r);
            }
            let mut request = api(reqwest::Method::POST, &format!("/agent/claude-code/{workflow}/run")).json(&body);
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let submitted = call(&client, request).await?;
            return submitted_run(&submitted, &endpoints, follow, json).await;
        }
        Command::Status { run_id } => {
            let run =
                call(&client, api(reqwest::Method::GET, &format!("/agent/claude-code/run/{run_id}/status"))).await?;
            println!("{}", serde_json::to_string_pretty(&run)?);
        }
        Command::List { status, workflow, limit, cursor } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(cursor.map(|c| ("cursor", c)));
            query.extend(status.map(|s| ("status", s)));
            query.extend(workflow.map(|w| ("workflow", w)));
            let page = call(&client, api(reqwest::Method::GET, "/agent/claude-code/runs").query(&query)).await?;
            for run in page["runs"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:<10} {:<24} {}",
                    run["run_id"].as_str().unwrap_or(""),
                    run["status"].as_str().unwrap_or(""),
                    run["workflow"].as_str().unwrap_or(""),
                    run["branch"].as_str().unwrap_or(""),
                    run["created_at"].as_str().unwrap_or(""),
                );
            }
            if let Some(cursor) = page["next_cursor"].as_str() {
                eprintln!("(more: --cursor {cursor})");
            }
        }
        Command::Tail { run_id, after_seq, json } => {
            let ws = endpoints.ws.clone().context("no WebSocket URL: pass --ws-url or set CLAUDE_RUNNER_WS_URL")?;
            return finish(stream::follow(&ws, &endpoints.key, &run_id, after_seq, json).await?);
        }
        Command::Sessions { limit } => {
            let page =
                call(&client, api(reqwest::Method::GET, "/agent/claude-code/sessions").query(&[("limit", limit)]))
                    .await?;
            for session in page["sessions"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:>3} runs {:>4} turns  ${:<8.4} {:<20} {}",
                    session["session_id"].as_str().unwrap_or(""),
                    session["workflow"].as_str().unwrap_or(""),
                    session["runs"].as_u64().unwrap_or(0),
                    session["total_turns"].as_u64().unwrap_or(0),
                    session["total_cost_usd"].as_f64().unwrap_or(0.0),
                    session["branch"].as_str().unwrap_or(""),
                    session["last_used_at"].as_str().unwrap_or(""),
                );
            }
        }
        Command::Resume { session_id, message, max_turns, follow, json } => {
            let session =
                call(&client, api(reqwest::Method::GET, &format!("/agent/claude-code/sessions/{session_id}"))).await?;
            let workflow = session["workflow"].as_str().context("the session names no workflow")?;
            let mut body = json!({
                "message": message,
                "branch": session["branch"],
                "repository_url": session["repository_url"],
                "session_id": session_id,
            });
            if let Some(n) = max_turns {
                body["max_turns"] = json!(n);
            }
            let request = api(reqwest::Method::POST, &format!("/agent/claude-code/{workflow}/run")).json(&body);
            let submitted = call(&client, request).await?;
            return submitted_run(&submitted, &endpoints, follow, json).await;
        }
        Command::Cancel { run_id } => {
            let run =
                call(&client, api(reqwest::Method::POST, &format!("/agent/claude-code/run/{run_id}/cancel"))).await?;
            let status = run["status"].as_str().unwrap_or("");
            let requested = if run["cancel_requested"] == true { " (cancel requested)" } else { "" };
            println!("{run_id} {status}{requested}");
        }
    }
    Ok(())
}

/// Prints the new run's id and, with `follow`, its frames until it ends.
async fn submitted_run(submitted: &Value, endpoints: &Endpoints, follow: bool, json: bool) -> Result<()> {
    let run_id = submitted["run_id"].as_str().context("no run id in the answer")?.to_owned();
    println!("{run_id}");
    if !follow {
        return Ok(());
    }
    let ws = submitted["stream"]["url"].as_str().map(str::to_owned).or(endpoints.ws.clone());
    let ws = ws.context("the deployment announced no WebSocket URL")?;
    finish(stream::follow(&ws, &endpoints.key, &run_id, 0, json).await?)
}

/// Exit status follows the run: 0 when it completed.
fn finish(status: String) -> Result<()> {
    if status == "completed" { Ok(()) } else { std::process::exit(1) }
}
