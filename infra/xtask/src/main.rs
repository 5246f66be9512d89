//! Project automation, in Rust so a fresh machine needs only cargo:
//!
//! - `cargo xtask up [ARGS]`  — install the tools, then run the local stack (ARGS go to it)
//! - `cargo xtask test [ARGS]` — install the tools, lint the template, start moto + Postgres once,
//!   run every test with nextest (ARGS go to nextest), stop what it started
//! - `cargo xtask test --localstack [ARGS]` — the same, with SQS, S3, Step Functions and Secrets
//!   Manager on LocalStack (host mode, no Docker) and DynamoDB and the rest on moto
//! - `cargo xtask bench`      — build optimized and print the benchmark tables
//! - `cargo xtask tools`      — only install the tools
//! - `cargo xtask tidy`       — check the layering the compiler cannot (see `tidy.rs`)
//! - `cargo xtask docs`       — regenerate the API reference (`docs/api.md`) from the contract

mod api_docs;
mod localstack;
mod tidy;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    // `cargo xtask up -- --help` and `cargo xtask up --help` mean the same: a leading `--` only
    // separates cargo's arguments from ours.
    let rest: Vec<String> = args.skip_while(|arg| arg == "--").collect();
    let result = match task.as_str() {
        "up" => up(&rest),
        "test" => test(&rest),
        "tools" => tools().and_then(|_| claude_cli()).map(|_| ()),
        "bench" => bench(&rest),
        "tidy" => tidy::check(&root()),
        "docs" => api_docs::write(&root()),
        _ => {
            eprintln!("usage: cargo xtask <up|test|bench|tools|tidy|docs> [ARGS]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask {task}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Installs the pinned Python tools into `.tools/venv`, once per requirements change.
fn tools() -> Result<PathBuf> {
    let root = root();
    let venv = root.join(".tools/venv");
    let requirements = root.join("infra/tools/requirements.txt");
    let constraints = root.join("infra/tools/constraints.txt");
    let wanted = std::fs::read_to_string(&requirements).context("read requirements.txt")?
        + &std::fs::read_to_string(&constraints).context("read constraints.txt")?;
    let stamp = venv.join(".installed-requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(venv);
    }
    eprintln!("xtask: installing Python tools into {} (first run takes a minute)", venv.display());
    if !venv.join("bin/python").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .arg("-c")
        .arg(&constraints))?;
    std::fs::write(&stamp, wanted)?;
    Ok(venv)
}

/// Installs the pinned Claude CLI into `.tools/npm` (the package ships a native binary; Node is
/// needed only to install it).
fn claude_cli() -> Result<PathBuf> {
    let root = root();
    let prefix = root.join(".tools/npm");
    let wanted = std::fs::read_to_string(root.join("infra/tools/package.json")).context("read package.json")?;
    let bin = prefix.join("node_modules/.bin/claude");
    if std::fs::read_to_string(prefix.join("package.json")).ok().as_deref() == Some(wanted.as_str()) && bin.exists() {
        open_to_run_users(&root)?;
        return Ok(bin);
    }
    eprintln!("xtask: installing the pinned Claude CLI into {}", prefix.display());
    std::fs::create_dir_all(&prefix)?;
    std::fs::write(prefix.join("package.json"), &wanted)?;
    run(Command::new("npm").args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"]).arg(&prefix))?;
    run(Command::new(&bin).arg("--version").stdout(Stdio::null()))?;
    open_to_run_users(&root)?;
    Ok(bin)
}

/// As root, the stack runs each run's CLI as a user of its own, who must be able to pass
/// through the folders above the checkout to reach the CLI in `.tools` (a `mktemp -d` folder is
/// mode 0700). Grants search (`o+x`, not reading) where it is missing.
fn open_to_run_users(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    for dir in root.canonicalize()?.ancestors() {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o001 == 0 {
            eprintln!("xtask: allowing run users to pass through {} (chmod o+x)", dir.display());
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))?;
        }
    }
    Ok(())
}

fn up(args: &[String]) -> Result<()> {
    tools()?;
    claude_cli()?;
    run(cargo().args(["build", "--quiet", "-p", "local", "--bin", "claude-runner-local"]))?;
    // exec: Ctrl-C and SIGTERM reach the stack directly, and it cleans up what it started.
    let err = Command::new(root().join("target/debug/claude-runner-local")).args(args).exec();
    Err(err).context("starting claude-runner-local")
}

fn check_template(venv: &Path) -> Result<()> {
    let template = root().join("template.yaml");
    let quiet = |mut c: Command| {
        c.env("SAM_CLI_TELEMETRY", "0").env("AWS_DEFAULT_REGION", "us-east-1").current_dir(root());
        c
    };
    eprintln!("xtask: sam validate, sam validate --lint, cfn-lint");
    let mut validate = quiet(Command::new(venv.join("bin/sam")));
    run(validate.args(["validate", "--template-file"]).arg(&template))?;
    let mut lint = quiet(Command::new(venv.join("bin/sam")));
    run(lint.args(["validate", "--lint", "--template-file"]).arg(&template))?;
    let mut cfn_lint = quiet(Command::new(venv.join("bin/cfn-lint")));
    run(cfn_lint.arg(&template))
}

/// moto and Postgres, started once for the whole test run by the local binary.
struct Services {
    child: Child,
    state_dir: PathBuf,
}

impl Services {
    /// Returns the services and their (AWS endpoint, Postgres server URL).
    fn start(venv: &Path) -> Result<(Self, (String, String))> {
        let state_dir = root().join(format!(".local/test-services-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir)?;
        let child = Command::new(root().join("target/debug/claude-runner-local"))
            .arg("--services-only")
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--moto-server")
            .arg(venv.join("bin/moto_server"))
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .spawn()
            .context("start the test services")?;
        let mut services = Self { child, state_dir };
        let endpoints_file = services.state_dir.join("endpoints.json");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let endpoints: Option<serde_json::Value> =
                std::fs::read(&endpoints_file).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
            if let Some(endpoints) = endpoints {
                let field = |name: &str| endpoints[name].as_str().unwrap_or_default().to_owned();
                return Ok((services, (field("aws_endpoint"), field("database_url"))));
            }
            if let Some(status) = services.child.try_wait()? {
                bail!("test services exited early with {status}");
            }
            if Instant::now() > deadline {
                services.stop();
                bail!("test services did not start within 90 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.state_dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn test(args: &[String]) -> Result<()> {
    let (with_localstack, args): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| *a == "--localstack");
    let venv = tools()?;
    let claude = claude_cli()?;
    check_template(&venv)?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    tidy::check(&root())?;
    run(cargo().args(["clippy", "--quiet", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    run(cargo().args(["build", "--quiet", "-p", "local", "--bin", "claude-runner-local"]))?;
    let localstack = match with_localstack.is_empty() {
        true => None,
        false => Some(localstack::LocalStack::start(&root())?),
    };
    let (mut services, (aws_endpoint, database_url)) = Services::start(&venv)?;
    eprintln!("xtask: services up (moto {aws_endpoint}, postgres {database_url})");
    let routed = localstack.as_ref().map(|ls| ls.routes()).unwrap_or_default();
    if let Some(ls) = &localstack {
        eprintln!(
            "xtask: {} on LocalStack {} (host mode); DynamoDB, DynamoDB Streams and the rest on moto",
            localstack::SERVICES.join(", "),
            ls.endpoint
        );
    }
    let result = run(cargo()
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .args(args)
        .env("CLAUDE_RUNNER_TEST_AWS_SERVICES", &routed)
        .env("CLAUDE_RUNNER_TEST_AWS_ENDPOINT", &aws_endpoint)
        .env("CLAUDE_RUNNER_TEST_DATABASE_URL", &database_url)
        .env("CLAUDE_RUNNER_MOTO_SERVER", venv.join("bin/moto_server"))
        .env("CLAUDE_RUNNER_TEST_CLAUDE_BIN", &claude));
    services.stop();
    if let Some(mut ls) = localstack {
        ls.stop();
        eprintln!("xtask: ran {} on LocalStack, the rest on moto", localstack::SERVICES.join(", "));
    }
    result
}

fn bench(args: &[String]) -> Result<()> {
    tools()?;
    claude_cli()?;
    // The replay stand-in for `claude` (infra/replay), built next to the benchmark binary.
    run(cargo().args(["build", "--quiet", "--profile", "bench", "-p", "claude-replay"]))?;
    run(cargo().args(["run", "--quiet", "--profile", "bench", "-p", "bench", "--"]).args(args))
}
