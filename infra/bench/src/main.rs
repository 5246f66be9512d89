//! `cargo xtask bench`: figures, printed as tables. Not tests: nothing here asserts a time.
//!
//! - workspace set-up for a generated repository of ~5k files, on disk and in RAM (`/dev/shm`):
//!   plain (shallow) clone vs a clone from the local mirror cache, beside the floor (`cp -a` of a
//!   checked-out tree);
//! - the executor's own peak RSS (VmHWM of this process) while it runs real CLI runs;
//! - live streaming latency, CLI line → WebSocket client, p50/p99 with 1 and 50 concurrent runs.
//!
//! - the service at scale without model processes: 50 and 200 concurrent runs of a recorded run
//!   replayed by `claude-replay` (infra/replay) at its recorded pace: latency, lost or repeated
//!   frames, memory.
//!
//! - what a resume adds to a run (transcript restore + the CLI loading it), and how many succeed.
//!
//! - a Genie queue request → its terminal reply, beside HTTP submit → `completed`, same run.
//!
//! - what the stack adds to a run: HTTP submit → `completed` beside the bare CLI started by hand,
//!   same scripted two-call run, with the stack's phases from the run's `timings`.
//!
//! - how many frames per second one run can produce, stored in Postgres and in the S3 log: a
//!   100,000-line recording replayed by `claude-replay` as fast as it can.
//!
//! `cargo xtask bench [workspace|memory|streaming|replay|resume|genie|overhead|throughput]` runs
//! all or some. `replay` and `throughput` need the `claude-replay` binary beside this one
//! (`cargo xtask bench` builds it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use chrono::Utc;
use local::model::{ScriptedModel, Turn};
use local::{Emulator, ExecutorOptions, LocalStack, PgCluster, StackOptions, create_database};
use runner_adapters::{GitWorkspaces, S3ObjectStore, WorkspaceConfig};
use runner_core::claude::{CliInvocation, SessionMode};
use runner_core::domain::{Owner, Run, RunRequest, WorkflowRegistry};
use runner_core::ports::{ObjectStore as _, Workspaces};

const FILES: usize = 5_000;
const SAMPLES: usize = 7;
/// How often a benchmark that times a run to `completed` reads its status.
const POLL: Duration = Duration::from_millis(10);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The pinned `claude` CLI.
fn claude_binary() -> PathBuf {
    repo_root().join(".tools/npm/node_modules/.bin/claude")
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new("git").arg("-C").arg(dir).args(args).status()?;
    ensure!(status.success(), "git {args:?} failed");
    Ok(())
}

/// A bare repository with `FILES` small source-like files in nested folders.
fn generated_repository(root: &Path) -> Result<String> {
    let seed = root.join("seed");
    for i in 0..FILES {
        let dir = seed.join(format!("src/module_{:02}/sub_{:02}", i % 50, (i / 50) % 10));
        std::fs::create_dir_all(&dir)?;
        let body = format!("// file {i}\npub fn f{i}() -> usize {{\n    {i}\n}}\n").repeat(8);
        std::fs::write(dir.join(format!("file_{i}.rs")), body)?;
    }
    git(&seed, &["init", "--quiet", "--initial-branch=main"])?;
    git(&seed, &["add", "."])?;
    git(&seed, &["-c", "user.name=b", "-c", "user.email=b@example.com", "commit", "--quiet", "-m", "generated"])?;
    let bare = root.join("origin.git");
    git(root, &["clone", "--quiet", "--bare", seed.to_str().unwrap(), bare.to_str().unwrap()])?;
    Ok(format!("file://{}", bare.display()))
}

fn run_for(url: &str) -> Result<Run> {
    let workflow = WorkflowRegistry::builtin().get("implement").cloned().context("implement workflow")?;
    let request: RunRequest =
        serde_json::from_value(serde_json::json!({"message": "bench", "branch": "main", "repository_url": url}))?;
    let policy = runner_core::domain::RepositoryPolicy::new(None, vec!["file://*".into()]);
    let valid = request.validate(&workflow, &Default::default(), &policy)?;
    Ok(Run::queued(Owner::new("bench"), valid, None, Utc::now()))
}

async fn time_prepare(workspaces: &GitWorkspaces, url: &str) -> Result<Duration> {
    let workflow = WorkflowRegistry::builtin().get("implement").cloned().context("workflow")?;
    let run = run_for(url)?;
    let started = Instant::now();
    let workspace = workspaces.prepare(&run, &workflow).await?;
    let elapsed = started.elapsed();
    workspaces.cleanup(&workspace, run.run_id).await;
    Ok(elapsed)
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(samples[0]), ms(samples[samples.len() / 2]), ms(*samples.last().unwrap()))
}

/// Median set-up times in one place (a folder on disk or in RAM), in milliseconds.
struct SetupTimes {
    /// `GitWorkspaces` without a cache: `clone --depth 1` from the origin.
    shallow: f64,
    /// `GitWorkspaces` with a mirror cache, its first run (mirror + clone); one sample.
    cold: f64,
    /// The same once the mirror exists (fetch if the branch moved, `clone --shared`).
    warm: f64,
    /// `cp -a` of a tree already checked out: what no clone can beat.
    floor: f64,
}

/// Workspace set-up for the generated repository with everything (origin, mirror cache,
/// workspaces, the copied tree) under `place`.
async fn setup_times(place: &Path) -> Result<SetupTimes> {
    let url = generated_repository(place)?;
    let config = |cache: Option<PathBuf>| WorkspaceConfig {
        root: place.join("runs"),
        cache_dir: cache,
        author_name: "bench".into(),
        author_email: "bench@example.com".into(),
        dotenv: None,
        run_users: false,
        credentials: Default::default(),
    };
    let plain = GitWorkspaces::new(config(None), None);
    let cached = GitWorkspaces::new(config(Some(place.join("cache"))), None);
    let mut shallow = Vec::new();
    for _ in 0..SAMPLES {
        shallow.push(time_prepare(&plain, &url).await?);
    }
    let cold = time_prepare(&cached, &url).await?;
    let mut warm = Vec::new();
    for _ in 0..SAMPLES {
        warm.push(time_prepare(&cached, &url).await?);
    }
    // A checkout like a workspace's: the files and a .git holding the one commit.
    let checkout = place.join("checkout");
    git(place, &["clone", "--quiet", "--depth", "1", url.as_str(), checkout.to_str().context("checkout path")?])?;
    let mut floor = Vec::new();
    for i in 0..SAMPLES {
        floor.push(time_copy(&checkout, &place.join(format!("copy-{i}")))?);
    }
    Ok(SetupTimes {
        shallow: stats(shallow).1,
        cold: cold.as_secs_f64() * 1000.0,
        warm: stats(warm).1,
        floor: stats(floor).1,
    })
}

/// `cp -a source dest`, timed; the copy is removed afterwards.
fn time_copy(source: &Path, dest: &Path) -> Result<Duration> {
    let started = Instant::now();
    let status = std::process::Command::new("cp").arg("-a").arg(source).arg(dest).status()?;
    let elapsed = started.elapsed();
    ensure!(status.success(), "cp -a {} {} failed", source.display(), dest.display());
    std::fs::remove_dir_all(dest)?;
    Ok(elapsed)
}

/// Workspace set-up on disk (the temporary folder) and in RAM (`/dev/shm`), beside the floor.
async fn workspace_bench() -> Result<()> {
    let disk = tempfile::tempdir()?;
    let on_disk = setup_times(disk.path()).await?;
    drop(disk);
    let shm = Path::new("/dev/shm");
    let in_ram = if shm.is_dir() {
        let ram = tempfile::tempdir_in(shm)?;
        match setup_times(ram.path()).await {
            Ok(times) => Some(times),
            Err(err) => {
                println!("\n(workspace set-up in RAM failed under {}: {err:#}; disk only)", ram.path().display());
                None
            }
        }
    } else {
        println!("\n(no /dev/shm here: workspace set-up measured on disk only)");
        None
    };
    println!(
        "\nWorkspace set-up, generated repository of {FILES} files, medians of {SAMPLES} samples \
         (disk: under {}, RAM: under /dev/shm)",
        std::env::temp_dir().display()
    );
    println!("| method                                          |  disk ms |   RAM ms |");
    println!("|-------------------------------------------------|---------:|---------:|");
    type Figure = fn(&SetupTimes) -> f64;
    let rows: [(&str, Figure); 4] = [
        ("plain shallow clone (--depth 1 from the origin)", |t: &SetupTimes| t.shallow),
        ("cached: first run (mirror + clone), 1 sample", |t: &SetupTimes| t.cold),
        ("cached: warm (local clone --shared)", |t: &SetupTimes| t.warm),
        ("floor: cp -a of a checked-out tree", |t: &SetupTimes| t.floor),
    ];
    for (label, figure) in rows {
        let ram = in_ram.as_ref().map_or_else(|| "-".to_owned(), |t| format!("{:.1}", figure(t)));
        println!("| {label:<47} | {:8.1} | {ram:>8} |", figure(&on_disk));
    }
    for (place, times) in [("RAM", in_ram.as_ref()), ("disk", Some(&on_disk))] {
        if let Some(t) = times {
            println!(
                "{place}: warm ÷ floor = {:.2} (goal ≤ 1.3), shallow ÷ warm = {:.2} (goal ≥ 3)",
                t.warm / t.floor,
                t.shallow / t.warm
            );
        }
    }
    Ok(())
}

/// Where a benchmark's stack runs: the emulator and Postgres it shares, a repository and a model.
struct BenchEnv<'a> {
    emulator: &'a Emulator,
    postgres: &'a PgCluster,
    repository: &'a str,
    model_url: String,
    workspaces: &'a Path,
}

impl BenchEnv<'_> {
    /// The executor's options with the real CLI.
    fn executor_options(&self, concurrency: usize) -> ExecutorOptions {
        self.executor_options_with(concurrency, &claude_binary())
    }

    /// The executor's options with `claude` as `CLAUDE_BIN` (the real CLI or a stand-in for it).
    fn executor_options_with(&self, concurrency: usize, claude: &Path) -> ExecutorOptions {
        ExecutorOptions {
            environment: HashMap::from([
                ("CLAUDE_BIN".into(), claude.display().to_string()),
                ("ANTHROPIC_BASE_URL".into(), self.model_url.clone()),
                ("WORKSPACE_ROOT".into(), self.workspaces.join(format!("runs-{concurrency}")).display().to_string()),
                ("REPO_CACHE_DIR".into(), self.workspaces.join("cache").display().to_string()),
            ]),
            concurrency,
        }
    }

    /// A stack named `name`; with `poll_queue` its executor runs `concurrency` runs at once.
    async fn stack(&self, name: &str, concurrency: usize, poll_queue: bool) -> Result<LocalStack> {
        self.stack_with(name, poll_queue.then(|| self.executor_options(concurrency))).await
    }

    /// A stack named `name` whose queue poller runs an executor with `executor`, if given.
    async fn stack_with(&self, name: &str, executor: Option<ExecutorOptions>) -> Result<LocalStack> {
        let database_url = create_database(&self.postgres.url, name).await?;
        Ok(LocalStack::start(StackOptions {
            aws_endpoint: self.emulator.endpoint.clone(),
            aws_services: Default::default(),
            database_url,
            stack_name: name.to_owned(),
            http_port: 0,
            ws_port: 0,
            template: repo_root().join("template.yaml"),
            parameters: HashMap::from([
                ("DefaultRepositoryUrl".into(), self.repository.to_owned()),
                ("AnthropicApiKey".into(), "sk-bench".into()),
            ]),
            ws_client_buffer: local::websocket::DEFAULT_CLIENT_BUFFER,
            janitor_every: None,
            executor,
        })
        .await?)
    }
}

/// Submits an `implement` run on `main`; returns its id.
async fn submit(http: &reqwest::Client, stack: &LocalStack, message: &str) -> Result<String> {
    let response: serde_json::Value = http
        .post(format!("{}/agent/claude-code/implement/run", stack.http_url))
        .header("x-api-key", &stack.api_key)
        .json(&serde_json::json!({"message": message, "branch": "main"}))
        .send()
        .await?
        .json()
        .await?;
    Ok(response["run_id"].as_str().context("run id")?.to_owned())
}

/// The run's status document (`GET …/run/{id}/status`).
async fn run_status(http: &reqwest::Client, stack: &LocalStack, run_id: &str) -> Result<serde_json::Value> {
    Ok(http
        .get(format!("{}/agent/claude-code/run/{run_id}/status", stack.http_url))
        .header("x-api-key", &stack.api_key)
        .send()
        .await?
        .json()
        .await?)
}

/// Reads the run's status every `every` until it is `completed`, and returns that status; an
/// error if the run ends otherwise or `limit` passes first.
async fn wait_completed(
    http: &reqwest::Client,
    stack: &LocalStack,
    run_id: &str,
    every: Duration,
    limit: Duration,
) -> Result<serde_json::Value> {
    let started = Instant::now();
    loop {
        let status = run_status(http, stack, run_id).await?;
        let state = status["status"].as_str().unwrap_or_default().to_owned();
        match state.as_str() {
            "completed" => return Ok(status),
            "failed" | "cancelled" | "timed_out" => anyhow::bail!("run {run_id} did not complete: {status}"),
            _ => {}
        }
        ensure!(started.elapsed() < limit, "run {run_id} did not complete within {limit:?}: {status}");
        tokio::time::sleep(every).await;
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

async fn rss_bench(emulator: &Emulator, postgres: &PgCluster) -> Result<()> {
    let origin = tempfile::tempdir()?;
    let url = generated_repository(origin.path())?;
    let workspaces = local::open_tempdir("bench-")?;
    // Each run writes a 1 MB file and answers; the frames carry it twice.
    let payload = "z".repeat(1024 * 1024);
    let model = ScriptedModel::start(Vec::new()).await?;
    let runs = 10;
    for _ in 0..runs {
        model.push([Turn::write("payload.txt", &payload), Turn::text("done")]);
    }
    let env = BenchEnv { emulator, postgres, repository: &url, model_url: model.url(), workspaces: workspaces.path() };
    let stack = env.stack("memory", 1, false).await?;
    let executor = stack.executor(&env.executor_options(1)).await?;
    let baseline = vm_hwm_kib();
    let http = reqwest::Client::new();
    let started = Instant::now();
    for i in 0..runs {
        let run_id = submit(&http, &stack, &format!("write payload {i}")).await?;
        executor.execute(run_id.parse()?).await?;
    }
    let per_run = started.elapsed() / runs as u32;
    let peak = vm_hwm_kib();
    let completed: i64 = sqlx::query_scalar("SELECT count(*) FROM claude_cli_outputs WHERE output_type = 'result'")
        .fetch_one(&stack.pool)
        .await?;
    println!("\nExecutor memory ({runs} sequential runs, each writing a 1 MB file; {completed} result frames stored)");
    println!("| figure                                          |      value |");
    println!("|-------------------------------------------------|-----------:|");
    println!("| process VmHWM before the runs (stack + clients) | {:7.1} MiB |", baseline as f64 / 1024.0);
    println!("| process VmHWM after the runs (peak)             | {:7.1} MiB |", peak as f64 / 1024.0);
    println!("| growth attributable to executing runs           | {:7.1} MiB |", (peak - baseline) as f64 / 1024.0);
    println!("| wall time per run (clone, CLI, frames, archive) | {:7.0} ms  |", per_run.as_secs_f64() * 1000.0);
    stack.shutdown().await;
    model.stop();
    anyhow::Ok(())
}

/// What one WebSocket subscriber saw of its run, from `after_seq` 0 to the `end` frame.
struct Followed {
    run_id: String,
    /// Milliseconds from the executor reading a CLI line (the frame's `ts`) to this client
    /// receiving it, for the frames produced after the subscription: replayed ones measure nothing.
    latencies: Vec<f64>,
    /// The `seq` of every frame received, replayed or live, in arrival order; `end` excluded.
    seqs: Vec<u64>,
    /// Whether the `end` frame came (rather than 120 s of silence).
    ended: bool,
}

/// Submits `runs` runs and subscribes one WebSocket client to each right after its submit;
/// returns what each client saw, once every one has its `end` (or gave up after 120 s of silence).
async fn follow_runs(stack: &LocalStack, runs: usize) -> Result<Vec<Followed>> {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let http = reqwest::Client::new();
    let mut followers = Vec::new();
    for i in 0..runs {
        let run_id = submit(&http, stack, &format!("latency run {i}")).await?;
        let mut request = stack.ws_url.as_str().into_client_request()?;
        request.headers_mut().insert("x-api-key", stack.api_key.parse()?);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
        socket
            .send(Message::Text(serde_json::json!({"action": "subscribe", "run_id": run_id}).to_string().into()))
            .await?;
        followers.push(tokio::spawn(async move {
            let mut seen = Followed { run_id, latencies: Vec::new(), seqs: Vec::new(), ended: false };
            let subscribed_at = Utc::now();
            while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(120), socket.next()).await {
                let received = Utc::now();
                let Message::Text(text) = message else { continue };
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                // A frame too big for one message comes in parts: it counts once, at its last part.
                if frame["type"] == "frame_part" {
                    if frame["part"] == frame["parts"]
                        && let Some(seq) = frame["seq"].as_u64()
                    {
                        seen.seqs.push(seq);
                    }
                    continue;
                }
                if frame["type"] != "frame" {
                    continue;
                }
                if frame["kind"] == "end" {
                    seen.ended = true;
                    break;
                }
                if let Some(seq) = frame["seq"].as_u64() {
                    seen.seqs.push(seq);
                }
                let Some(ts) = frame["ts"].as_str().and_then(|t| t.parse::<chrono::DateTime<Utc>>().ok()) else {
                    continue;
                };
                if ts > subscribed_at {
                    seen.latencies.push((received - ts).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
            }
            seen
        }));
    }
    let mut followed = Vec::new();
    for follower in followers {
        followed.push(follower.await?);
    }
    Ok(followed)
}

/// Milliseconds from the executor reading a CLI line (the frame's `ts`) to a WebSocket client
/// receiving it, for `runs` concurrent runs with one subscriber each; sorted.
async fn latency_bench(stack: &LocalStack, runs: usize) -> Result<Vec<f64>> {
    let mut all: Vec<f64> = follow_runs(stack, runs).await?.into_iter().flat_map(|run| run.latencies).collect();
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(all)
}

/// The value at quantile `q` (0 to 1) of `sorted`, which is not empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A bare repository with one file: benchmarks about streaming should not measure checkouts.
fn small_repository(root: &Path) -> Result<String> {
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed)?;
    std::fs::write(seed.join("README.md"), "# bench\n")?;
    git(&seed, &["init", "--quiet", "--initial-branch=main"])?;
    git(&seed, &["add", "."])?;
    git(&seed, &["-c", "user.name=b", "-c", "user.email=b@example.com", "commit", "--quiet", "-m", "small"])?;
    let bare = root.join("small.git");
    git(root, &["clone", "--quiet", "--bare", seed.to_str().unwrap(), bare.to_str().unwrap()])?;
    Ok(format!("file://{}", bare.display()))
}

async fn streaming_bench(emulator: &Emulator, postgres: &PgCluster) -> Result<()> {
    let origin = tempfile::tempdir()?;
    let url = small_repository(origin.path())?;
    let workspaces = local::open_tempdir("bench-")?;
    // Every run: a Write, then an answer, each after a short think, so frames arrive live.
    let model = ScriptedModel::offline_demo().await?;
    let mut table = Vec::new();
    let env = BenchEnv { emulator, postgres, repository: &url, model_url: model.url(), workspaces: workspaces.path() };
    for runs in [1usize, 50] {
        let stack = env.stack(&format!("latency{runs}"), runs, true).await?;
        let started = Instant::now();
        let latencies = latency_bench(&stack, runs).await?;
        let wall = started.elapsed();
        stack.shutdown().await;
        ensure!(!latencies.is_empty(), "no live frames measured");
        let pick = |q: f64| quantile(&latencies, q);
        table.push((runs, latencies.len(), pick(0.5), pick(0.99), *latencies.last().unwrap(), wall));
    }
    println!("\nLive streaming latency: CLI line read by the executor → WebSocket client (scripted model)");
    println!("| concurrent runs | live frames |  p50 ms |  p99 ms |  max ms | wall s |");
    println!("|----------------:|------------:|--------:|--------:|--------:|-------:|");
    for (runs, frames, p50, p99, max, wall) in table {
        println!("| {runs:15} | {frames:11} | {p50:7.1} | {p99:7.1} | {max:7.1} | {:6.1} |", wall.as_secs_f64());
    }
    model.stop();
    anyhow::Ok(())
}

/// The `claude-replay` binary beside this one (`cargo xtask bench` builds both); when it is
/// missing, built here into the same directory.
fn replay_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the benchmark binary's directory")?;
    let binary = dir.join("claude-replay");
    if !binary.exists() {
        // target/debug holds the dev profile's output; target/release, the bench and release ones.
        let profile = match dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => "dev",
            Some("release") | None => "bench",
            Some(other) => other,
        };
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(repo_root())
            .args(["build", "--quiet", "--profile", profile, "-p", "claude-replay"])
            .status()?;
        ensure!(status.success(), "building claude-replay failed");
    }
    ensure!(binary.exists(), "{} is missing: `cargo build --profile bench -p claude-replay`", binary.display());
    Ok(binary)
}

/// A `CLAUDE_BIN` that replays `recording` at `pace`. The executor gives the CLI a scrubbed
/// environment and its own arguments, so the replay's options live in this script.
fn replay_wrapper(dir: &Path, binary: &Path, recording: &Path, pace: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let quoted = |path: &Path| format!("'{}'", path.display().to_string().replace('\'', r"'\''"));
    let script = dir.join(format!("claude-replay-{pace}"));
    let body =
        format!("#!/bin/sh\nexec {} --recording {} --pace {pace} -- \"$@\"\n", quoted(binary), quoted(recording));
    std::fs::write(&script, body)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// The service at scale without model processes: 50 and 200 concurrent runs (executor
/// concurrency = runs) of a recorded chatty run, replayed by `claude-replay` at its recorded
/// pace, one WebSocket subscriber each. Frames received are checked against those stored.
async fn replay_bench(emulator: &Emulator, postgres: &PgCluster) -> Result<()> {
    let binary = replay_binary()?;
    let recording = repo_root().join("infra/replay/recordings/chatty-run.ndjson");
    let lines = std::fs::read_to_string(&recording)?.lines().filter(|line| !line.trim().is_empty()).count();
    let origin = tempfile::tempdir()?;
    let url = small_repository(origin.path())?;
    let workspaces = local::open_tempdir("bench-")?;
    let claude = replay_wrapper(workspaces.path(), &binary, &recording, "recorded")?;
    // Nothing listens there: the replay never calls a model.
    let model_url = "http://127.0.0.1:9".to_owned();
    let env = BenchEnv { emulator, postgres, repository: &url, model_url, workspaces: workspaces.path() };
    let mut table = Vec::new();
    for runs in [50usize, 200] {
        let stack = env.stack_with(&format!("replay{runs}"), Some(env.executor_options_with(runs, &claude))).await?;
        let baseline = vm_hwm_kib();
        let started = Instant::now();
        let followed = follow_runs(&stack, runs).await?;
        let wall = started.elapsed();
        let peak = vm_hwm_kib();
        let rows: Vec<(uuid::Uuid, i64)> =
            sqlx::query_as("SELECT run_id, sequence_number FROM claude_cli_outputs").fetch_all(&stack.pool).await?;
        stack.shutdown().await;
        let mut stored: HashMap<uuid::Uuid, Vec<u64>> = HashMap::new();
        for (id, seq) in rows {
            stored.entry(id).or_default().push(seq as u64);
        }
        let (mut ended, mut stored_frames, mut received, mut lost, mut repeated) = (0usize, 0u64, 0u64, 0u64, 0u64);
        let mut latencies = Vec::new();
        for run in followed {
            let id: uuid::Uuid = run.run_id.parse()?;
            let here = stored.get(&id).map(Vec::as_slice).unwrap_or_default();
            let mut distinct = run.seqs.clone();
            distinct.sort_unstable();
            distinct.dedup();
            ended += usize::from(run.ended);
            stored_frames += here.len() as u64;
            received += run.seqs.len() as u64;
            repeated += (run.seqs.len() - distinct.len()) as u64;
            // Lost: stored, and never received by the run's subscriber.
            lost += here.iter().filter(|&&seq| distinct.binary_search(&seq).is_err()).count() as u64;
            latencies.extend(run.latencies);
        }
        ensure!(!latencies.is_empty(), "no live frames measured with {runs} runs");
        latencies.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99, max) = (quantile(&latencies, 0.5), quantile(&latencies, 0.99), latencies[latencies.len() - 1]);
        let (live, wall, growth) = (latencies.len(), wall.as_secs_f64(), peak.saturating_sub(baseline) as f64 / 1024.0);
        table.push(format!(
            "| {runs:15} | {ended:5} | {stored_frames:13} | {received:8} | {lost:4} | {repeated:8} | {live:11} \
             | {p50:7.1} | {p99:7.1} | {max:7.1} | {wall:6.1} | {growth:8.1} MiB |"
        ));
    }
    println!(
        "\nAt scale without model processes: a recorded {lines}-line run replayed at its pace by claude-replay, \
         one WebSocket subscriber per run; latency is CLI line read by the executor → client, live frames only"
    );
    println!(
        "| concurrent runs | ended | frames stored | received | lost | repeated | live frames \
         |  p50 ms |  p99 ms |  max ms | wall s | VmHWM growth |"
    );
    println!(
        "|----------------:|------:|--------------:|---------:|-----:|---------:|------------:\
         |--------:|--------:|--------:|-------:|-------------:|"
    );
    for row in table {
        println!("{row}");
    }
    println!("(VmHWM is this process's peak: a row's growth is over all peaks before it, the stack's included.)");
    anyhow::Ok(())
}

/// What a resume adds to a run: executions of a new conversation vs resumptions of one session
/// (transcript restore + the CLI loading it), with the model answering at once.
async fn resume_bench(emulator: &Emulator, postgres: &PgCluster) -> Result<()> {
    let origin = tempfile::tempdir()?;
    let url = small_repository(origin.path())?;
    let workspaces = local::open_tempdir("bench-")?;
    let model = ScriptedModel::start(Vec::new()).await?;
    model.set_fallback(Turn::text("noted"));
    let env = BenchEnv { emulator, postgres, repository: &url, model_url: model.url(), workspaces: workspaces.path() };
    let stack = env.stack("resume", 1, false).await?;
    let executor = stack.executor(&env.executor_options(1)).await?;
    let http = reqwest::Client::new();
    let mut fresh = Vec::new();
    for i in 0..10 {
        let run_id = submit(&http, &stack, &format!("fresh {i}")).await?;
        let started = Instant::now();
        executor.execute(run_id.parse()?).await?;
        fresh.push(started.elapsed());
    }
    let first = submit(&http, &stack, "the conversation starts").await?;
    executor.execute(first.parse()?).await?;
    let session = run_status(&http, &stack, &first).await?["session_id"].as_str().context("session id")?.to_owned();
    let (mut resumed, mut succeeded) = (Vec::new(), 0);
    for i in 0..20 {
        let response: serde_json::Value = http
            .post(format!("{}/agent/claude-code/implement/run", stack.http_url))
            .header("x-api-key", &stack.api_key)
            .json(&serde_json::json!({"message": format!("resume {i}"), "branch": "main", "session_id": session}))
            .send()
            .await?
            .json()
            .await?;
        let run_id = response["run_id"].as_str().context("run id")?.to_owned();
        let started = Instant::now();
        executor.execute(run_id.parse()?).await?;
        resumed.push(started.elapsed());
        if run_status(&http, &stack, &run_id).await?["status"] == "completed" {
            succeeded += 1;
        }
    }
    let (_, fresh_p50, _) = stats(fresh.clone());
    let (_, resumed_p50, resumed_max) = stats(resumed.clone());
    println!("\nResume (one session resumed 20 times in a row, fresh workspace and config dir each time)");
    println!("| runs                               | count | succeeded | median ms |   max ms |");
    println!("|------------------------------------|------:|----------:|----------:|---------:|");
    let (_, _, fresh_max) = stats(fresh);
    println!("| new conversation (clone, CLI, end)  |    10 |        10 | {fresh_p50:9.1} | {fresh_max:8.1} |");
    println!("| resumed (+ restore, --resume)       |    20 | {succeeded:9} | {resumed_p50:9.1} | {resumed_max:8.1} |");
    println!(
        "| time a resume adds (median)         |       |           | {:9.1} |          |",
        resumed_p50 - fresh_p50
    );
    stack.shutdown().await;
    model.stop();
    anyhow::Ok(())
}

/// The same scripted two-call run (one `Write`, then an answer), started over HTTP and watched to
/// `completed`, and requested on Genie's queue and waited for to its terminal reply; alternated.
async fn genie_bench(emulator: &Emulator, postgres: &PgCluster) -> Result<()> {
    let origin = tempfile::tempdir()?;
    let url = generated_repository(origin.path())?;
    let workspaces = local::open_tempdir("bench-")?;
    let model = ScriptedModel::start(Vec::new()).await?;
    let env = BenchEnv { emulator, postgres, repository: &url, model_url: model.url(), workspaces: workspaces.path() };
    let stack = env.stack("genie", 1, true).await?;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let requests = stack.resources["GenieRequestsQueue"].reference.clone();
    let results = stack.resources["GenieResultsQueue"].reference.clone();
    let http = reqwest::Client::new();
    let (mut over_http, mut over_queue) = (Vec::new(), Vec::new());
    for i in 0..SAMPLES + 1 {
        model.push([Turn::write("bench.txt", &format!("http {i}\n")), Turn::text("done")]);
        let started = Instant::now();
        let run_id = submit(&http, &stack, &format!("http run {i}")).await?;
        wait_completed(&http, &stack, &run_id, POLL, Duration::from_secs(60)).await?;
        let http_elapsed = started.elapsed();

        model.push([Turn::write("bench.txt", &format!("queue {i}\n")), Turn::text("done")]);
        let event = serde_json::json!({"specversion": "1.0", "id": format!("bench-{i}"), "source": "urn:bench",
            "type": "dev.claude-runner.run.requested.v1",
            "data": {"workflow": "implement", "message": format!("queue run {i}"), "branch": "main"}});
        let started = Instant::now();
        sqs.send_message().queue_url(&requests).message_body(event.to_string()).send().await?;
        'reply: loop {
            ensure!(started.elapsed() < Duration::from_secs(60), "no terminal reply for bench-{i}");
            let out = sqs
                .receive_message()
                .queue_url(&results)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await?;
            for message in out.messages.unwrap_or_default() {
                if let Some(receipt) = message.receipt_handle {
                    sqs.delete_message().queue_url(&results).receipt_handle(receipt).send().await?;
                }
                let reply: serde_json::Value = serde_json::from_str(message.body.as_deref().unwrap_or("{}"))?;
                if reply["type"] == "dev.claude-runner.run.completed.v1" {
                    break 'reply;
                }
            }
        }
        let queue_elapsed = started.elapsed();
        // The first pair warms the mirror cache and the connections up.
        if i > 0 {
            over_http.push(http_elapsed);
            over_queue.push(queue_elapsed);
        }
    }
    let (http_min, http_p50, http_max) = stats(over_http);
    let (queue_min, queue_p50, queue_max) = stats(over_queue);
    println!("\nGenie's queue vs the HTTP API, the same scripted two-call run ({SAMPLES} pairs, alternated)");
    println!("| path                                         |   min ms | median ms |   max ms |");
    println!("|----------------------------------------------|---------:|----------:|---------:|");
    println!("| HTTP submit → status `completed` (10 ms poll) | {http_min:8.1} | {http_p50:9.1} | {http_max:8.1} |");
    println!("| request event → terminal reply on the queue   | {queue_min:8.1} | {queue_p50:9.1} | {queue_max:8.1} |");
    println!("| ratio (queue / HTTP), medians                 |          | {:9.2} |          |", queue_p50 / http_p50);
    stack.shutdown().await;
    model.stop();
    anyhow::Ok(())
}

/// The phases of a run's `timings` (shared/core/src/domain/run/timings.rs), in the run's order.
const PHASES: [&str; 6] = ["queue_wait_ms", "workspace_ms", "first_frame_ms", "cli_ms", "publish_ms", "artifacts_ms"];

/// The scripted two-call run: one `Write` of `content` to bench.txt, then an answer.
fn two_call_turns(content: &str) -> [Turn; 2] {
    [Turn::write("bench.txt", content), Turn::text("done")]
}

/// Runs the pinned CLI by itself as the executor starts it for an `implement` run (the same
/// argument vector, the message on stdin, a scrubbed environment with fresh config, home and
/// temporary folders) in a fresh clone of `url`; the time from spawn to exit, clone excluded.
async fn time_bare_cli(url: &str, model_url: &str, message: &str) -> Result<Duration> {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir()?;
    let work = dir.path().join("work");
    git(dir.path(), &["clone", "--quiet", url, work.to_str().context("work path")?])?;
    let (config, home, tmp) = (dir.path().join("claude"), dir.path().join("home"), dir.path().join("tmp"));
    for folder in [&config, &home, &tmp] {
        std::fs::create_dir_all(folder)?;
    }
    let workflow = WorkflowRegistry::builtin().get("implement").cloned().context("implement workflow")?;
    // The run the stack would make of the same request: its turns and budget.
    let run = run_for(url)?;
    let session = SessionMode::New(uuid::Uuid::new_v4());
    let invocation =
        CliInvocation::new(&workflow, run.max_turns, session, message.to_owned(), None).with_budget(run.max_budget_usd);
    let mut command = tokio::process::Command::new(claude_binary());
    command
        .args(invocation.args())
        .current_dir(&work)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .env("LANG", "C.UTF-8")
        .env("CLAUDE_CONFIG_DIR", &config)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("ANTHROPIC_BASE_URL", model_url)
        .env("ANTHROPIC_API_KEY", "sk-bench")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().with_context(|| format!("starting {}", claude_binary().display()))?;
    let mut stdin = child.stdin.take().context("the CLI's stdin")?;
    stdin.write_all(message.as_bytes()).await?;
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .context("the bare CLI ran for over 120 s")??;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value =
        stdout.lines().rev().find_map(|line| serde_json::from_str(line).ok()).unwrap_or_default();
    ensure!(
        output.status.success() && result["type"] == "result" && result["subtype"] == "success",
        "the bare CLI did not succeed ({}): {result} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(work.join("bench.txt").is_file(), "the bare CLI did not write bench.txt");
    Ok(elapsed)
}

/// What the stack adds to a run: the same scripted two-call run, started by hand with the bare
/// CLI in a fresh clone, and submitted over HTTP and watched to `completed`; alternated.
async fn overhead_bench(emulator: &Emulator, postgres: &PgCluster) -> Result<()> {
    let origin = tempfile::tempdir()?;
    let url = small_repository(origin.path())?;
    let workspaces = local::open_tempdir("bench-")?;
    let model = ScriptedModel::start(Vec::new()).await?;
    let env = BenchEnv { emulator, postgres, repository: &url, model_url: model.url(), workspaces: workspaces.path() };
    let stack = env.stack("overhead", 1, true).await?;
    let http = reqwest::Client::new();
    let message = "Write bench.txt";
    let pairs = 8;
    let (mut bare, mut stacked) = (Vec::new(), Vec::new());
    let mut phases: Vec<Vec<Duration>> = vec![Vec::new(); PHASES.len()];
    for i in 0..=pairs {
        // Each run writes what the origin does not have yet, so every stack run commits and pushes.
        model.push(two_call_turns(&format!("sample {i}\n")));
        let bare_elapsed = time_bare_cli(&url, &model.url(), message).await?;

        model.push(two_call_turns(&format!("sample {i}\n")));
        let started = Instant::now();
        let run_id = submit(&http, &stack, message).await?;
        let status = wait_completed(&http, &stack, &run_id, POLL, Duration::from_secs(60)).await?;
        let stack_elapsed = started.elapsed();
        // The first pair warms the mirror cache, the CLI's files and the connections up.
        if i > 0 {
            bare.push(bare_elapsed);
            stacked.push(stack_elapsed);
            for (phase, samples) in PHASES.iter().zip(phases.iter_mut()) {
                if let Some(ms) = status["timings"][*phase].as_u64() {
                    samples.push(Duration::from_millis(ms));
                }
            }
        }
    }
    stack.shutdown().await;
    model.stop();
    let (bare_min, bare_p50, bare_max) = stats(bare);
    let (stack_min, stack_p50, stack_max) = stats(stacked);
    println!("\nWhat the stack adds: the same scripted two-call run ({pairs} pairs, alternated, after a warm-up pair)");
    println!("| path                                        |   min ms | median ms |   max ms |");
    println!("|---------------------------------------------|---------:|----------:|---------:|");
    println!("| bare CLI, fresh clone: spawn → exit         | {bare_min:8.1} | {bare_p50:9.1} | {bare_max:8.1} |");
    println!("| stack: submit → `completed` (10 ms poll)    | {stack_min:8.1} | {stack_p50:9.1} | {stack_max:8.1} |");
    let ratio = stack_p50 / bare_p50;
    println!("| ratio (stack ÷ bare), medians               |          | {ratio:9.2} |          |");
    println!("\nWhere the stack's time goes: medians of the runs' `timings`");
    println!("| phase                                       | runs | median ms |");
    println!("|---------------------------------------------|-----:|----------:|");
    let (mut sum, mut cli_p50) = (0.0, None);
    for (phase, samples) in PHASES.iter().zip(phases) {
        let count = samples.len();
        if count == 0 {
            println!("| {phase:<43} | {count:4} |         - |");
            continue;
        }
        let (_, p50, _) = stats(samples);
        // The first frame comes within the CLI phase: adding it would count it twice.
        if *phase == "first_frame_ms" {
            println!("| {:<43} | {count:4} | {p50:9.1} |", format!("{phase} (within cli_ms)"));
            continue;
        }
        if *phase == "cli_ms" {
            cli_p50 = Some(p50);
        }
        sum += p50;
        println!("| {phase:<43} | {count:4} | {p50:9.1} |");
    }
    println!("| sum of the phases                           |      | {sum:9.1} |");
    let rest = stack_p50 - sum;
    println!("| rest: intake, state writes, 10 ms poll      |      | {rest:9.1} |");
    if let Some(cli_p50) = cli_p50 {
        let extra = cli_p50 - bare_p50;
        println!("| cli_ms less the bare CLI (median - median)  |      | {extra:9.1} |");
    }
    println!("(rest: the stack's median less the sum of the phases' medians, an estimate)");
    anyhow::Ok(())
}

/// Per-run users: the same scripted run on two stacks, one giving each run's CLI a uid of its
/// own (the default as root: hand the workspace over, kill everything of the uid, sweep the
/// temp dirs, take the workspace back), one not (`RUN_USERS=off`); alternated.
async fn users_bench(emulator: &Emulator, postgres: &PgCluster) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        println!("\n(per-run users need an executor running as root: not measured here)");
        return Ok(());
    }
    let origin = tempfile::tempdir()?;
    let url = small_repository(origin.path())?;
    let workspaces = local::open_tempdir("bench-")?;
    let model = ScriptedModel::start(Vec::new()).await?;
    let env = BenchEnv { emulator, postgres, repository: &url, model_url: model.url(), workspaces: workspaces.path() };
    let with_users = env.stack_with("users_on", Some(env.executor_options(1))).await?;
    let mut off = env.executor_options(1);
    off.environment.insert("RUN_USERS".into(), "off".into());
    off.environment.insert("WORKSPACE_ROOT".into(), workspaces.path().join("runs-off").display().to_string());
    let without = env.stack_with("users_off", Some(off)).await?;
    let http = reqwest::Client::new();
    let pairs = 8;
    // Per stack: submit → completed, then the phases of the run where the uid makes a difference.
    let mut samples: [[Vec<Duration>; 3]; 2] = Default::default();
    for i in 0..=pairs {
        for (which, stack) in [&with_users, &without].into_iter().enumerate() {
            model.push(two_call_turns(&format!("users {i} {which}\n")));
            let started = Instant::now();
            let run_id = submit(&http, stack, "Write bench.txt").await?;
            let status = wait_completed(&http, stack, &run_id, POLL, Duration::from_secs(60)).await?;
            let elapsed = started.elapsed();
            // The first pair warms the mirror caches and the CLI's files up.
            if i > 0 {
                samples[which][0].push(elapsed);
                for (slot, phase) in [(1, "first_frame_ms"), (2, "cli_ms")] {
                    let ms = status["timings"][phase].as_u64().unwrap_or_default();
                    samples[which][slot].push(Duration::from_millis(ms));
                }
            }
        }
    }
    with_users.shutdown().await;
    without.shutdown().await;
    model.stop();
    let [on, off] = samples;
    let [on_total, on_first, on_cli] = on;
    let [off_total, off_first, off_cli] = off;
    let (on_min, on_p50, on_max) = stats(on_total);
    let (off_min, off_p50, off_max) = stats(off_total);
    println!("\nPer-run users: the same scripted two-call run, submit → `completed` ({pairs} pairs, alternated)");
    println!("| executor                                    |   min ms | median ms |   max ms |");
    println!("|---------------------------------------------|---------:|----------:|---------:|");
    println!("| each run its own uid (`RUN_USERS` auto)     | {on_min:8.1} | {on_p50:9.1} | {on_max:8.1} |");
    println!("| every run as the executor (`RUN_USERS=off`) | {off_min:8.1} | {off_p50:9.1} | {off_max:8.1} |");
    let ratio = on_p50 / off_p50;
    println!("| ratio (own uid ÷ shared), medians           |          | {ratio:9.2} |          |");
    let median = |samples: Vec<Duration>| stats(samples).1;
    let (on_first, off_first) = (median(on_first), median(off_first));
    let (on_cli, off_cli) = (median(on_cli), median(off_cli));
    println!(
        "| first frame, own uid / shared (median ms)   |          | {on_first:4.0} / {off_first:4.0} |          |"
    );
    println!("| CLI phase, own uid / shared (median ms)     |          | {on_cli:4.0} / {off_cli:4.0} |          |");
    anyhow::Ok(())
}

/// Lines in the recording `throughput_bench` replays.
const THROUGHPUT_LINES: usize = 100_000;

/// Writes a recording of `lines` short lines (at least 2) to `path`: the init line, text-only
/// assistant lines, the result line; no offsets, for `--pace fast`.
fn generated_recording(path: &Path, lines: usize) -> Result<()> {
    use std::io::Write as _;
    let session = uuid::Uuid::new_v4();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let init = serde_json::json!({"type": "system", "subtype": "init", "cwd": "/tmp/bench", "session_id": session,
        "tools": ["Write"], "mcp_servers": [], "model": "claude-sonnet-4-6", "permissionMode": "acceptEdits",
        "apiKeySource": "ANTHROPIC_API_KEY", "uuid": uuid::Uuid::new_v4()});
    writeln!(out, "{init}")?;
    for i in 1..lines - 1 {
        let line = serde_json::json!({"type": "assistant", "message": {"model": "claude-sonnet-4-6",
            "id": "msg_bench", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": format!("line {i}")}], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 2}}, "parent_tool_use_id": null, "session_id": session,
            "uuid": uuid::Uuid::new_v4()});
        writeln!(out, "{line}")?;
    }
    let result = serde_json::json!({"type": "result", "subtype": "success", "is_error": false, "duration_ms": 1000,
        "num_turns": 1, "result": "done", "session_id": session, "total_cost_usd": 0.0,
        "usage": {"input_tokens": 10, "output_tokens": 2}, "uuid": uuid::Uuid::new_v4()});
    writeln!(out, "{result}")?;
    out.flush()?;
    Ok(())
}

/// Resets this process's VmHWM to its current resident size (Linux ≥ 4.0); whether it could.
fn reset_vm_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// How many frames per second one run can produce, stored in Postgres and in the S3 log: a
/// `THROUGHPUT_LINES`-line recording replayed by `claude-replay --pace fast`, no subscriber.
async fn throughput_bench(emulator: &Emulator, postgres: &PgCluster) -> Result<()> {
    let binary = replay_binary()?;
    let origin = tempfile::tempdir()?;
    let url = small_repository(origin.path())?;
    let workspaces = local::open_tempdir("bench-")?;
    let recording = workspaces.path().join("many-lines.ndjson");
    generated_recording(&recording, THROUGHPUT_LINES)?;
    let claude = replay_wrapper(workspaces.path(), &binary, &recording, "fast")?;
    // Nothing listens there: the replay never calls a model.
    let model_url = "http://127.0.0.1:9".to_owned();
    let env = BenchEnv { emulator, postgres, repository: &url, model_url, workspaces: workspaces.path() };
    let stack = env.stack_with("throughput", Some(env.executor_options_with(1, &claude))).await?;
    let http = reqwest::Client::new();
    // VmHWM only grows: without a reset, an earlier benchmark's peak would hide this run's.
    let reset = reset_vm_hwm();
    let baseline = vm_hwm_kib();
    let started = Instant::now();
    let run_id = submit(&http, &stack, "many frames").await?;
    let status = wait_completed(&http, &stack, &run_id, Duration::from_millis(100), Duration::from_secs(900)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let peak = vm_hwm_kib();
    let id: uuid::Uuid = run_id.parse()?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM claude_cli_outputs WHERE run_id = $1")
        .bind(id)
        .fetch_one(&stack.pool)
        .await?;
    let objects = S3ObjectStore::new(runner_adapters::aws::s3(&stack.sdk), &stack.settings.artifacts_bucket);
    let log = objects.get(&format!("runs/{run_id}/output.ndjson")).await?.context("the run's S3 log")?;
    let logged = log.split(|&byte| byte == b'\n').filter(|line| !line.is_empty()).count();
    stack.shutdown().await;
    let cli_s = status["timings"]["cli_ms"].as_u64().map(|ms| ms as f64 / 1000.0);
    println!(
        "\nFrames one run can produce: a {THROUGHPUT_LINES}-line recording replayed by claude-replay --pace fast, \
         one run, no subscriber"
    );
    println!("| figure                                          |        value |");
    println!("|-------------------------------------------------|-------------:|");
    println!("| HTTP submit → status `completed`                | {elapsed:10.2} s |");
    if let Some(cli_s) = cli_s {
        println!("| CLI phase (timings.cli_ms)                      | {cli_s:10.2} s |");
    }
    println!("| frames stored in Postgres (claude_cli_outputs)  | {stored:12} |");
    println!("| lines in the S3 log (runs/<id>/output.ndjson)   | {logged:12} |");
    println!("| frames/s: stored ÷ (submit → completed)         | {:12.0} |", stored as f64 / elapsed);
    if let Some(cli_s) = cli_s.filter(|s| *s > 0.0) {
        println!("| frames/s: stored ÷ CLI phase                    | {:12.0} |", stored as f64 / cli_s);
    }
    let growth = peak.saturating_sub(baseline) as f64 / 1024.0;
    println!("| VmHWM growth during the run                     | {growth:8.1} MiB |");
    if !reset {
        println!("(VmHWM could not be reset: the growth is over every earlier peak of this process.)");
    }
    ensure!(
        stored == THROUGHPUT_LINES as i64 && logged == THROUGHPUT_LINES,
        "expected {THROUGHPUT_LINES} frames in Postgres and in the S3 log, got {stored} and {logged}"
    );
    anyhow::Ok(())
}

/// Entries of the measured repository in the recall benchmark (and as many of other repositories).
const RECALL_ENTRIES: i64 = 10_000;

/// What finding a run's memory adds before the CLI starts: the relevance query over 10,000
/// accepted entries of the repository, beside a bare round trip to the same database.
async fn recall_bench(postgres: &PgCluster) -> Result<()> {
    let database_url = create_database(&postgres.url, "bench_recall").await?;
    let pool = runner_adapters::postgres::connect(&database_url, 2).await?;
    runner_adapters::postgres::migrate(&pool).await?;
    let words = "cargo test port flaky migration sqlx index timeout retry cache docker network fixture schema \
                 lint format deploy lambda queue stream frame session branch commit review";
    // Varied texts: each entry a different selection of the words, plus its number.
    sqlx::query(
        "INSERT INTO claude_runner_memory (memory_id, owner, repository_url, kind, status, text, occurrences, \
                                           first_seen, last_seen, updated_at)
         SELECT gen_random_uuid(), 'bench', CASE WHEN n <= $2 THEN 'https://git.example.com/acme/app.git'
                                                 ELSE 'https://git.example.com/acme/other.git' END,
                'pattern', 'accepted',
                array_to_string(ARRAY(SELECT w FROM unnest(string_to_array($1, ' ')) WITH ORDINALITY AS t(w, i)
                                      WHERE (n * 7 + i * 13) % 5 < 2), ' ') || ' note ' || n,
                1 + n % 4, now() - (n || ' minutes')::interval, now() - (n || ' minutes')::interval, now()
         FROM generate_series(1, $2 * 2) AS n",
    )
    .bind(words.split_whitespace().collect::<Vec<_>>().join(" "))
    .bind(RECALL_ENTRIES)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE claude_runner_memory").execute(&pool).await?;
    let store = runner_adapters::PgMemoryStore::new(pool.clone());
    let owner = runner_core::domain::Owner::new("bench");
    let repo = "https://git.example.com/acme/app.git";
    let message = "implement Fix the flaky port tests in the sqlx migration suite and retry the cache";
    let (mut recall, mut bare) = (Vec::new(), Vec::new());
    for i in 0..220 {
        let started = Instant::now();
        let hints = runner_core::ports::MemoryStore::relevant(&store, &owner, repo, message, 8).await?;
        let recall_took = started.elapsed();
        anyhow::ensure!(hints.len() == 8, "the repository has entries to find");
        let started = Instant::now();
        sqlx::query("SELECT 1").execute(&pool).await?;
        // The first 20 warm the plan cache and the connections.
        if i >= 20 {
            recall.push(recall_took.as_secs_f64() * 1000.0);
            bare.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    recall.sort_by(f64::total_cmp);
    bare.sort_by(f64::total_cmp);
    println!(
        "\nMemory lookup before a run, {RECALL_ENTRIES} accepted entries in the repository (+{RECALL_ENTRIES} elsewhere), 200 lookups"
    );
    println!("| query                                         |   p50 ms |   p99 ms | goal         |");
    println!("|-----------------------------------------------|---------:|---------:|--------------|");
    println!(
        "| relevant entries (trigram + full text, top 8) | {:8.2} | {:8.2} | p99 < 10 ms  |",
        quantile(&recall, 0.5),
        quantile(&recall, 0.99)
    );
    println!(
        "| bare round trip (`SELECT 1`), same pool       | {:8.2} | {:8.2} | (reference)  |",
        quantile(&bare, 0.5),
        quantile(&bare, 0.99)
    );
    pool.close().await;
    anyhow::Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let which: Vec<String> = std::env::args().skip(1).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if wants("workspace") {
        workspace_bench().await?;
    }
    // The stack-based benchmarks share one emulator and one Postgres.
    let emulator = Emulator::start(&repo_root().join(".tools/venv/bin/moto_server"), None).await?;
    let postgres = PgCluster::start().await?;
    let result = async {
        if wants("memory") {
            rss_bench(&emulator, &postgres).await?;
        }
        if wants("streaming") {
            streaming_bench(&emulator, &postgres).await?;
        }
        if wants("replay") {
            replay_bench(&emulator, &postgres).await?;
        }
        if wants("resume") {
            resume_bench(&emulator, &postgres).await?;
        }
        if wants("genie") {
            genie_bench(&emulator, &postgres).await?;
        }
        if wants("overhead") {
            overhead_bench(&emulator, &postgres).await?;
        }
        if wants("users") {
            users_bench(&emulator, &postgres).await?;
        }
        if wants("throughput") {
            throughput_bench(&emulator, &postgres).await?;
        }
        if wants("recall") {
            recall_bench(&postgres).await?;
        }
        anyhow::Ok(())
    }
    .await;
    postgres.stop().await;
    emulator.stop().await;
    result
}
