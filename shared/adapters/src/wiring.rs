//! The one place that builds adapters from settings and puts the use cases together. Every
//! function's `build` and the local stack wire through a `Wiring`, so each store, queue and
//! service is configured the same way wherever it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_config::SdkConfig;
use sqlx::PgPool;

use runner_core::domain::{Owner, ReplyPolicy, StreamTokens, WorkflowRegistry};
use runner_core::ports::{
    ApiKeyStore, BranchMover, ConnectionGateway, ConnectionStore, EpicEngine, FrameSink, MemoryStore, Metrics,
    ObjectStore, RunQueue, RunStore, SessionStore,
};
use runner_core::usecases::{
    Authenticator, EpicService, EpicSettings, ExecutorPorts, GenieService, Janitor, Limiter, MemoryService,
    OpenConnections, RunExecutor, RunService, SessionService, StreamAccess, StreamService, WebSocketFanout,
};
use runner_core::{Error, Result};

use crate::config::{ExecutorConfig, Settings, StreamSettings};
use crate::files::{NdjsonFrameLogs, StoredTranscripts};
use crate::metrics::EmbeddedMetrics;
use crate::{
    ApiGatewayConnections, ClaudeCli, DynamoApiKeyStore, DynamoBucketStore, DynamoConnectionStore, DynamoEpicStore,
    DynamoRunStore, DynamoSessionStore, GitWorkspaces, PgFrameStore, PgMemoryStore, PgRunProjection, RunUsers,
    S3ObjectStore, SqsReplies, SqsRunQueue, StepFunctionsEngine, WorkspaceConfig, aws, postgres,
};

type Vars = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// An AWS configuration and a source of settings (environment variables).
#[derive(Clone)]
pub struct Wiring {
    sdk: SdkConfig,
    vars: Vars,
    /// Replaces the SQS runs queue (the local stack wraps it to count what is sent).
    run_queue: Option<Arc<dyn RunQueue>>,
    /// Where measurements go: embedded-metric-format lines on stdout unless replaced.
    metrics: Arc<dyn Metrics>,
}

impl Wiring {
    /// The process environment and the default AWS configuration: how a function starts on
    /// Lambda. Secrets named by `*_SECRET_ARN` variables are read from Secrets Manager, once.
    pub async fn from_env() -> Result<Self> {
        let sdk = aws::load_config().await;
        let vars = aws::secrets::resolve(&sdk, std::env::vars().collect()).await?;
        Ok(Self::new(sdk, vars))
    }

    /// These variables (the local stack resolves a function's from `template.yaml`) and this AWS
    /// configuration.
    pub fn new(sdk: SdkConfig, vars: BTreeMap<String, String>) -> Self {
        let vars: Vars = Arc::new(move |name| vars.get(name).cloned());
        Self { sdk, vars, run_queue: None, metrics: Arc::new(EmbeddedMetrics::stdout()) }
    }

    /// The same wiring with `queue` as the runs queue: a decorator around `sqs_run_queue`.
    pub fn with_run_queue(self, queue: Arc<dyn RunQueue>) -> Self {
        Self { run_queue: Some(queue), ..self }
    }

    /// The same wiring recording measurements into `metrics` (the local stack's `/metrics`).
    pub fn with_metrics(self, metrics: Arc<dyn Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// Where measurements go.
    pub fn metrics(&self) -> Arc<dyn Metrics> {
        self.metrics.clone()
    }

    /// The SQS runs queue itself, whatever `with_run_queue` said.
    pub fn sqs_run_queue(&self, settings: &Settings) -> Arc<dyn RunQueue> {
        Arc::new(SqsRunQueue::new(aws::sqs(&self.sdk), &settings.runs_queue_url, settings.long_runs_queue_url.clone()))
    }

    /// An SQS client (the long-runs worker polls its queue with it).
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws::sqs(&self.sdk)
    }

    /// The deployment's settings (tables, queues, policies).
    pub fn settings(&self) -> Result<Settings> {
        Settings::from_vars(|name| (self.vars)(name))
    }

    /// The executor's settings.
    pub fn executor_config(&self) -> Result<ExecutorConfig> {
        ExecutorConfig::from_vars(|name| (self.vars)(name))
    }

    /// The WebSocket side's settings.
    pub fn stream_settings(&self) -> Result<StreamSettings> {
        StreamSettings::from_vars(|name| (self.vars)(name))
    }

    /// A Postgres pool on `DATABASE_URL` (migrations are the deployment's job, not a function's);
    /// through the stack's RDS Proxy, authenticated with IAM.
    pub async fn postgres(&self, max_connections: u32) -> Result<PgPool> {
        let url = (self.vars)("DATABASE_URL")
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| Error::Config("DATABASE_URL is not set".into()))?;
        postgres::connect_with_iam(&url, max_connections, &self.sdk).await
    }

    /// The runs table.
    pub fn run_store(&self, settings: &Settings) -> Arc<dyn RunStore> {
        Arc::new(DynamoRunStore::new(aws::dynamodb(&self.sdk), &settings.runs_table, &settings.idempotency_table))
    }

    /// The sessions table.
    pub fn session_store(&self, settings: &Settings) -> Arc<dyn SessionStore> {
        Arc::new(DynamoSessionStore::new(aws::dynamodb(&self.sdk), &settings.sessions_table))
    }

    /// The runs queue.
    pub fn run_queue(&self, settings: &Settings) -> Arc<dyn RunQueue> {
        self.run_queue.clone().unwrap_or_else(|| self.sqs_run_queue(settings))
    }

    /// The artifact bucket.
    pub fn objects(&self, settings: &Settings) -> Arc<dyn ObjectStore> {
        Arc::new(S3ObjectStore::new(aws::s3(&self.sdk), &settings.artifacts_bucket))
    }

    /// The connections table.
    pub fn connections(&self, table: &str) -> Arc<dyn ConnectionStore> {
        Arc::new(DynamoConnectionStore::new(aws::dynamodb(&self.sdk), table))
    }

    /// API Gateway's management API at `management_url`.
    pub fn gateway(&self, management_url: &str) -> Arc<dyn ConnectionGateway> {
        Arc::new(ApiGatewayConnections::new(&self.sdk, management_url))
    }

    /// The API keys table.
    pub fn api_keys(&self, settings: &Settings) -> Arc<dyn ApiKeyStore> {
        Arc::new(DynamoApiKeyStore::new(aws::dynamodb(&self.sdk), &settings.api_keys_table))
    }

    /// API keys, looked up in the keys table.
    pub fn authenticator(&self, settings: &Settings) -> Authenticator {
        Authenticator::new(self.api_keys(settings))
    }

    /// Tenants' limits, where the deployment keeps them (`RATE_LIMITS_TABLE`).
    pub fn limiter(&self, settings: &Settings) -> Option<Arc<Limiter>> {
        let table = settings.rate_limits_table.as_ref()?;
        let buckets = Arc::new(DynamoBucketStore::new(aws::dynamodb(&self.sdk), table));
        let limiter = Limiter::new(buckets, self.run_store(settings), settings.tenant_limits);
        Some(Arc::new(limiter.with_metrics(self.metrics())))
    }

    /// Run intake and queries.
    pub fn run_service(&self, settings: &Settings, workflows: Arc<WorkflowRegistry>) -> RunService {
        let service = RunService::new(
            self.run_store(settings),
            self.session_store(settings),
            self.run_queue(settings),
            self.objects(settings),
            workflows,
            settings.intake_limits(),
            settings.repository_policy(),
        )
        .with_metrics(self.metrics());
        match self.limiter(settings) {
            Some(limiter) => service.with_limiter(limiter),
            None => service,
        }
    }

    /// The sessions API.
    pub fn session_service(&self, settings: &Settings, workflows: Arc<WorkflowRegistry>) -> SessionService {
        SessionService::new(
            self.session_store(settings),
            self.objects(settings),
            workflows,
            settings.repository_policy(),
            chrono::Duration::days(settings.session_ttl_days),
        )
    }

    /// Genie's queue interface: requests submitted as `GENIE_OWNER`, replies where
    /// `GENIE_RESULTS_QUEUE_URL` and `GENIE_REPLY_ALLOWLIST` allow.
    pub fn genie_service(&self) -> Result<GenieService> {
        let settings = self.settings()?;
        let workflows = Arc::new(settings.workflow_registry()?);
        let unset = |name: &str| Error::Config(format!("{name} is not set"));
        let policy = ReplyPolicy {
            default_queue: settings.genie_results_queue_url.clone().ok_or_else(|| unset("GENIE_RESULTS_QUEUE_URL"))?,
            allowlist: settings.genie_reply_allowlist.clone(),
        };
        let owner = Owner::new(settings.genie_owner.clone().ok_or_else(|| unset("GENIE_OWNER"))?);
        let stream = match (&settings.websocket_url, &settings.stream_token_secret) {
            (Some(url), Some(secret)) => {
                Some(StreamAccess { url: url.clone(), tokens: StreamTokens::new(secret.as_bytes().to_vec()) })
            }
            _ => None,
        };
        let genie = GenieService::new(
            Arc::new(self.run_service(&settings, workflows)),
            Arc::new(SqsReplies::new(aws::sqs(&self.sdk))),
            policy,
            owner,
            stream,
        );
        Ok(match settings.epics_table {
            Some(_) => genie.with_epics(Arc::new(self.epic_service(false)?)),
            None => genie,
        })
    }

    /// Checkouts with the `git` binary, through the mirror cache when one is configured.
    fn workspaces(config: &ExecutorConfig, objects: &Arc<dyn ObjectStore>) -> GitWorkspaces {
        GitWorkspaces::new(
            WorkspaceConfig {
                root: config.workspace_root.clone(),
                cache_dir: config.repo_cache_dir.clone(),
                author_name: config.author_name.clone(),
                author_email: config.author_email.clone(),
                dotenv: config.workspace_dotenv.clone(),
                run_users: config.cli.run_users.is_some(),
                credentials: config.git_credentials.clone(),
            },
            Some(objects.clone()),
        )
    }

    /// The epic state machine's engine (Step Functions): executions and task callbacks.
    pub fn epic_engine(&self, settings: &Settings) -> Arc<dyn EpicEngine> {
        let client = aws_sdk_sfn::Client::new(&self.sdk);
        Arc::new(StepFunctionsEngine::new(client, settings.epic_state_machine_arn.clone()))
    }

    /// Epics: the API's side, and (`with_git`) the epics function's, which moves branches back.
    pub fn epic_service(&self, with_git: bool) -> Result<EpicService> {
        let settings = self.settings()?;
        let table = settings.epics_table.clone().ok_or_else(|| Error::Config("EPICS_TABLE is not set".into()))?;
        let workflows = Arc::new(settings.workflow_registry()?);
        let branches: Option<Arc<dyn BranchMover>> = if with_git {
            let config = self.executor_config()?;
            Some(Arc::new(Self::workspaces(&config, &self.objects(&settings))))
        } else {
            None
        };
        let epic_settings =
            EpicSettings { step_heartbeat_seconds: settings.epic_step_heartbeat_seconds, ..EpicSettings::default() };
        Ok(EpicService::new(
            Arc::new(DynamoEpicStore::new(aws::dynamodb(&self.sdk), table)),
            self.epic_engine(&settings),
            Arc::new(self.run_service(&settings, workflows)),
            self.run_store(&settings),
            branches,
            Some(Arc::new(SqsReplies::new(aws::sqs(&self.sdk)))),
            epic_settings,
        ))
    }

    /// The executor: workspaces, the CLI, the frame sinks (Postgres, then — when the WebSocket
    /// API is configured — the live fan-out).
    pub async fn run_executor(&self) -> Result<RunExecutor> {
        let settings = self.settings()?;
        let config = self.executor_config()?;
        if config.cli.run_users.is_some() {
            // Run users must reach the CLI and their workspaces; better a clear error at start
            // than every run failing on a permission.
            let bin = find_on_path(&config.cli.bin);
            let mut paths = vec![bin.as_path()];
            paths.extend(config.workspace_root.parent());
            paths.extend(config.repo_cache_dir.as_deref().and_then(Path::parent));
            RunUsers::check_reachable(&paths)?;
        }
        let pool = self.postgres(config.pg_pool_size).await?;
        let objects = self.objects(&settings);
        let workspaces = Self::workspaces(&config, &objects);
        let memory: Arc<dyn MemoryStore> = Arc::new(PgMemoryStore::new(pool.clone()));
        let frames = Arc::new(PgFrameStore::new(pool));
        let mut sinks: Vec<Arc<dyn FrameSink>> = vec![frames.clone()];
        // Live: subscribers get each frame as it is read, before the store has it; what they
        // missed comes from the fan-out's memory of the run, or the store for older frames.
        if let (Some(table), Some(management_url)) = (&config.connections_table, &config.management_url) {
            let (connections, gateway) = (self.connections(table), self.gateway(management_url));
            let fanout = WebSocketFanout::new(connections, gateway, frames, config.fanout).with_metrics(self.metrics());
            sinks.push(Arc::new(fanout));
        }
        let ports = ExecutorPorts {
            store: self.run_store(&settings),
            workflows: Arc::new(settings.workflow_registry()?),
            workspaces: Arc::new(workspaces),
            cli: Arc::new(ClaudeCli::new(config.cli.clone())),
            transcripts: Arc::new(StoredTranscripts::new(objects.clone())),
            frame_logs: Arc::new(NdjsonFrameLogs),
            objects,
            sessions: self.session_store(&settings),
            sinks,
            epics: self.epic_engine(&settings),
            memory: Some(memory),
            metrics: self.metrics(),
        };
        Ok(RunExecutor::new(ports, config.settings))
    }

    /// The WebSocket API's use cases (one Postgres connection: replays only).
    pub async fn stream_service(&self) -> Result<StreamService> {
        let settings = self.settings()?;
        let stream = self.stream_settings()?;
        let pool = self.postgres(1).await?;
        Ok(StreamService::new(
            self.run_store(&settings),
            self.connections(&stream.connections_table),
            self.gateway(&stream.management_url),
            Arc::new(PgFrameStore::new(pool)),
            StreamTokens::new(stream.token_secret.as_bytes().to_vec()),
        )
        .with_limiter(self.limiter(&settings))
        .with_keys(self.api_keys(&settings)))
    }

    /// The janitor, handling at most `batch` items of each kind per sweep; where the WebSocket
    /// API is deployed (`CONNECTIONS_TABLE`, `WEBSOCKET_MANAGEMENT_URL`), it also closes the
    /// connections of revoked keys.
    pub fn janitor(&self, batch: usize) -> Result<Janitor> {
        let settings = self.settings()?;
        let janitor = Janitor::new(
            self.run_store(&settings),
            self.session_store(&settings),
            self.objects(&settings),
            self.run_queue(&settings),
            batch,
        );
        let set = |name: &str| (self.vars)(name).filter(|v| !v.trim().is_empty());
        Ok(match (set("CONNECTIONS_TABLE"), set("WEBSOCKET_MANAGEMENT_URL")) {
            (Some(table), Some(management_url)) => janitor.with_connections(OpenConnections {
                connections: self.connections(&table),
                gateway: self.gateway(&management_url),
                keys: self.api_keys(&settings),
            }),
            _ => janitor,
        })
    }

    /// `janitor`, also removing memory past its retention when the function has a database.
    pub async fn janitor_with_memory(&self, batch: usize) -> Result<Janitor> {
        let janitor = self.janitor(batch)?;
        let Some(store) = self.memory_store(1).await? else { return Ok(janitor) };
        let retention = chrono::Duration::days(self.settings()?.memory_retention_days);
        Ok(janitor.with_memory(store, retention))
    }

    /// The memory store on a pool of `pool_size`, when the function has a database.
    pub async fn memory_store(&self, pool_size: u32) -> Result<Option<Arc<dyn MemoryStore>>> {
        if (self.vars)("DATABASE_URL").is_none_or(|v| v.trim().is_empty()) {
            return Ok(None);
        }
        let size = (self.vars)("PG_POOL_SIZE").and_then(|v| v.parse().ok()).unwrap_or(pool_size);
        Ok(Some(Arc::new(PgMemoryStore::new(self.postgres(size).await?))))
    }

    /// The memory API, when the function has a database.
    pub async fn memory_service(&self) -> Result<Option<MemoryService>> {
        let settings = self.settings()?;
        Ok(self.memory_store(2).await?.map(|store| MemoryService::new(store, settings.repository_policy())))
    }

    /// The read model in Postgres, on one connection (a stream shard is processed by one
    /// invocation at a time).
    pub async fn projection(&self) -> Result<PgRunProjection> {
        Ok(PgRunProjection::new(self.postgres(1).await?))
    }
}

/// `bin` as the shell would find it: a name without a slash is looked up on `PATH`.
fn find_on_path(bin: &Path) -> PathBuf {
    if bin.components().count() > 1 {
        return bin.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(bin))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| bin.to_path_buf())
}
