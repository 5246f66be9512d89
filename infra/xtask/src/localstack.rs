//! LocalStack community in host mode (no Docker), for `cargo xtask test --localstack`: installed
//! into `.tools/localstack-venv` from its own v4.8.1 lock, started on a free loopback port with
//! everything it writes under one folder, stopped with SIGTERM.
//!
//! Only the services it runs without Docker or Java are routed to it; DynamoDB (which needs
//! DynamoDB Local, a Java download) and API Gateway v2 (not in the community edition) stay on moto.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The SDK service ids routed to LocalStack (`AWS_ENDPOINT_URL_<ID>` names them too).
pub const SERVICES: [&str; 4] = ["SQS", "S3", "SFN", "Secrets Manager"];

/// A running LocalStack.
pub struct LocalStack {
    child: Child,
    dir: PathBuf,
    pub endpoint: String,
}

impl LocalStack {
    pub fn start(root: &Path) -> Result<Self> {
        let venv = install(root)?;
        let catalog = service_catalog(root, &venv)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = root.join(format!(".local/localstack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lib = dir.join("fs/usr/lib/localstack");
        for sub in [&lib, &dir.join("tmp"), &dir.join("cache")] {
            std::fs::create_dir_all(sub)?;
        }
        // The prebuilt catalog saves each start ~7 s and ~350 MB of memory.
        std::fs::copy(&catalog, lib.join(catalog.file_name().unwrap_or_default()))?;
        let log = std::fs::File::create(dir.join("localstack.log"))?;
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(venv.join("bin/python"))
            .arg(root.join("infra/tools/localstack_launch.py"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &dir)
            .envs(settings(&dir, &listen))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start LocalStack")?;
        let mut localstack = Self { child, dir, endpoint: format!("http://{listen}") };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !healthy(&listen) {
            if let Some(status) = localstack.child.try_wait()? {
                bail!("LocalStack exited with {status}; see {}", localstack.dir.join("localstack.log").display());
            }
            if Instant::now() > deadline {
                localstack.stop();
                bail!("LocalStack was not ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(localstack)
    }

    /// `SQS=http://…,S3=http://…`: the services it serves, as the test harness reads them.
    pub fn routes(&self) -> String {
        SERVICES.iter().map(|service| format!("{service}={}", self.endpoint)).collect::<Vec<_>>().join(",")
    }

    /// SIGTERM, then SIGKILL after 15 s; its folder goes either way.
    pub fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What LocalStack needs to run on a host, on loopback only, writing only under `dir`.
fn settings(dir: &Path, listen: &str) -> Vec<(&'static str, String)> {
    vec![
        // This machine may look like a container (/.dockerenv): without this LocalStack would use
        // the container layout (/var/lib/localstack, …) and could rewrite /etc/resolv.conf.
        ("OVERRIDE_IN_DOCKER", "0".into()),
        ("DNS_ADDRESS", "0".into()),
        ("SKIP_SSL_CERT_DOWNLOAD", "1".into()),
        ("DISABLE_EVENTS", "1".into()),
        ("GATEWAY_LISTEN", listen.into()),
        ("LOCALSTACK_HOST", listen.into()),
        ("GATEWAY_SERVER", "hypercorn".into()),
        ("SQS_ENDPOINT_STRATEGY", "path".into()),
        ("SERVICES", "sqs,s3,secretsmanager,stepfunctions".into()),
        ("FILESYSTEM_ROOT", dir.join("fs").display().to_string()),
        ("TMPDIR", dir.join("tmp").display().to_string()),
        ("XDG_CACHE_HOME", dir.join("cache").display().to_string()),
    ]
}

/// The pinned LocalStack in `.tools/localstack-venv`, once per requirements change.
fn install(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".tools/localstack-venv");
    let wanted = std::fs::read_to_string(root.join("infra/tools/localstack-requirements.txt"))?;
    let stamp = venv.join(".installed-requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(venv);
    }
    eprintln!("xtask: installing LocalStack into {} (about two minutes)", venv.display());
    crate::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    crate::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(root.join("infra/tools/localstack-requirements.txt")),
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(venv)
}

/// LocalStack's index of every AWS service, built once: without it the first request of each
/// start builds it (5–9 s, ~350 MB).
fn service_catalog(root: &Path, venv: &Path) -> Result<PathBuf> {
    let catalog_root = root.join(".tools/localstack-catalog");
    let dir = catalog_root.join("usr/lib/localstack");
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(&dir).ok()?.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "dill"))
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    std::fs::create_dir_all(&dir)?;
    crate::run(
        Command::new(venv.join("bin/python"))
            .args(["-m", "localstack.aws.spec"])
            .env("OVERRIDE_IN_DOCKER", "0")
            .env("FILESYSTEM_ROOT", &catalog_root)
            .env("XDG_CACHE_HOME", catalog_root.join("cache"))
            .stdout(Stdio::null()),
    )?;
    find().context("LocalStack built no service catalog")
}

/// Whether `GET /_localstack/health` answers 200.
fn healthy(listen: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(listen) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /_localstack/health HTTP/1.0\r\nHost: {listen}\r\n\r\n");
    let mut answer = [0u8; 16];
    stream.write_all(request.as_bytes()).is_ok()
        && stream
            .read(&mut answer)
            .is_ok_and(|n| answer[..n].starts_with(b"HTTP/1.1 200") || answer[..n].starts_with(b"HTTP/1.0 200"))
}
