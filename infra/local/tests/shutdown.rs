//! The local binary, as a person runs it: it comes up, and SIGTERM or Ctrl-C leaves nothing
//! running or listening.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); read its state to tell.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Every process whose command line or working directory mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid == std::process::id() as i32 || !alive(pid) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(needle) || cwd.to_string_lossy().contains(needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn port_open(url: &str) -> bool {
    let addr = url.trim_start_matches("http://").trim_start_matches("ws://").trim_start_matches("postgres://postgres@");
    let addr = addr.split('/').next().unwrap();
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)).is_ok()
}

fn stops_cleanly_on(signal: Signal) {
    let moto = std::env::var("CLAUDE_RUNNER_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".tools/venv/bin/moto_server"));
    let state = tempfile::Builder::new().prefix("cr-local-shutdown-").tempdir_in(repo_root().join("target")).unwrap();
    let state_dir = state.path().to_path_buf();
    let mut child = Command::new(env!("CARGO_BIN_EXE_claude-runner-local"))
        .args(["--http-port", "0", "--ws-port", "0", "--moto-server"])
        .arg(&moto)
        .arg("--state-dir")
        .arg(&state_dir)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let endpoints_path = state_dir.join("endpoints.json");
    let deadline = Instant::now() + Duration::from_secs(90);
    let endpoints: serde_json::Value = loop {
        if let Ok(bytes) = std::fs::read(&endpoints_path) {
            break serde_json::from_slice(&bytes).unwrap();
        }
        assert!(child.try_wait().unwrap().is_none(), "the stack exited during start-up");
        assert!(Instant::now() < deadline, "the stack did not come up");
        std::thread::sleep(Duration::from_millis(200));
    };
    let pids: Vec<i32> = ["moto", "postgres"].iter().map(|n| endpoints["pids"][n].as_i64().unwrap() as i32).collect();
    let urls: Vec<String> = ["http_url", "ws_url", "aws_endpoint", "database_url"]
        .iter()
        .map(|n| endpoints[n].as_str().unwrap().to_owned())
        .collect();
    assert!(pids.iter().all(|p| alive(*p)), "moto and postgres run while the stack is up");
    assert!(urls.iter().all(|u| port_open(u)), "every endpoint listens while the stack is up");
    let pg_data = endpoints["pids"]["postgres_data_dir"].as_str().unwrap().to_owned();
    assert!(!processes_mentioning(&pg_data).is_empty(), "postgres runs out of its data dir");

    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the stack did not stop within 30 s of {signal}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "clean exit on {signal}: {status}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the stack");
    }
    for url in &urls {
        assert!(!port_open(url), "{url} still listens after shutdown");
    }
    assert_eq!(processes_mentioning(&pg_data), Vec::<String>::new(), "nothing started by the stack is left");
    assert!(!Path::new(&pg_data).exists(), "the throwaway cluster is deleted");
    assert!(!endpoints_path.exists(), "endpoints.json is removed with the stack");
}

#[test]
fn sigterm_stops_everything_it_started() {
    stops_cleanly_on(Signal::SIGTERM);
}

#[test]
fn ctrl_c_stops_everything_it_started() {
    stops_cleanly_on(Signal::SIGINT);
}
