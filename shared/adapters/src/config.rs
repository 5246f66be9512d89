//! Settings read from the environment (or, locally, from `template.yaml`) once per cold start.

use std::path::PathBuf;
use std::time::Duration;

use runner_core::domain::{
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SESSION_TTL_DAYS, IntakeLimits, RepositoryPolicy, TenantLimits, TokenBucket,
    WorkflowRegistry,
};
use runner_core::usecases::{EpicSettings, ExecutorSettings, FanoutLimits, MemorySettings};
use runner_core::{Error, Result};

use crate::{ClaudeCliConfig, GitCredentials, RunUserRange};

/// Where things are. Every name is an environment variable that `template.yaml` sets.
#[derive(Clone, Debug)]
pub struct Settings {
    pub runs_table: String,
    pub idempotency_table: String,
    pub api_keys_table: String,
    pub runs_queue_url: String,
    pub artifacts_bucket: String,
    pub sessions_table: String,
    pub session_ttl_days: i64,
    pub default_repository_url: Option<String>,
    pub repository_allowlist: Vec<String>,
    /// `REPOSITORY_SCHEMES`: the schemes a requested repository may use; `https` by default.
    pub repository_schemes: Vec<String>,
    pub max_message_bytes: usize,
    /// Where WebSocket clients connect; announced in the `stream` field of a submit response.
    pub websocket_url: Option<String>,
    /// Directory of custom workflows replacing the shipped set.
    pub workflows_dir: Option<String>,
    /// Signs the stream tokens handed out with each submitted run.
    pub stream_token_secret: Option<String>,
    /// Where runs whose time limit is above Lambda's go.
    pub long_runs_queue_url: Option<String>,
    /// The owner of runs submitted through the Genie requests queue.
    pub genie_owner: Option<String>,
    /// Where Genie replies go by default.
    pub genie_results_queue_url: Option<String>,
    /// Other queues Genie requests may name as `reply_to` (a trailing `*` matches a prefix).
    pub genie_reply_allowlist: Vec<String>,
    /// The epics table; `None` where epics are not deployed.
    pub epics_table: Option<String>,
    /// The epic state machine, to start executions.
    pub epic_state_machine_arn: Option<String>,
    /// How long an epic's run step may go without its executor's heartbeat.
    pub epic_step_heartbeat_seconds: u64,
    /// Days a retired (or never accepted) memory entry is kept.
    pub memory_retention_days: i64,
    /// The rate-limit buckets; `None` where the deployment keeps no limits.
    pub rate_limits_table: Option<String>,
    /// Every key's limits unless the key carries its own.
    pub tenant_limits: TenantLimits,
}

impl Settings {
    /// Settings from any variable source (the local stack resolves them from `template.yaml`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let optional = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let required = |name: &str| optional(name).ok_or_else(|| Error::Config(format!("{name} is not set")));
        let list = |name: &str| -> Vec<String> {
            optional(name)
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default()
        };
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
            sessions_table: required("SESSIONS_TABLE")?,
            session_ttl_days: match optional("SESSION_TTL_DAYS") {
                Some(v) => v.parse().map_err(|_| Error::Config(format!("SESSION_TTL_DAYS is not a number: {v}")))?,
                None => DEFAULT_SESSION_TTL_DAYS,
            },
            default_repository_url: optional("DEFAULT_REPOSITORY_URL"),
            repository_allowlist: list("REPOSITORY_ALLOWLIST"),
            repository_schemes: Some(list("REPOSITORY_SCHEMES"))
                .filter(|schemes| !schemes.is_empty())
                .unwrap_or_else(|| vec!["https".to_owned()]),
            max_message_bytes,
            websocket_url: optional("WEBSOCKET_URL"),
            workflows_dir: optional("WORKFLOWS_DIR"),
            stream_token_secret: optional("STREAM_TOKEN_SECRET"),
            long_runs_queue_url: optional("LONG_RUNS_QUEUE_URL"),
            genie_owner: optional("GENIE_OWNER"),
            genie_results_queue_url: optional("GENIE_RESULTS_QUEUE_URL"),
            genie_reply_allowlist: list("GENIE_REPLY_ALLOWLIST"),
            epics_table: optional("EPICS_TABLE"),
            epic_state_machine_arn: optional("EPIC_STATE_MACHINE_ARN"),
            epic_step_heartbeat_seconds: match optional("EPIC_STEP_HEARTBEAT_SECONDS") {
                Some(v) => {
                    v.parse().map_err(|_| Error::Config(format!("EPIC_STEP_HEARTBEAT_SECONDS is not a number: {v}")))?
                }
                None => EpicSettings::default().step_heartbeat_seconds,
            },
            memory_retention_days: match optional("MEMORY_RETENTION_DAYS") {
                Some(v) => {
                    v.parse().map_err(|_| Error::Config(format!("MEMORY_RETENTION_DAYS is not a number: {v}")))?
                }
                None => 30,
            },
            rate_limits_table: optional("RATE_LIMITS_TABLE"),
            tenant_limits: {
                let number = |name: &str, default: u32| -> Result<u32> {
                    optional(name).map_or(Ok(default), |v| {
                        v.parse().map_err(|_| Error::Config(format!("{name} is not a number: {v}")))
                    })
                };
                let d = TenantLimits::default();
                TenantLimits {
                    submits: TokenBucket {
                        burst: number("TENANT_SUBMIT_BURST", d.submits.burst)?,
                        per_minute: number("TENANT_SUBMITS_PER_MINUTE", d.submits.per_minute)?,
                    },
                    max_active_runs: number("TENANT_MAX_ACTIVE_RUNS", d.max_active_runs)?,
                    connects: TokenBucket {
                        burst: number("TENANT_CONNECT_BURST", d.connects.burst)?,
                        per_minute: number("TENANT_CONNECTS_PER_MINUTE", d.connects.per_minute)?,
                    },
                    max_connections: number("TENANT_MAX_CONNECTIONS", d.max_connections)?,
                }
            },
        })
    }

    /// The shipped workflows, or those of `WORKFLOWS_DIR`.
    pub fn workflow_registry(&self) -> Result<WorkflowRegistry> {
        match &self.workflows_dir {
            Some(dir) => crate::files::load_workflows(dir.as_ref()).map_err(|e| Error::Config(e.to_string())),
            None => Ok(WorkflowRegistry::builtin()),
        }
    }

    pub fn intake_limits(&self) -> IntakeLimits {
        IntakeLimits { max_message_bytes: self.max_message_bytes }
    }

    pub fn repository_policy(&self) -> RepositoryPolicy {
        RepositoryPolicy::new(self.default_repository_url.clone(), self.repository_allowlist.clone())
            .with_schemes(self.repository_schemes.clone())
    }
}

/// The executor's settings: where workspaces go, how the CLI is reached, the watchdogs.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Parent of every run's workspace.
    pub workspace_root: PathBuf,
    /// The repository mirrors; `None` clones from the remote every time.
    pub repo_cache_dir: Option<PathBuf>,
    /// How the CLI is started.
    pub cli: ClaudeCliConfig,
    /// The use case's own settings (lease, watchdogs, secrets).
    pub settings: ExecutorSettings,
    /// The author of the runner's commits.
    pub author_name: String,
    /// Their email.
    pub author_email: String,
    /// `.env` contents every workspace gets.
    pub workspace_dotenv: Option<String>,
    /// `GIT_CREDENTIALS`: credential-store lines for private remotes.
    pub git_credentials: GitCredentials,
    /// Postgres connections (frame writes); 2 suits Lambda's one run per container.
    pub pg_pool_size: u32,
    /// Both set: frames are also streamed live to WebSocket subscribers.
    pub connections_table: Option<String>,
    /// Where `PostToConnection` goes.
    pub management_url: Option<String>,
    /// Per-subscriber queue bounds and the idle heartbeat of the live fan-out.
    pub fanout: FanoutLimits,
}

impl ExecutorConfig {
    /// From any variable source; every default is `ExecutorSettings::default()`'s or the CLI's.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let optional = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let number = |name: &str, default: u64| -> Result<u64> {
            match optional(name) {
                Some(v) => v.trim().parse().map_err(|_| Error::Config(format!("{name} is not a number: {v}"))),
                None => Ok(default),
            }
        };
        let seconds = |name: &str, default: Duration| number(name, default.as_secs()).map(Duration::from_secs);
        let defaults = ExecutorSettings::default();
        let cli_defaults = ClaudeCliConfig::default();
        let fanout_defaults = FanoutLimits::default();
        let settings = ExecutorSettings {
            executor_id: optional("EXECUTOR_ID").unwrap_or(defaults.executor_id),
            lease: seconds("LEASE_SECONDS", defaults.lease)?,
            heartbeat: seconds("HEARTBEAT_SECONDS", defaults.heartbeat)?,
            idle_timeout: seconds("IDLE_TIMEOUT_SECONDS", defaults.idle_timeout)?,
            max_run_time: seconds("MAX_RUN_SECONDS", defaults.max_run_time)?,
            stop_grace: seconds("STOP_GRACE_SECONDS", defaults.stop_grace)?,
            finish_budget: seconds("FINISH_BUDGET_SECONDS", defaults.finish_budget)?,
            secrets: optional("ANTHROPIC_API_KEY").into_iter().collect(),
            // Days, like `Settings::session_ttl_days` reads it.
            session_ttl: Duration::from_secs(
                number("SESSION_TTL_DAYS", defaults.session_ttl.as_secs() / 86_400)? * 86_400,
            ),
            memory: MemorySettings {
                auto_accept: optional("MEMORY_AUTO_ACCEPT")
                    .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                    .unwrap_or_default(),
                ..defaults.memory
            },
        };
        if settings.heartbeat >= settings.lease {
            return Err(Error::Config("HEARTBEAT_SECONDS must be shorter than LEASE_SECONDS".into()));
        }
        let lease = settings.lease;
        Ok(Self {
            workspace_root: optional("WORKSPACE_ROOT").unwrap_or("/tmp/claude-runner/work".into()).into(),
            repo_cache_dir: optional("REPO_CACHE_DIR").map(Into::into),
            cli: ClaudeCliConfig {
                bin: optional("CLAUDE_BIN").map(Into::into).unwrap_or(cli_defaults.bin),
                base_url: optional("ANTHROPIC_BASE_URL"),
                api_key: optional("ANTHROPIC_API_KEY"),
                max_frame_bytes: number("MAX_FRAME_BYTES", cli_defaults.max_frame_bytes as u64)? as usize,
                max_processes: number("RUN_MAX_PROCESSES", cli_defaults.max_processes)?,
                run_users: RunUserRange::from_setting(
                    optional("RUN_USERS").as_deref(),
                    nix::unistd::geteuid().is_root(),
                )?,
                ..cli_defaults
            },
            settings,
            author_name: optional("GIT_AUTHOR_NAME").unwrap_or("claude-runner".into()),
            author_email: optional("GIT_AUTHOR_EMAIL").unwrap_or("claude-runner@localhost".into()),
            workspace_dotenv: optional("WORKSPACE_DOTENV"),
            git_credentials: GitCredentials::parse(&optional("GIT_CREDENTIALS").unwrap_or_default())?,
            pg_pool_size: number("PG_POOL_SIZE", 2)? as u32,
            connections_table: optional("CONNECTIONS_TABLE"),
            management_url: optional("WEBSOCKET_MANAGEMENT_URL"),
            fanout: FanoutLimits {
                queue_bytes: number("FANOUT_QUEUE_BYTES", fanout_defaults.queue_bytes as u64)? as usize,
                queue_frames: number("FANOUT_QUEUE_FRAMES", fanout_defaults.queue_frames as u64)? as usize,
                heartbeat: seconds("STREAM_HEARTBEAT_SECONDS", fanout_defaults.heartbeat)?,
                recent_bytes: number("FANOUT_RECENT_BYTES", fanout_defaults.recent_bytes as u64)? as usize,
                // Held as long as a run's lease: the executor that lost one has lost the other.
                hold: lease,
            },
        })
    }
}

/// The WebSocket side: connections table, management endpoint, token secret.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub connections_table: String,
    /// `https://{api}.execute-api.{region}.amazonaws.com/{stage}`: where `PostToConnection` goes.
    pub management_url: String,
    pub token_secret: String,
}

impl StreamSettings {
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let required = |name: &str| {
            var(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| Error::Config(format!("{name} is not set")))
        };
        let token_secret = required("STREAM_TOKEN_SECRET")?;
        if token_secret.len() < 32 {
            return Err(Error::Config("STREAM_TOKEN_SECRET must be at least 32 characters".into()));
        }
        Ok(Self {
            connections_table: required("CONNECTIONS_TABLE")?,
            management_url: required("WEBSOCKET_MANAGEMENT_URL")?,
            token_secret,
        })
    }
}
