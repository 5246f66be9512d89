//! The Claude CLI as a child process: argument vector, scrubbed environment, its own process
//! group and rlimits. Stdout is read line by line; a line longer than the cap is kept cut at the
//! cap with its full length recorded, so a megabyte line never breaks the reader.

use std::collections::VecDeque;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdout};

use crate::ModelProxy;
use crate::run_users::{RunUser, RunUserRange, RunUsers};
use runner_core::claude::CliInvocation;
use runner_core::ports::{Cli, CliProcess, ModelUsage, OutputLine, Workspace};
use runner_core::{Error, Result};

/// Where the model is when the deployment names no endpoint.
const ANTHROPIC_API: &str = "https://api.anthropic.com";
/// The longest line kept whole; longer ones are cut (and marked so).
const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;
const STDERR_TAIL_BYTES: usize = 64 * 1024;
/// Node reserves far more address space than it uses (V8's pointer cage and WebAssembly
/// guard regions); this cap stops a runaway allocation, not the CLI's reservations.
const DEFAULT_MAX_ADDRESS_SPACE: u64 = 64 * 1024 * 1024 * 1024;

/// How the CLI is started: binary, model endpoint and key, resource limits.
#[derive(Clone, Debug)]
pub struct ClaudeCliConfig {
    /// `CLAUDE_BIN`; `claude` on `PATH` by default.
    pub bin: PathBuf,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    /// A line longer than this is kept truncated (and marked so).
    pub max_frame_bytes: usize,
    pub max_file_bytes: u64,
    pub max_open_files: u64,
    pub max_cpu_seconds: u64,
    /// The address space of any one process of the run (`RLIMIT_AS`).
    pub max_address_space_bytes: u64,
    /// Processes (threads included) the run's user may have at once (`RLIMIT_NPROC`); only
    /// set with run users, as it counts every process of the user.
    pub max_processes: u64,
    /// Each run's CLI under a uid of its own from this range (the executor must be root).
    pub run_users: Option<RunUserRange>,
}

impl Default for ClaudeCliConfig {
    fn default() -> Self {
        Self {
            bin: PathBuf::from("claude"),
            base_url: None,
            api_key: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            max_open_files: 4096,
            max_cpu_seconds: 1800,
            max_address_space_bytes: DEFAULT_MAX_ADDRESS_SPACE,
            max_processes: 1024,
            run_users: None,
        }
    }
}

/// Starts the real `claude` binary.
pub struct ClaudeCli {
    config: ClaudeCliConfig,
    users: Option<Arc<RunUsers>>,
}

impl ClaudeCli {
    /// A launcher with this binary, endpoint and limits.
    pub fn new(config: ClaudeCliConfig) -> Self {
        let users = config.run_users.map(RunUsers::new);
        Self { config, users }
    }
}

#[async_trait]
impl Cli for ClaudeCli {
    async fn start(&self, workspace: &Workspace, invocation: &CliInvocation) -> Result<Box<dyn CliProcess>> {
        let config = &self.config;
        // Every process of this CLI inherits the mark, even one that leaves its process group.
        let mark = uuid::Uuid::new_v4().to_string();
        let mut command = std::process::Command::new(&config.bin);
        command
            .args(invocation.args())
            .current_dir(&workspace.work_dir)
            // Only what the CLI needs: never the executor's AWS credentials or anything else.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
            .env("HOME", &workspace.home_dir)
            .env("TMPDIR", &workspace.tmp_dir)
            .env("LANG", "C.UTF-8")
            .env("CLAUDE_CONFIG_DIR", &workspace.config_dir)
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env(SANDBOX_MARK, &mark)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // The key stays here: the CLI gets this run's placeholder and a loopback endpoint.
        let proxy = match &config.api_key {
            Some(key) => {
                let upstream = config.base_url.as_deref().unwrap_or(ANTHROPIC_API);
                let proxy = ModelProxy::start(upstream, key, invocation.max_budget_usd).await?;
                command.env("ANTHROPIC_BASE_URL", proxy.base_url()).env("ANTHROPIC_API_KEY", proxy.placeholder());
                Some(proxy)
            }
            None => {
                if let Some(url) = &config.base_url {
                    command.env("ANTHROPIC_BASE_URL", url);
                }
                None
            }
        };
        // The run's own user, when there are run users: it owns the workspace from here on.
        let user = match &self.users {
            Some(users) => {
                let mut user = users.take()?;
                user.enter(workspace)?;
                user.apply(&mut command);
                Some(user)
            }
            None => None,
        };
        // Any one process may use the CPU for the run's whole time limit on every core, no more.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let cpu = invocation
            .time_limit
            .map_or(config.max_cpu_seconds, |limit| (limit.as_secs().max(1) * cores).min(config.max_cpu_seconds));
        let nproc = user.as_ref().map(|_| config.max_processes);
        let limits = (config.max_file_bytes, config.max_open_files, cpu, config.max_address_space_bytes);
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent. It runs
        // after the switch to the run's user, which may lower its own limits.
        unsafe {
            command.pre_exec(move || {
                let (fsize, nofile, cpu, address_space) = limits;
                setrlimit(Resource::RLIMIT_FSIZE, fsize, fsize)?;
                setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile)?;
                setrlimit(Resource::RLIMIT_CPU, cpu, cpu + 30)?;
                setrlimit(Resource::RLIMIT_AS, address_space, address_space)?;
                if let Some(nproc) = nproc {
                    setrlimit(Resource::RLIMIT_NPROC, nproc, nproc)?;
                }
                Ok(())
            });
        }
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::run_failed("cli_start_failed", format!("{}: {e}", config.bin.display())))?;
        let pgid = child.id().map(|id| id as i32);

        let mut stdin = child.stdin.take().expect("piped");
        let message = invocation.message.clone();
        tokio::spawn(async move {
            // A closed stdin (the CLI exited early) is not an error worth more than a debug line.
            if let Err(err) = stdin.write_all(message.as_bytes()).await {
                tracing::debug!(error = %err, "writing the message to the CLI failed");
            }
            let _ = stdin.shutdown().await;
        });

        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_BYTES)));
        let mut stderr = child.stderr.take().expect("piped");
        let tail = stderr_tail.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut tail = tail.lock().expect("stderr lock");
                tail.extend(&chunk[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                tail.drain(..excess);
            }
        });
        let stdout = BufReader::with_capacity(256 * 1024, child.stdout.take().expect("piped"));
        Ok(Box::new(ClaudeCliProcess {
            child,
            stdout,
            stderr_tail,
            pgid,
            max_line: config.max_frame_bytes,
            mark,
            user,
            workspace: workspace.clone(),
            proxy,
        }))
    }
}

struct ClaudeCliProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr_tail: Arc<Mutex<VecDeque<u8>>>,
    pgid: Option<i32>,
    max_line: usize,
    /// The value of `SANDBOX_MARK` in this CLI's environment.
    mark: String,
    /// The run's own user, if it has one: everything of that uid is killed at the stop.
    user: Option<RunUser>,
    workspace: Workspace,
    /// The run's model endpoint; it stops with the process.
    proxy: Option<ModelProxy>,
}

/// The variable that marks every process a CLI started: a tool that detaches (`setsid`, a
/// daemon) leaves the process group, but not its environment.
const SANDBOX_MARK: &str = "CLAUDE_RUNNER_SANDBOX";

/// Kills every process whose environment carries `mark`: whatever a run left behind, detached
/// or not. Processes that cleared their environment are out of its reach (the executor is their
/// subreaper and non-dumpable; see docs/security.md).
fn kill_marked(mark: &str, spare: Option<u32>) -> usize {
    let needle = format!("{SANDBOX_MARK}={mark}");
    let me = std::process::id();
    let mut killed = 0;
    for pid in crate::processes::pids() {
        if pid as u32 == me || Some(pid as u32) == spare {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if environ.split(|b| *b == 0).any(|var| var == needle.as_bytes())
            && nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
            // Where the executor is the subreaper, the killed process is its child now: reap it
            // once it is dead (`ECHILD` at once when it is not ours to reap).
            std::thread::spawn(move || nix::sys::wait::waitpid(Pid::from_raw(pid), None));
        }
    }
    killed
}

impl Drop for ClaudeCliProcess {
    /// A run abandoned mid-way (its task aborted) still takes its whole process group with it.
    fn drop(&mut self) {
        if let (Some(pgid), Ok(None)) = (self.pgid, self.child.try_wait()) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        kill_marked(&self.mark, self.child.id());
    }
}

#[async_trait]
impl CliProcess for ClaudeCliProcess {
    async fn next_line(&mut self) -> Result<Option<OutputLine>> {
        let mut bytes = Vec::new();
        let mut total = 0usize;
        loop {
            let buf = self.stdout.fill_buf().await.map_err(|e| Error::dependency("read CLI output", e))?;
            if buf.is_empty() {
                return Ok((total > 0).then_some(OutputLine { bytes, total_bytes: total }));
            }
            let (chunk, consumed, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(end) => (&buf[..end], end + 1, true),
                None => (buf, buf.len(), false),
            };
            let room = self.max_line.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            total += chunk.len();
            self.stdout.consume(consumed);
            if done {
                return Ok(Some(OutputLine { bytes, total_bytes: total }));
            }
        }
    }

    async fn stop(&mut self, grace: Duration) {
        let Some(pgid) = self.pgid else { return };
        let group = Pid::from_raw(pgid);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = killpg(group, Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
                tracing::warn!(pgid, "the CLI ignored SIGTERM; killing its process group");
            }
        }
        // Whatever is left of the group (tools' children) goes too, and whatever left the group.
        let _ = killpg(group, Signal::SIGKILL);
        // The CLI itself is left to `wait`, which reads its exit code.
        let detached = kill_marked(&self.mark, self.child.id());
        if detached > 0 {
            tracing::warn!(pgid, detached, "killed processes the run left behind outside its group");
        }
        if let Some(user) = &mut self.user {
            user.leave(&self.workspace, self.child.id());
        }
    }

    async fn wait(&mut self) -> Option<i32> {
        self.child.wait().await.ok().and_then(|status| status.code())
    }

    fn model_usage(&self) -> Option<ModelUsage> {
        self.proxy.as_ref().map(ModelProxy::usage)
    }

    fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().expect("stderr lock");
        String::from_utf8_lossy(&tail.iter().copied().collect::<Vec<_>>()).into_owned()
    }
}

/// Hardens the executor's own process before it runs anything. Not dumpable: a run's commands,
/// running as the same user, cannot read its memory or `/proc/<pid>/environ` (the function's
/// AWS credentials, `DATABASE_URL`). The subreaper of its descendants: a process a run detached
/// is re-parented here rather than to init, and reaped when it is killed.
pub fn harden_executor() {
    if let Err(err) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %err, "could not make the executor non-dumpable");
    }
    if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %err, "could not make the executor a child subreaper");
    }
}
