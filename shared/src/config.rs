//! Settings read from the environment once per cold start.

use std::env;

use crate::domain::{DEFAULT_MAX_MESSAGE_BYTES, IntakeLimits, RepositoryPolicy};
use crate::{Error, Result};

/// Where things are. Every name is an environment variable that `template.yaml` sets.
#[derive(Clone, Debug)]
pub struct Settings {
    pub runs_table: String,
    pub idempotency_table: String,
    pub api_keys_table: String,
    pub runs_queue_url: String,
    pub artifacts_bucket: String,
    pub default_repository_url: Option<String>,
    pub repository_allowlist: Vec<String>,
    pub max_message_bytes: usize,
    /// Where WebSocket clients connect; announced in the `stream` field of a submit response.
    pub websocket_url: Option<String>,
    /// Directory of custom workflows replacing the shipped set.
    pub workflows_dir: Option<String>,
}

fn required(name: &str) -> Result<String> {
    env::var(name).map_err(|_| Error::Config(format!("{name} is not set")))
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| env::var(name).ok())
    }

    /// Settings from any variable source (the local stack resolves them from `template.yaml`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let optional = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let required = |name: &str| optional(name).ok_or_else(|| Error::Config(format!("{name} is not set")));
        let max_message_bytes = match optional("MAX_MESSAGE_BYTES") {
            Some(v) => v.parse().map_err(|_| Error::Config(format!("MAX_MESSAGE_BYTES is not a number: {v}")))?,
            None => DEFAULT_MAX_MESSAGE_BYTES,
        };
        Ok(Self {
            runs_table: required("RUNS_TABLE")?,
            idempotency_table: required("IDEMPOTENCY_TABLE")?,
            api_keys_table: required("API_KEYS_TABLE")?,
            runs_queue_url: required("RUNS_QUEUE_URL")?,
            artifacts_bucket: required("ARTIFACTS_BUCKET")?,
            default_repository_url: optional("DEFAULT_REPOSITORY_URL"),
            repository_allowlist: optional("REPOSITORY_ALLOWLIST")
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
            max_message_bytes,
            websocket_url: optional("WEBSOCKET_URL"),
            workflows_dir: optional("WORKFLOWS_DIR"),
        })
    }

    pub fn intake_limits(&self) -> IntakeLimits {
        IntakeLimits { max_message_bytes: self.max_message_bytes }
    }

    pub fn repository_policy(&self) -> RepositoryPolicy {
        RepositoryPolicy::new(self.default_repository_url.clone(), self.repository_allowlist.clone())
    }
}

/// `DATABASE_URL`, required by the functions that touch Postgres.
pub fn database_url() -> Result<String> {
    required("DATABASE_URL")
}
