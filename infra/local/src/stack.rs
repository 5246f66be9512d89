//! One running stack: provisioned resources, the HTTP API on a local port, and the projector
//! fed from the runs table's stream; the epic state machine executed by the emulator.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};
use runner_adapters::config::Settings;
use runner_adapters::{Wiring, postgres};
use runner_core::domain::{ApiKey, Owner};
use runner_core::usecases::Authenticator;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::LocalError;
use crate::counted_queue::CountedQueue;
use crate::metrics::LocalMetrics;
use crate::provision::provision;
use crate::streams::{StreamHandler, feed_stream};
use crate::template::{Physical, Resolver, Template};
use runner_adapters::aws::queue_poller::{QueueHandler, poll_queue};

/// The long-runs worker's bound, as its task definition sets it.
const LONG_RUN_LIMIT_SECONDS: u64 = 7200;

pub struct StackOptions {
    pub aws_endpoint: String,
    /// Services (by SDK service id: `SQS`, `S3`, `SFN`, …) served by another emulator than
    /// `aws_endpoint`, and its URL (LocalStack, for `cargo xtask test --localstack`).
    pub aws_services: BTreeMap<String, String>,
    /// A database that exists; migrations are applied to it.
    pub database_url: String,
    /// Prefix of every resource name, so stacks can share one emulator.
    pub stack_name: String,
    pub http_port: u16,
    /// The WebSocket API and its management endpoint (0 picks a free port).
    pub ws_port: u16,
    pub template: PathBuf,
    /// Template parameter overrides (DefaultRepositoryUrl, RepositoryAllowlist, …).
    pub parameters: HashMap<String, String>,
    /// Messages each WebSocket client may have waiting before the management API answers 429.
    pub ws_client_buffer: usize,
    /// How often the janitor sweeps; `None` leaves it to whoever calls `LocalStack::janitor`.
    pub janitor_every: Option<Duration>,
    /// Run the executor on the runs queue, with these variables over the template's
    /// (`CLAUDE_BIN`, `ANTHROPIC_BASE_URL`, `WORKSPACE_ROOT`, watchdog settings, …).
    pub executor: Option<ExecutorOptions>,
}

#[derive(Clone, Debug, Default)]
pub struct ExecutorOptions {
    pub environment: HashMap<String, String>,
    /// Runs executed at once (Lambda's concurrency; FIFO groups still run one at a time).
    pub concurrency: usize,
}

pub struct LocalStack {
    /// Where WebSocket clients connect (`ws_url` in endpoints.json).
    pub ws_url: String,
    pub http_url: String,
    pub http_addr: SocketAddr,
    /// A key for the owner `local`.
    pub api_key: String,
    pub sdk: SdkConfig,
    /// The emulator of every service, and the services served by another.
    aws_endpoint: String,
    aws_services: BTreeMap<String, String>,
    pub database_url: String,
    pub pool: PgPool,
    pub settings: Settings,
    pub resources: HashMap<String, Physical>,
    /// The executor function's environment as the template resolves it locally.
    executor_env: BTreeMap<String, String>,
    /// The janitor function's wiring, for sweeps on demand.
    janitor: Wiring,
    run_queue: Arc<CountedQueue>,
    ws_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    ws_gateway: crate::websocket::Gateway,
    auth: Authenticator,
    /// What every function of the stack measured (`/metrics` on the HTTP port).
    metrics: Arc<LocalMetrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// An SDK config aimed at the emulator with dummy credentials, independent of the environment.
pub async fn local_aws_config(endpoint: &str) -> SdkConfig {
    split_aws_config(endpoint, &BTreeMap::new()).await
}

/// `local_aws_config`, with the services of `by_service` (SDK service ids) on their own emulator.
pub async fn split_aws_config(endpoint: &str, by_service: &BTreeMap<String, String>) -> SdkConfig {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .timeout_config(runner_adapters::aws::timeouts())
        .credentials_provider(Credentials::new("local", "local", None, None, "claude-runner-local"))
        .load()
        .await;
    // Per-service endpoints, the way `AWS_ENDPOINT_URL_<SERVICE>` sets them (an endpoint set in
    // code would win over them), without touching the process environment.
    let endpoints = ServiceEndpoints { default: endpoint.to_owned(), by_service: by_service.clone() };
    let mut builder = sdk.into_builder();
    builder.set_endpoint_url(None);
    builder.service_config(endpoints).build()
}

/// Each service's emulator.
#[derive(Debug)]
struct ServiceEndpoints {
    default: String,
    by_service: BTreeMap<String, String>,
}

impl LoadServiceConfig for ServiceEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        (key.env() == "AWS_ENDPOINT_URL")
            .then(|| self.by_service.get(key.service_id()).unwrap_or(&self.default).clone())
    }
}

/// Creates `name` on the server at `server_url` (if needed) and returns its URL.
pub async fn create_database(server_url: &str, name: &str) -> Result<String, LocalError> {
    let pool = postgres::connect(server_url, 1).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&pool)
        .await
        .map_err(|e| runner_core::Error::dependency("postgres", e))?;
    if !exists {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(LocalError::Missing(format!("a plain database name (got {name:?})")));
        }
        // Identifiers cannot be bound; the name was checked just above.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&pool)
            .await
            .map_err(|e| runner_core::Error::dependency("postgres create database", e))?;
    }
    pool.close().await;
    let (base, _) =
        server_url.rsplit_once('/').ok_or_else(|| LocalError::Missing("a database in DATABASE_URL".into()))?;
    Ok(format!("{base}/{name}"))
}

impl LocalStack {
    pub async fn start(options: StackOptions) -> Result<Self, LocalError> {
        let sdk = split_aws_config(&options.aws_endpoint, &options.aws_services).await;
        let template = Template::load(&options.template)?;
        let mut parameters: HashMap<String, String> = template
            .parameter_names()
            .into_iter()
            // Parameters without a default (secrets) resolve to empty unless the caller sets them.
            .map(|name| {
                let value = template.parameter_default(&name).unwrap_or_default();
                (name, value)
            })
            .collect();
        parameters.insert("DatabaseUrl".into(), options.database_url.clone());
        parameters.insert(
            "StreamTokenSecret".into(),
            format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>()),
        );
        parameters.extend(options.parameters.clone());

        let ws_listener = tokio::net::TcpListener::bind(("127.0.0.1", options.ws_port))
            .await
            .map_err(LocalError::io("bind the WebSocket port"))?;
        let ws_addr = ws_listener.local_addr().map_err(LocalError::io("read the WebSocket address"))?;
        // Only moto needs telling; another emulator (LocalStack) executes state machines anyway.
        if let Err(err) = enable_state_machine_execution(&options.aws_endpoint).await {
            tracing::warn!(error = %err, "not a moto server: state machines run only if the emulator runs them");
        }
        // The API Gateway resources are served in process, not provisioned; the URLs that name
        // them are replaced below with the local ones.
        let mut resources = provision(&sdk, &template, &options.stack_name, &parameters).await?;
        for (id, reference) in [("WebSocketApi", "local"), ("WebSocketStage", "live"), ("HttpApi", "local")] {
            resources.insert(id.to_owned(), Physical { reference: reference.to_owned(), attributes: HashMap::new() });
        }
        let local_urls =
            [("WEBSOCKET_URL", format!("ws://{ws_addr}/")), ("WEBSOCKET_MANAGEMENT_URL", format!("http://{ws_addr}"))];
        let resolver = Resolver {
            stack_name: &options.stack_name,
            region: "us-east-1",
            physical: &resources,
            conditions: template.conditions(),
            parameters: &parameters,
        };
        // Each function's environment as Lambda would give it, with its secrets read from the
        // emulator's Secrets Manager as the function does at start on AWS.
        let environment = async |function: &str| -> Result<BTreeMap<String, String>, LocalError> {
            let mut env = template.function_environment(function, &resolver)?;
            for (name, value) in &local_urls {
                if env.contains_key(*name) {
                    env.insert((*name).to_owned(), value.clone());
                }
            }
            Ok(runner_adapters::aws::secrets::resolve(&sdk, env).await?)
        };
        let api_env = environment("ApiFunction").await?;
        let settings = Settings::from_vars(|name| api_env.get(name).cloned())?;

        let pool = postgres::connect(&options.database_url, 5).await?;
        postgres::migrate(&pool).await?;

        // Every function of the stack sends through one counted runs queue and measures into
        // one set of metrics.
        let metrics = Arc::new(LocalMetrics::default());
        let measured = |env: BTreeMap<String, String>| Wiring::new(sdk.clone(), env).with_metrics(metrics.clone());
        let run_queue = Arc::new(CountedQueue::new(measured(api_env.clone()).sqs_run_queue(&settings)));
        let wiring = |env: BTreeMap<String, String>| measured(env).with_run_queue(run_queue.clone());
        let state = api::build(&wiring(api_env)).await?;
        let auth = state.auth.clone();
        let api_key = ApiKey::generate();
        auth.register(&api_key, &Owner::new("local"), "local stack").await?;

        let (shutdown, _) = watch::channel(false);
        let mut tasks = Vec::new();

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.http_port))
            .await
            .map_err(LocalError::io("bind the HTTP port"))?;
        let http_addr = listener.local_addr().map_err(LocalError::io("read the HTTP address"))?;
        let mut stop = shutdown.subscribe();
        let exposed = metrics.clone();
        let router = api::router(state).merge(axum::Router::new().route(
            "/metrics",
            axum::routing::get(
                move || async move { ([("content-type", "text/plain; version=0.0.4")], exposed.render()) },
            ),
        ));
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "HTTP server failed");
            }
        }));

        let projection = Arc::new(projector::build(&measured(environment("ProjectorFunction").await?)).await?);
        let projector: StreamHandler = Arc::new(move |event| {
            let projection = projection.clone();
            Box::pin(async move {
                projector::handle(projection.as_ref(), event)
                    .await
                    .map(|(response, _)| response)
                    .map_err(|e| e.to_string())
            })
        });
        let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
        for source in template.event_sources("ProjectorFunction", "DynamoDB") {
            let stream_arn = resolver.resolve(source.get("Stream").unwrap_or(&serde_yaml::Value::Null))?;
            tasks.push(tokio::spawn(feed_stream(streams.clone(), stream_arn, projector.clone(), shutdown.subscribe())));
        }

        let ws_handler = websocket::build(&measured(environment("WebSocketFunction").await?)).await?;
        let gateway = crate::websocket::Gateway::new(Arc::new(ws_handler), options.ws_client_buffer);
        let ws_in_flight = gateway.in_flight();
        let ws_gateway = gateway.clone();
        let mut stop = shutdown.subscribe();
        let ws_router = gateway.router();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(ws_listener, ws_router).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "WebSocket server failed");
            }
        }));

        let executor_env = environment("ExecutorFunction").await?;
        if let Some(options) = &options.executor {
            let executor = Arc::new(build_executor(&sdk, &executor_env, options, &metrics).await?);
            let handler: QueueHandler = Arc::new(move |event| {
                let executor = executor.clone();
                Box::pin(async move { executor::handle(&executor, event).await })
            });
            tasks.push(tokio::spawn(poll_queue(
                aws_sdk_sqs::Client::new(&sdk),
                settings.runs_queue_url.clone(),
                handler,
                options.concurrency,
                shutdown.subscribe(),
            )));
            // The long-runs worker (ECS on AWS): the same executor without Lambda's bound.
            if let Some(long_runs) = &settings.long_runs_queue_url {
                let mut long = options.clone();
                long.environment.insert("MAX_RUN_SECONDS".into(), LONG_RUN_LIMIT_SECONDS.to_string());
                let executor = Arc::new(build_executor(&sdk, &executor_env, &long, &metrics).await?);
                let handler: QueueHandler = Arc::new(move |event| {
                    let executor = executor.clone();
                    Box::pin(async move { executor::handle(&executor, event).await })
                });
                let sqs = aws_sdk_sqs::Client::new(&sdk);
                tasks.push(tokio::spawn(poll_queue(sqs, long_runs.clone(), handler, 1, shutdown.subscribe())));
            }
        }

        // Genie's queue interface: its requests queue polled, the runs table's stream fed to it.
        let genie = Arc::new(genie::build(&wiring(environment("GenieFunction").await?)).await?);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        for source in template.event_sources("GenieFunction", "SQS") {
            let queue_url = event_source_queue_url(&sqs, &resolver, &source).await?;
            let genie = genie.clone();
            let handler: QueueHandler = Arc::new(move |event| {
                let genie = genie.clone();
                Box::pin(async move { genie::handle_requests(&genie, event).await })
            });
            tasks.push(tokio::spawn(poll_queue(sqs.clone(), queue_url, handler, 4, shutdown.subscribe())));
        }
        // Epics: the state machine's tasks queue polled, each batch handed to the epics function.
        // Its rollbacks do their git work where the executor's does (a test's temp folders).
        let mut epics_env = environment("EpicsFunction").await?;
        if let Some(executor) = &options.executor {
            for (name, value) in &executor.environment {
                if name == "REPO_CACHE_DIR" || name == "WORKSPACE_ROOT" || name.starts_with("GIT_") {
                    epics_env.insert(name.clone(), value.clone());
                }
            }
        }
        let epics = Arc::new(epics::build(&wiring(epics_env)).await?);
        for source in template.event_sources("EpicsFunction", "SQS") {
            let queue_url = event_source_queue_url(&sqs, &resolver, &source).await?;
            let epics = epics.clone();
            let handler: QueueHandler = Arc::new(move |event| {
                let epics = epics.clone();
                Box::pin(async move { epics::handle(&epics, event).await })
            });
            tasks.push(tokio::spawn(poll_queue(sqs.clone(), queue_url, handler, 4, shutdown.subscribe())));
        }

        let genie_changes: StreamHandler = Arc::new(move |event| {
            let genie = genie.clone();
            Box::pin(async move { Ok(genie::handle_changes(&genie, event).await) })
        });
        for source in template.event_sources("GenieFunction", "DynamoDB") {
            let stream_arn = resolver.resolve(source.get("Stream").unwrap_or(&serde_yaml::Value::Null))?;
            let feed = feed_stream(streams.clone(), stream_arn, genie_changes.clone(), shutdown.subscribe());
            tasks.push(tokio::spawn(feed));
        }

        let janitor_wiring = wiring(environment("JanitorFunction").await?);
        if let Some(every) = options.janitor_every {
            let janitor = janitor::build(&janitor_wiring).await?;
            let mut stop = shutdown.subscribe();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    if let Err(err) = janitor::handle(&janitor).await {
                        tracing::warn!(error = %err, "janitor sweep failed");
                    }
                }
            }));
        }

        Ok(Self {
            ws_url: format!("ws://{ws_addr}/"),
            executor_env,
            http_url: format!("http://{http_addr}"),
            http_addr,
            api_key: api_key.expose().to_owned(),
            sdk,
            aws_endpoint: options.aws_endpoint.clone(),
            aws_services: options.aws_services.clone(),
            database_url: options.database_url.clone(),
            pool,
            settings,
            resources,
            janitor: janitor_wiring,
            run_queue,
            ws_in_flight,
            ws_gateway,
            auth,
            metrics,
            shutdown,
            tasks,
        })
    }

    /// A new API key for `owner` (tests use it to act as another tenant).
    pub async fn issue_key(&self, owner: &str) -> Result<String, LocalError> {
        let key = ApiKey::generate();
        self.auth.register(&key, &Owner::new(owner), "issued by the local stack").await?;
        Ok(key.expose().to_owned())
    }

    /// Messages the stack's functions sent to the runs queues (the FIFO queue may have dropped
    /// duplicates of them; this counts every send it accepted).
    pub fn run_messages_sent(&self) -> u64 {
        self.run_queue.sent()
    }

    /// Of those, the ones that went to the long-runs queue.
    pub fn long_run_messages_sent(&self) -> u64 {
        self.run_queue.sent_long()
    }

    /// Every WebSocket client connected now stops reading (tests make a subscriber slow so).
    pub async fn stall_websocket_clients(&self) {
        self.ws_gateway.stall_clients().await;
    }

    /// WebSocket route invocations (subscribe, `$default`) still running.
    pub fn websocket_invocations_in_flight(&self) -> usize {
        self.ws_in_flight.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The emulator serving `service` (an SDK service id: `SQS`, `S3`, `DynamoDB`, …).
    pub fn aws_endpoint_of(&self, service: &str) -> &str {
        self.aws_services.get(service).unwrap_or(&self.aws_endpoint)
    }

    /// What the stack's functions measured.
    pub fn metrics(&self) -> &LocalMetrics {
        &self.metrics
    }

    /// The janitor, for tests that sweep on demand.
    pub fn janitor(&self) -> runner_core::usecases::Janitor {
        self.janitor.janitor(janitor::BATCH).expect("the janitor's settings resolved at start")
    }

    /// An executor like the one the queue poller runs (tests drive it directly).
    pub async fn executor(&self, options: &ExecutorOptions) -> Result<runner_core::usecases::RunExecutor, LocalError> {
        build_executor(&self.sdk, &self.executor_env, options, &self.metrics).await
    }

    /// Stops serving and waits for every task to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            // The queue poller drains in-flight runs for up to 10 s itself.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(20), task).await;
        }
        self.pool.close().await;
    }
}

/// The URL of the queue an SQS event source (its `Properties`) reads.
async fn event_source_queue_url(
    sqs: &aws_sdk_sqs::Client,
    resolver: &Resolver<'_>,
    source: &serde_yaml::Value,
) -> Result<String, LocalError> {
    let queue_arn = resolver.resolve(source.get("Queue").unwrap_or(&serde_yaml::Value::Null))?;
    let name = queue_arn.rsplit(':').next().unwrap_or_default().to_owned();
    Ok(sqs
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .map_err(|e| LocalError::Missing(format!("the queue {name}: {e}")))?
        .queue_url
        .unwrap_or_default())
}

/// moto runs state machine executions only when its configuration says so (otherwise an
/// execution stays `RUNNING` and does nothing). The setting is the emulator's, shared by every
/// stack on it; setting it again changes nothing.
async fn enable_state_machine_execution(aws_endpoint: &str) -> Result<(), LocalError> {
    let refused = |detail: String| LocalError::Provision { what: "moto's state machine execution setting", detail };
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| refused(e.to_string()))?;
    let url = format!("{}/moto-api/config", aws_endpoint.trim_end_matches('/'));
    let response = client
        .post(&url)
        .json(&serde_json::json!({"stepfunctions": {"execute_state_machine": true}}))
        .send()
        .await
        .map_err(|e| refused(format!("POST {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(refused(format!("POST {url} answered {} (is {aws_endpoint} a moto server?)", response.status())));
    }
    Ok(())
}

async fn build_executor(
    sdk: &SdkConfig,
    template_env: &BTreeMap<String, String>,
    options: &ExecutorOptions,
    metrics: &Arc<LocalMetrics>,
) -> Result<runner_core::usecases::RunExecutor, LocalError> {
    let mut env = template_env.clone();
    // Every run of this process shares one pool: size it like the concurrency.
    env.insert("PG_POOL_SIZE".into(), (options.concurrency + 1).max(2).to_string());
    env.extend(options.environment.clone());
    Ok(executor::build(&Wiring::new(sdk.clone(), env).with_metrics(metrics.clone())).await?)
}
