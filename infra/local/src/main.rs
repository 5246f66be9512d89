//! `claude-runner-local`: the whole system on 127.0.0.1. Ctrl-C or SIGTERM stops everything it
//! started.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;
use local::model::ScriptedModel;
use local::{Emulator, ExecutorOptions, LocalStack, PgCluster, StackOptions, create_database};

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

#[derive(Parser)]
#[command(about = "Runs claude-runner locally: AWS emulator, Postgres, and every function in process")]
struct Args {
    /// Port of the HTTP API (0 picks a free one).
    #[arg(long, env = "CLAUDE_RUNNER_HTTP_PORT", default_value_t = 8780)]
    http_port: u16,
    /// Port of the WebSocket API and its @connections endpoint (0 picks a free one).
    #[arg(long, env = "CLAUDE_RUNNER_WS_PORT", default_value_t = 8781)]
    ws_port: u16,
    /// Use this AWS endpoint (a running moto or LocalStack) instead of starting moto.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    aws_endpoint: Option<String>,
    /// Use this Postgres instead of a throwaway cluster.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where endpoints.json and the throwaway cluster live.
    #[arg(long, default_value_os_t = repo_root().join(".local"))]
    state_dir: PathBuf,
    #[arg(long, default_value_os_t = repo_root().join(".tools/venv/bin/moto_server"))]
    moto_server: PathBuf,
    #[arg(long, default_value_os_t = repo_root().join("template.yaml"))]
    template: PathBuf,
    /// Repository runs use when they name none (default: a bare copy of this clone under the
    /// state dir, so runs push somewhere harmless).
    #[arg(long)]
    default_repository: Option<String>,
    /// Comma-separated allowlist of repository URLs or prefixes ending in '*'.
    #[arg(long, default_value = "")]
    repository_allowlist: String,
    /// Start only moto and Postgres (the test runner shares them between tests).
    #[arg(long)]
    services_only: bool,
    /// The Claude CLI the executor runs.
    #[arg(long, env = "CLAUDE_BIN", default_value_os_t = repo_root().join(".tools/npm/node_modules/.bin/claude"))]
    claude_bin: PathBuf,
    /// Runs executed at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

/// What this process started, stopped in reverse order whatever happens.
#[derive(Default)]
struct Started {
    model: Option<ScriptedModel>,
    emulator: Option<Emulator>,
    postgres: Option<PgCluster>,
    stack: Option<LocalStack>,
}

impl Started {
    async fn stop(self) {
        if let Some(stack) = self.stack {
            stack.shutdown().await;
        }
        if let Some(pg) = self.postgres {
            pg.stop().await;
        }
        if let Some(emulator) = self.emulator {
            emulator.stop().await;
        }
        if let Some(model) = self.model {
            model.stop();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runner_adapters::telemetry::init();
    let args = Args::parse();
    let mut started = Started::default();
    let result = tokio::select! {
        result = start(&args, &mut started) => result,
        _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted during start-up")),
    };
    if let Err(err) = result {
        started.stop().await;
        return Err(err);
    }
    shutdown_signal().await;
    eprintln!("\nstopping…");
    let _ = std::fs::remove_file(args.state_dir.join("endpoints.json"));
    started.stop().await;
    eprintln!("stopped; nothing left running");
    Ok(())
}

async fn start(args: &Args, started: &mut Started) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir).context("create the state directory")?;
    // As root, each run's CLI runs as a user of its own, who passes through here to its workspace.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&args.state_dir)?.permissions().mode();
        std::fs::set_permissions(&args.state_dir, std::fs::Permissions::from_mode(mode | 0o001))?;
    }
    let aws_endpoint = match &args.aws_endpoint {
        Some(endpoint) => endpoint.clone(),
        None => {
            let emulator = Emulator::start(&args.moto_server, None).await?;
            let endpoint = emulator.endpoint.clone();
            started.emulator = Some(emulator);
            endpoint
        }
    };
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            let pg = PgCluster::start().await?;
            let url =
                if args.services_only { pg.url.clone() } else { create_database(&pg.url, "claude_runner").await? };
            started.postgres = Some(pg);
            url
        }
    };
    if args.services_only {
        let endpoints = serde_json::json!({
            "aws_endpoint": aws_endpoint,
            "database_url": database_url,
            "pids": pids(started),
        });
        write_endpoints(&args.state_dir, &endpoints)?;
        eprintln!("services up: moto {aws_endpoint}, postgres {database_url}");
        return Ok(());
    }
    // With a real key the executor talks to Anthropic; without one, to the offline model.
    let (model_url, api_key, model_label) = match std::env::var("ANTHROPIC_API_KEY").ok().filter(|k| !k.is_empty()) {
        Some(key) => (
            std::env::var("ANTHROPIC_BASE_URL").unwrap_or_default(),
            key,
            "Anthropic API (ANTHROPIC_API_KEY)".to_owned(),
        ),
        None => {
            let model = ScriptedModel::offline_demo().await?;
            let url = model.url();
            started.model = Some(model);
            (
                url.clone(),
                // Not a word: the executor redacts it wherever it appears.
                format!("sk-local-offline-{:016x}", rand::random::<u64>()),
                format!("OFFLINE MODEL at {url} (scripted; set ANTHROPIC_API_KEY for real runs)"),
            )
        }
    };
    let state_dir = args.state_dir.canonicalize().unwrap_or(args.state_dir.clone());
    let executor_env = HashMap::from([
        ("CLAUDE_BIN".to_owned(), args.claude_bin.display().to_string()),
        ("ANTHROPIC_BASE_URL".to_owned(), model_url),
        ("WORKSPACE_ROOT".to_owned(), state_dir.join("workspaces").display().to_string()),
        ("REPO_CACHE_DIR".to_owned(), state_dir.join("repo-cache").display().to_string()),
    ]);
    let default_repository = match &args.default_repository {
        Some(url) => url.clone(),
        None => sandbox_repository(&state_dir)?,
    };
    let stack = LocalStack::start(StackOptions {
        aws_endpoint: aws_endpoint.clone(),
        aws_services: Default::default(),
        database_url: database_url.clone(),
        stack_name: "claude-runner-local".into(),
        http_port: args.http_port,
        ws_port: args.ws_port,
        template: args.template.clone(),
        parameters: HashMap::from([
            ("DefaultRepositoryUrl".to_owned(), default_repository.clone()),
            ("RepositoryAllowlist".to_owned(), args.repository_allowlist.clone()),
            // Its sandbox repository is a local one.
            ("RepositorySchemes".to_owned(), "https,file".to_owned()),
            ("AnthropicApiKey".to_owned(), api_key),
        ]),
        ws_client_buffer: local::websocket::DEFAULT_CLIENT_BUFFER,
        // The janitor's schedule, sped up: every minute.
        janitor_every: Some(std::time::Duration::from_secs(60)),
        executor: Some(ExecutorOptions { environment: executor_env, concurrency: args.concurrency }),
    })
    .await?;

    let endpoints = serde_json::json!({
        "http_url": stack.http_url,
        "ws_url": stack.ws_url,
        "api_key": stack.api_key,
        "aws_endpoint": aws_endpoint,
        "database_url": database_url,
        "default_repository": default_repository,
        "resources": stack.resources.iter().map(|(id, p)| (id.clone(), p.reference.clone())).collect::<HashMap<_, _>>(),
        "pids": pids(started),
    });
    let path = write_endpoints(&args.state_dir, &endpoints)?;
    print_banner(&stack, &aws_endpoint, &database_url, &path, &model_label);
    started.stack = Some(stack);
    Ok(())
}

/// A bare copy of this clone that local runs clone from and push to.
fn sandbox_repository(state_dir: &Path) -> anyhow::Result<String> {
    let sandbox = state_dir.join("sandbox.git");
    if !sandbox.join("HEAD").exists() {
        let status = std::process::Command::new("git")
            .args(["clone", "--bare", "--quiet"])
            .arg(repo_root())
            .arg(&sandbox)
            .status()
            .context("run git")?;
        anyhow::ensure!(status.success(), "could not create the sandbox repository {}", sandbox.display());
    }
    Ok(format!("file://{}", sandbox.display()))
}

fn pids(started: &Started) -> serde_json::Value {
    serde_json::json!({
        "local": std::process::id(),
        "moto": started.emulator.as_ref().and_then(Emulator::pid),
        "postgres": started.postgres.as_ref().and_then(PgCluster::pid),
        "postgres_data_dir": started.postgres.as_ref().map(|pg| pg.data_dir().display().to_string()),
    })
}

/// Writes endpoints.json atomically (readers poll for it) and private (it holds an API key).
fn write_endpoints(state_dir: &Path, endpoints: &serde_json::Value) -> anyhow::Result<PathBuf> {
    let path = state_dir.join("endpoints.json");
    let partial = state_dir.join(".endpoints.json.partial");
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)?;
    serde_json::to_writer_pretty(file, endpoints)?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

fn print_banner(stack: &LocalStack, aws_endpoint: &str, database_url: &str, endpoints: &Path, model: &str) {
    let http = &stack.http_url;
    let key = &stack.api_key;
    let ws = &stack.ws_url;
    let queue = |id: &str| stack.resources.get(id).map(|p| p.reference.clone()).unwrap_or_default();
    let (genie_requests, genie_results) = (queue("GenieRequestsQueue"), queue("GenieResultsQueue"));
    println!(
        r#"
claude-runner local stack is up
  HTTP API     {http}
  WebSocket    {ws}
  API key      {key}
  AWS (moto)   {aws_endpoint}
  Postgres     {database_url}
  Model        {model}
  Genie        requests {genie_requests}
               replies  {genie_results}
  Epics        POST {http}/agent/claude-code/epics
  written to   {endpoints}

Submit a run and read it back:
  curl -s -X POST {http}/agent/claude-code/implement/run -H "x-api-key: {key}" \
       -H 'content-type: application/json' -d '{{"message":"Add a /version endpoint","branch":"main"}}'
  curl -s {http}/agent/claude-code/runs -H "x-api-key: {key}"

Or as Genie does, on the requests queue (replies arrive on the other one):
  aws --endpoint-url {aws_endpoint} sqs send-message --queue-url {genie_requests} --message-body \
    '{{"specversion":"1.0","id":"demo-1","source":"urn:me","type":"dev.claude-runner.run.requested.v1",
      "data":{{"workflow":"implement","message":"Add a /version endpoint","branch":"main"}}}}'

Ctrl-C stops everything."#,
        endpoints = endpoints.display()
    );
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
