//! A throwaway Postgres cluster: `initdb` into a fresh directory, `postgres` in the foreground as
//! our child on a free port. PostgreSQL refuses to run as root, so as root it runs as `postgres`.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{Uid, User, chown};

use crate::LocalError;
use crate::process::{OwnedProcess, free_port, wait_until};

pub struct PgCluster {
    pub url: String,
    pub port: u16,
    data_dir: PathBuf,
    process: OwnedProcess,
    bin: PathBuf,
    /// The `postgres` user, when this process is root.
    run_as: Option<User>,
}

/// The server binaries: `$PG_BIN`, else `pg_config --bindir`, else the newest under /usr/lib/postgresql.
fn bin_dir() -> Result<PathBuf, LocalError> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    if let Some(dir) = candidates.into_iter().rev().find(|d| d.join("initdb").exists()) {
        return Ok(dir);
    }
    let out = std::process::Command::new("pg_config").arg("--bindir").output();
    match out {
        Ok(out) if out.status.success() => Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())),
        _ => Err(LocalError::Missing("PostgreSQL server binaries (initdb, postgres); set PG_BIN".into())),
    }
}

impl PgCluster {
    /// Creates a cluster in a fresh directory under the system temp dir: the `postgres` user
    /// must be able to reach it, which a repository under /root or a 0700 temp dir would not allow.
    pub async fn start() -> Result<Self, LocalError> {
        let bin = bin_dir()?;
        let port = free_port()?;
        let data_dir = tempfile::Builder::new()
            .prefix("claude-runner-pg-")
            .tempdir()
            .map_err(LocalError::io("create the Postgres data directory"))?
            .keep();
        let run_as = if Uid::effective().is_root() {
            let user = User::from_name("postgres").ok().flatten().ok_or_else(|| {
                LocalError::Missing("a `postgres` user to run PostgreSQL as (it refuses root)".into())
            })?;
            chown(&data_dir, Some(user.uid), Some(user.gid))
                .map_err(|e| LocalError::Io { what: "hand the data directory to postgres", detail: e.to_string() })?;
            Some(user)
        } else {
            None
        };
        let mut initdb = std::process::Command::new(bin.join("initdb"));
        if let Some(user) = &run_as {
            initdb.uid(user.uid.as_raw()).gid(user.gid.as_raw()).env("HOME", &data_dir);
        }
        initdb
            .args(["-D"])
            .arg(&data_dir)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = tokio::process::Command::from(initdb).output().await.map_err(LocalError::io("run initdb"))?;
        if !out.status.success() {
            return Err(LocalError::Spawn {
                name: "initdb",
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }

        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let process = Self::serve(&bin, &data_dir, port, run_as.as_ref()).await?;
        tracing::info!(port, "postgres ready");
        Ok(Self { url, port, data_dir, process, bin, run_as })
    }

    /// Starts the server on `data_dir` and waits until it accepts connections.
    async fn serve(
        bin: &std::path::Path,
        data_dir: &std::path::Path,
        port: u16,
        run_as: Option<&User>,
    ) -> Result<OwnedProcess, LocalError> {
        let mut postgres = std::process::Command::new(bin.join("postgres"));
        if let Some(user) = run_as {
            postgres.uid(user.uid.as_raw()).gid(user.gid.as_raw()).env("HOME", data_dir);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .map_err(LocalError::io("open server.log"))?;
        postgres
            .arg("-D")
            .arg(data_dir)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"])
            .arg("-k")
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(log);
        // SIGINT is Postgres' "fast" shutdown: it does not wait for clients to disconnect.
        let mut process = OwnedProcess::spawn("postgres", postgres, Signal::SIGINT)?;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        wait_until("postgres to accept connections", Duration::from_secs(30), || {
            let url = url.clone();
            async move { <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.is_ok() }
        })
        .await?;
        process.check_alive()?;
        Ok(process)
    }

    /// Stops the server (fast shutdown: every connection is cut), keeps it down for `outage`,
    /// and starts it again on the same data and port: an outage as a failover would cause one.
    pub async fn outage(&mut self, outage: Duration) -> Result<(), LocalError> {
        let down = tokio::time::Instant::now();
        self.process.stop_in_place(Duration::from_secs(10)).await;
        tokio::time::sleep_until(down + outage).await;
        self.process = Self::serve(&self.bin, &self.data_dir, self.port, self.run_as.as_ref()).await?;
        Ok(())
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub async fn stop(self) {
        self.process.stop(Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
