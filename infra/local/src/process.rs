//! Child processes that the local stack owns: each in its own process group, stopped with a
//! signal, then SIGKILL after a grace period, so nothing outlives the stack.

use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::LocalError;

pub struct OwnedProcess {
    name: &'static str,
    child: Child,
    stop_signal: Signal,
}

impl OwnedProcess {
    /// Spawns `command` as the leader of a new process group. `kill_on_drop` is the backstop if
    /// `stop` is never reached (a panic).
    pub fn spawn(
        name: &'static str,
        mut command: std::process::Command,
        stop_signal: Signal,
    ) -> Result<Self, LocalError> {
        command.process_group(0);
        let child = Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LocalError::Spawn { name, detail: e.to_string() })?;
        Ok(Self { name, child, stop_signal })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails if the process has already exited (it died during start-up).
    pub fn check_alive(&mut self) -> Result<(), LocalError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                Err(LocalError::Spawn { name: self.name, detail: format!("exited early with {status}") })
            }
            Err(e) => Err(LocalError::Spawn { name: self.name, detail: e.to_string() }),
        }
    }

    /// Signals the whole group, waits up to `grace`, then kills the group.
    pub async fn stop(mut self, grace: Duration) {
        self.stop_in_place(grace).await;
    }

    /// `stop`, leaving the handle (to be replaced by a new process).
    pub async fn stop_in_place(&mut self, grace: Duration) {
        let Some(pid) = self.child.id() else { return };
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, self.stop_signal);
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            tracing::warn!(process = self.name, "did not stop in time; killing");
            let _ = killpg(group, Signal::SIGKILL);
            let _ = self.child.wait().await;
        }
        // Stragglers in the group (workers that outlived their leader).
        let _ = killpg(group, Signal::SIGKILL);
        tracing::info!(process = self.name, pid, "stopped");
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16, LocalError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(LocalError::io("bind a free port"))?;
    Ok(listener.local_addr().map_err(LocalError::io("read a free port"))?.port())
}

/// Polls `probe` every 100 ms until it succeeds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &'static str, timeout: Duration, mut probe: F) -> Result<(), LocalError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if probe().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(LocalError::Timeout { what, after: timeout })
}
