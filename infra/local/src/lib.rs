//! The local stack: the AWS emulator, a throwaway Postgres, the resources
//! of `template.yaml`, and every function's handler served in process, as AWS would invoke it.
//!
//! The binary (`claude-runner-local`) starts everything for a person; the end-to-end tests use
//! [`LocalStack`] directly against an emulator and a Postgres server they share.

mod counted_queue;
mod emulator;
pub mod metrics;
pub mod model;
mod postgres;
mod process;
mod provision;
mod stack;
mod streams;
mod template;
pub mod websocket;

use std::time::Duration;

pub use emulator::Emulator;
pub use postgres::PgCluster;
pub use stack::{ExecutorOptions, LocalStack, StackOptions, create_database, local_aws_config, split_aws_config};
pub use template::Physical;

/// A temporary folder that per-run users may pass through (`tempfile` makes it 0700): as root,
/// the executor runs each run's CLI as a user of its own, who must reach its workspace and CLI.
pub fn open_tempdir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
    Ok(dir)
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("could not start {name}: {detail}")]
    Spawn { name: &'static str, detail: String },
    #[error("{0} is missing")]
    Missing(String),
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: &'static str, after: Duration },
    #[error("{what}: {detail}")]
    Io { what: &'static str, detail: String },
    #[error("template.yaml: {0}")]
    Template(String),
    #[error("provisioning ({what}): {detail}")]
    Provision { what: &'static str, detail: String },
    #[error(transparent)]
    Service(#[from] runner_core::Error),
}

impl LocalError {
    pub(crate) fn io(what: &'static str) -> impl Fn(std::io::Error) -> Self {
        move |e| Self::Io { what, detail: e.to_string() }
    }
}
