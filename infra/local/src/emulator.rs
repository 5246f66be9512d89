//! The AWS emulator: moto server (SQS, DynamoDB + Streams, S3) from the repo's venv.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::LocalError;
use crate::process::{OwnedProcess, free_port, wait_until};

pub struct Emulator {
    pub endpoint: String,
    pub port: u16,
    process: OwnedProcess,
}

impl Emulator {
    pub async fn start(moto_server: &Path, port: Option<u16>) -> Result<Self, LocalError> {
        if !moto_server.exists() {
            return Err(LocalError::Missing(format!(
                "{} not found; `cargo xtask up` installs it into the repo's venv",
                moto_server.display()
            )));
        }
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut command = std::process::Command::new(moto_server);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut process = OwnedProcess::spawn("moto_server", command, Signal::SIGTERM)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let probe_url = format!("{endpoint}/moto-api/");
        let client = reqwest::Client::new();
        wait_until("moto server to answer", Duration::from_secs(30), || {
            let (client, url) = (client.clone(), probe_url.clone());
            async move { client.get(url).send().await.is_ok() }
        })
        .await?;
        process.check_alive()?;
        tracing::info!(%endpoint, "AWS emulator (moto) ready");
        Ok(Self { endpoint, port, process })
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub async fn stop(self) {
        self.process.stop(Duration::from_secs(5)).await;
    }
}
