//! `nls serve`: the whole service on one machine, over the embedded SQLite store.
//!
//! Start-up: parse the settings (flags, and `NLS_BOOTSTRAP_ADMIN_KEY`) once, set up logging,
//! load or create the signing key in the data directory, open the store, then serve the core's
//! router (`nls_core::http::router`) until SIGINT or SIGTERM. Shutdown stops accepting, lets
//! in-flight requests finish, then flushes the buffered validation history. Everything the API
//! acknowledged was committed (fsynced) by the store before the answer was sent.

mod logging;
mod memory_release;
pub(crate) mod signing_key_file;
mod slow_client_limits;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::extract::{ConnectInfo, Request};
use chrono::Duration;
use nls_core::billing::{BillingPolicy, PlanCatalogue};
use nls_core::http::rate_limit::RateLimit;
use nls_core::http::registry_routes::{RegistryConfig, RegistryTokenService};
use nls_core::http::webhook_routes::BillingSetup;
use nls_core::http::{AppDeps, AppState, ClientIp, HttpConfig, router};
use nls_core::model::UsageWindow;
use nls_core::ports::Mailer;
use nls_core::renewals::{RenewalsConfig, run_renewals};

use crate::outbox_mailer::OutboxMailer;
use nls_core::ports::{Store, StoreError, SystemClock};
use nls_edge_push::HttpStatusPublisher;
use nls_sqlite_store::{Retention, SqliteStore};

pub use self::logging::LogFormat;
use self::slow_client_limits::SlowClientLimits;

pub const BOOTSTRAP_KEY_VAR: &str = "NLS_BOOTSTRAP_ADMIN_KEY";
/// Shorter bootstrap keys are refused: this key has the `admin` scope.
const MIN_BOOTSTRAP_KEY_LEN: usize = 16;
pub const DATABASE_FILE: &str = "nls.sqlite3";
const VALIDATION_LOG_FLUSH_EVERY: StdDuration = StdDuration::from_secs(1);
/// How often the SQLite store drops rows past their retention.
const PRUNE_EVERY: StdDuration = StdDuration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the database and the signing key live (created if missing).
    #[arg(long, value_name = "DIR", default_value = "nls-data")]
    pub data_dir: PathBuf,
    /// The store: the embedded SQLite file in the data dir, or a DynamoDB table (endpoint,
    /// region and credentials from the usual AWS environment, e.g. `AWS_ENDPOINT_URL`).
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// The DynamoDB table, with `--store dynamodb` (also spelled `--table`).
    #[arg(long, alias = "table", value_name = "NAME", default_value = "nls")]
    pub dynamodb_table: String,
    /// Log output: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A deployment's lease, renewed by each heartbeat; a deployment silent this long is released.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub lease_secs: u32,
    /// How often clients are told to validate and heartbeat.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    pub check_in_secs: u32,
    /// Churn protection: at most this many new activations per license per churn window.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub churn_max: u32,
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub churn_window_secs: u32,
    /// Requests per second per client IP (burst: twice that); 0 turns the limit off.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub ip_rate_limit: u32,
    /// Admin requests per second per API key (burst: twice that); 0 turns the limit off.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub api_key_rate_limit: u32,
    /// How long a license's status is served from memory before the store is read again.
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 2000)]
    pub snapshot_ttl_ms: u32,
    /// Usage records whose `at` is older than this many days are refused (400).
    #[arg(long, value_name = "DAYS", default_value_t = 35, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub usage_max_age_days: u32,
    /// Usage records whose `at` is this far ahead of the server's clock are refused (400).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=86400))]
    pub usage_max_ahead_secs: u32,
    /// The life of a cloud access token (`POST /v1/access-tokens`): the bound on how long a
    /// suspended license keeps its cloud access.
    #[arg(long, value_name = "SECONDS", env = "NLS_ACCESS_TOKEN_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(u32).range(nls_core::access_token::MIN_ACCESS_TTL_SECS..=nls_core::access_token::MAX_ACCESS_TTL_SECS))]
    pub access_token_ttl_secs: u32,
    /// A browser origin allowed to call the admin API (repeatable).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Take client IPs from X-Forwarded-For (only behind one trusted proxy): the rightmost entry,
    /// the one that proxy appended; entries to its left are client-written.
    #[arg(long)]
    pub trust_forwarded_for: bool,
    /// Where emails go: `.eml` files in `<data-dir>/outbox/`, or SES (AWS environment).
    #[arg(long, value_enum, default_value_t = MailerKind::Outbox)]
    pub mailer: MailerKind,
    /// The verified SES sender, with `--mailer ses`.
    #[arg(long, value_name = "ADDRESS", default_value = "licensing@nectar.example")]
    pub mail_from: String,
    /// How often the renewal-notice job runs in-process (first run a minute after start);
    /// 0 turns it off, e.g. when an external scheduler runs `nls renewals run`.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    pub renewals_every_secs: u64,
    /// An edge (Worker or Spin) to push each license status change to, as
    /// `PUT <URL>/v1/internal/snapshots/{id}` (repeatable). The edges' service token comes
    /// from `NLS_EDGE_PUSH_TOKEN` only: it is a secret, so never a flag.
    #[arg(long = "edge-push-url", value_name = "URL")]
    pub edge_push_urls: Vec<String>,
    /// A connection whose request headers take longer than this is closed (slowloris).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// A request body still arriving this long after the request started is refused (400).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub body_read_timeout_secs: u64,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub compliance: ComplianceArgs,
}

/// The key-sharing / compliance flags (docs/api.md); a flag never suspends anything.
#[derive(Debug, clap::Args)]
pub struct ComplianceArgs {
    /// Flag a day with more distinct fingerprints or client IPs than max_deployments × this.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sharing_factor: u32,
    /// Flag a day with at least this many TOO_MANY_DEPLOYMENTS (or ACTIVATION_RATE_LIMITED).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeated_refusals: u64,
    /// Flag a day with validations from more than this many countries.
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub max_countries: u32,
}

impl ComplianceArgs {
    pub fn settings(&self) -> nls_core::validation_stats::ComplianceSettings {
        nls_core::validation_stats::ComplianceSettings {
            sharing_factor: self.sharing_factor,
            repeated_refusals: self.repeated_refusals,
            max_countries: self.max_countries,
        }
    }
}

/// The Docker Registry token service (`GET /v1/registry/token`, docs/distribution.md).
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// The tokens' `iss`: the registry's `auth.token.issuer`.
    #[arg(long, value_name = "NAME", default_value = "nls")]
    pub registry_issuer: String,
    /// The registry's `auth.token.service`: token requests must name it; the tokens' `aud`.
    #[arg(long, value_name = "NAME", default_value = "nectar-registry")]
    pub registry_service: String,
    /// How long a registry token lasts.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub registry_token_ttl_secs: u32,
}

impl RegistryArgs {
    fn config(&self) -> RegistryConfig {
        RegistryConfig {
            token_ttl: Duration::seconds(i64::from(self.registry_token_ttl_secs)),
            ..RegistryConfig::new(&self.registry_issuer, &self.registry_service)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MailerKind {
    Outbox,
    Ses,
}

pub const STRIPE_SECRET_VAR: &str = "NLS_STRIPE_WEBHOOK_SECRET";
pub const EDGE_PUSH_TOKEN_VAR: &str = "NLS_EDGE_PUSH_TOKEN";
pub const PLANS_FILE_VAR: &str = "NLS_PLANS_FILE";
const RENEWALS_FIRST_RUN_AFTER: StdDuration = StdDuration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Dynamodb,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{BOOTSTRAP_KEY_VAR} must be at least {MIN_BOOTSTRAP_KEY_LEN} characters")]
    WeakBootstrapKey,
    #[error("{BOOTSTRAP_KEY_VAR} is not valid UTF-8")]
    BootstrapKeyNotUnicode,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("signing key {path}: {reason}")]
    SigningKey { path: PathBuf, reason: String },
    #[error("opening the store {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error("{PLANS_FILE_VAR}={path}: {reason}")]
    Plans { path: PathBuf, reason: String },
    #[error("{STRIPE_SECRET_VAR} is not valid UTF-8")]
    StripeSecretNotUnicode,
    #[error(
        "--edge-push-url needs the edges' service token in {EDGE_PUSH_TOKEN_VAR} (set, non-empty, UTF-8)"
    )]
    EdgePushTokenMissing,
    #[error("--edge-push-url: {0}")]
    EdgePush(#[from] nls_edge_push::SetupError),
}

/// The status push to the edges, when `--edge-push-url` is given.
fn edge_publisher(urls: &[String]) -> Result<Option<Arc<HttpStatusPublisher>>, ServeError> {
    if urls.is_empty() {
        return Ok(None);
    }
    let token = std::env::var(EDGE_PUSH_TOKEN_VAR)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or(ServeError::EdgePushTokenMissing)?;
    Ok(Some(Arc::new(HttpStatusPublisher::new(urls, &token)?)))
}

/// The plan catalogue in the JSON file named by `NLS_PLANS_FILE` (none: an empty catalogue).
fn plan_catalogue() -> Result<PlanCatalogue, ServeError> {
    let Some(path) = std::env::var_os(PLANS_FILE_VAR) else { return Ok(PlanCatalogue::default()) };
    let path = PathBuf::from(path);
    let plans_error = |reason: String| ServeError::Plans { path: path.clone(), reason };
    let json = std::fs::read_to_string(&path).map_err(|e| plans_error(e.to_string()))?;
    PlanCatalogue::parse(&json).map_err(|e| plans_error(e.to_string()))
}

/// Stripe webhooks are served when `NLS_STRIPE_WEBHOOK_SECRET` is set; the plan catalogue comes
/// from the JSON file named by `NLS_PLANS_FILE` (none: every price is unknown and ignored).
fn billing_setup(mailer: Arc<dyn Mailer>, plans: PlanCatalogue) -> Result<Option<BillingSetup>, ServeError> {
    let secret = match std::env::var(STRIPE_SECRET_VAR) {
        Ok(secret) if !secret.trim().is_empty() => secret,
        Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => return Err(ServeError::StripeSecretNotUnicode),
    };
    Ok(Some(BillingSetup {
        mailer,
        plans,
        webhook_secret: secret.trim().as_bytes().to_vec(),
        policy: BillingPolicy::default(),
    }))
}

fn bootstrap_key() -> Result<Option<String>, ServeError> {
    match std::env::var(BOOTSTRAP_KEY_VAR) {
        Ok(key) if key.trim().len() >= MIN_BOOTSTRAP_KEY_LEN => Ok(Some(key)),
        Ok(key) if key.is_empty() => Ok(None),
        Ok(_) => Err(ServeError::WeakBootstrapKey),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ServeError::BootstrapKeyNotUnicode),
    }
}

fn rate(per_second: u32) -> Option<RateLimit> {
    (per_second > 0)
        .then(|| RateLimit { per_second: f64::from(per_second), burst: 2.0 * f64::from(per_second) })
}

fn http_config(args: &ServeArgs, bootstrap: Option<&str>) -> HttpConfig {
    let config = HttpConfig {
        lease: Duration::seconds(i64::from(args.lease_secs.max(1))),
        check_in_interval: Duration::seconds(i64::from(args.check_in_secs.max(1))),
        churn_window: Duration::seconds(i64::from(args.churn_window_secs)),
        churn_max: args.churn_max,
        cors_origins: args.cors_origins.clone(),
        ip_rate_limit: rate(args.ip_rate_limit),
        api_key_rate_limit: rate(args.api_key_rate_limit),
        snapshot_ttl: Duration::milliseconds(i64::from(args.snapshot_ttl_ms)),
        trust_forwarded_for: args.trust_forwarded_for,
        usage_window: UsageWindow {
            max_age: Duration::days(i64::from(args.usage_max_age_days)),
            max_ahead: Duration::seconds(i64::from(args.usage_max_ahead_secs)),
        },
        access_token_ttl: Duration::seconds(i64::from(args.access_token_ttl_secs)),
        ..HttpConfig::default()
    };
    match bootstrap {
        Some(key) => config.with_bootstrap_admin_key(key),
        None => config,
    }
}

pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    logging::init(args.log_format);
    let bootstrap = bootstrap_key()?;
    let config = http_config(&args, bootstrap.as_deref());
    drop(bootstrap);
    let publisher = edge_publisher(&args.edge_push_urls)?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|source| ServeError::Io { path: args.data_dir.clone(), source })?;
    let key_ring = signing_key_file::load_ring(&args.data_dir)?;
    let kid = key_ring.signer().map(|signer| signer.kid.clone()).unwrap_or_default();
    let jwks_json = serde_json::to_string(&key_ring.jwks()).unwrap_or_default();
    let registry_key = signing_key_file::load_or_create_registry_key(&args.data_dir)?;
    let registry = RegistryTokenService::new(registry_key, args.registry.config());
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(ServeError::Runtime)?;
    let mut pruning = None;
    let store: Arc<dyn Store> = match args.store {
        StoreKind::Sqlite => {
            let db_path = args.data_dir.join(DATABASE_FILE);
            let store = Arc::new(
                SqliteStore::open(&db_path)
                    .map_err(|source| ServeError::Store { path: db_path.clone(), source })?,
            );
            let window = config.usage_window;
            let retention = Retention::for_usage_window(window.max_age, window.max_ahead);
            pruning = Some(Pruning { store: Arc::clone(&store), retention });
            store
        }
        // Client set-up only: no AWS call until the first request.
        StoreKind::Dynamodb => Arc::new(runtime.block_on(nls_aws::from_env(args.dynamodb_table.clone()))),
    };
    let mailer: Arc<dyn Mailer> = match args.mailer {
        MailerKind::Outbox => Arc::new(OutboxMailer::new(args.data_dir.join("outbox"))),
        MailerKind::Ses => {
            let sdk_config = runtime.block_on(nls_aws::load_sdk_config());
            let client = nls_aws::sesv2_client(&sdk_config, &nls_aws::ClientTuning::default());
            Arc::new(nls_aws::SesMailer::new(client, args.mail_from.clone()))
        }
    };
    let deps = AppDeps { store, key_ring: Arc::new(key_ring), clock: Arc::new(SystemClock), config };
    let plans = plan_catalogue()?;
    let state = match billing_setup(Arc::clone(&mailer), plans.clone())? {
        Some(billing) => AppState::with_billing(deps, billing),
        None => AppState::new(deps),
    };
    // The portal's key emails and the renewals below share the counting mailer.
    let state = state.with_registry(registry).with_mailer(Arc::clone(&mailer)).with_plans(plans);
    let mailer = state.mailer().unwrap_or(mailer);
    state.validation_events().set_settings(args.compliance.settings());
    let state = match publisher {
        Some(publisher) => {
            // The URLs only: the token is never logged.
            tracing::info!(edges = ?publisher.edges(), "pushing status changes to the edges");
            runtime.spawn(push_jwks_to_edges(Arc::clone(&publisher), jwks_json));
            state.with_status_publisher(publisher)
        }
        None => state,
    };
    tracing::info!(
        listen = %args.listen,
        data_dir = %args.data_dir.display(),
        store = ?args.store,
        kid = %kid,
        bootstrap_admin_key = state.config().bootstrap_admin_key_sha256.is_some(),
        stripe_webhooks = std::env::var_os(STRIPE_SECRET_VAR).is_some(),
        mailer = ?args.mailer,
        "starting nls serve"
    );
    let renewals_every =
        (args.renewals_every_secs > 0).then(|| StdDuration::from_secs(args.renewals_every_secs));
    let limits = SlowClientLimits {
        header_read: StdDuration::from_secs(args.header_read_timeout_secs.max(1)),
        body_read: StdDuration::from_secs(args.body_read_timeout_secs.max(1)),
    };
    runtime.block_on(serve(args.listen, state, mailer, renewals_every, pruning, limits))
}

/// The SQLite store's retention job (DynamoDB prunes the same rows with its TTL).
struct Pruning {
    store: Arc<SqliteStore>,
    retention: Retention,
}

/// Every few minutes, one bounded prune (`Retention::max_rows_per_table` rows per table), so
/// a backlog drains over several runs and no run holds the write lock for long.
async fn prune_forever(pruning: Pruning, state: AppState) {
    let pruning = Arc::new(pruning);
    repeat_forever(PRUNE_EVERY, PRUNE_EVERY, || {
        let (pruning, now) = (Arc::clone(&pruning), state.clock().now());
        async move {
            match pruning.store.prune_expired(now, pruning.retention).await {
                Ok(pruned) if pruned.total() > 0 => tracing::info!(
                    webhook_events = pruned.webhook_events,
                    validation_logs = pruned.validation_logs,
                    usage_batches = pruned.usage_batches,
                    "pruned rows past their retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning failed; the next run retries"),
            }
        }
    })
    .await
}

async fn serve(
    addr: SocketAddr,
    state: AppState,
    mailer: Arc<dyn Mailer>,
    renewals_every: Option<StdDuration>,
    pruning: Option<Pruning>,
    limits: SlowClientLimits,
) -> Result<(), ServeError> {
    let listener = bind_listener(addr).map_err(|source| ServeError::Bind { addr, source })?;
    let app = router(state.clone()).layer(axum::middleware::map_request(with_client_ip));
    let flusher = tokio::spawn(flush_validation_log_forever(state.clone()));
    let sweeper = tokio::spawn(memory_release::sweep_idle_entries_forever(state.clone()));
    let renewals =
        renewals_every.map(|every| tokio::spawn(run_renewals_forever(state.clone(), mailer, every)));
    let pruner = pruning.map(|pruning| tokio::spawn(prune_forever(pruning, state.clone())));
    tracing::info!(listen = %listener.local_addr().unwrap_or(addr), "listening");
    let served = slow_client_limits::serve(listener, app, limits, shutdown_signal()).await;
    flusher.abort();
    sweeper.abort();
    if let Some(renewals) = renewals {
        renewals.abort();
    }
    if let Some(pruner) = pruner {
        pruner.abort();
    }
    if let Err(e) = state.flush_validation_events().await {
        tracing::error!(error = %e, "could not flush the validation events at shutdown");
    }
    match state.flush_validation_log().await {
        Ok(n) => tracing::info!(flushed = n, "validation history flushed"),
        Err(e) => tracing::error!(error = %e, "could not flush the validation history at shutdown"),
    }
    tracing::info!("stopped");
    served.map_err(ServeError::Serve)
}

/// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`).
/// tokio's default, 1024, overflowed when 10,000 clients connected at once: the dropped SYNs were
/// retried a second later, so the connect time's p99 was 1 s (docs/benchmarks.md).
const LISTEN_BACKLOG: u32 = 8192;

fn bind_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restart can bind while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A rotation or retirement takes effect at a restart: the edges learn the ring now, so they
/// trust the new `kid` and stop trusting a retired one without a redeploy (docs/edge.md).
async fn push_jwks_to_edges(publisher: Arc<HttpStatusPublisher>, jwks_json: String) {
    match publisher.publish_jwks(&jwks_json).await {
        Ok(()) => tracing::info!(edges = ?publisher.edges(), "pushed the JWKS to the edges"),
        // Same `event` as a failed status push: the same alarm (template.yaml) and runbook.
        Err(e) => tracing::warn!(
            event = "edge_push_failed",
            error = %e,
            "JWKS push to the edges failed; run `nls keys push-jwks` once they are reachable"
        ),
    }
}

/// The core's router reads the caller's address from a [`ClientIp`] extension.
async fn with_client_ip(ConnectInfo(peer): ConnectInfo<SocketAddr>, mut req: Request) -> Request {
    req.extensions_mut().insert(ClientIp(peer.ip()));
    req
}

async fn flush_validation_log_forever(state: AppState) {
    let mut tick = tokio::time::interval(VALIDATION_LOG_FLUSH_EVERY);
    loop {
        tick.tick().await;
        if let Err(e) = state.flush_validation_log().await {
            tracing::warn!(error = %e, "validation history flush failed; will retry");
        }
    }
}

/// The same job as `nls renewals run` and the renewals Lambda. A run that dies half way is
/// safe to repeat: every notice is claimed before it is sent (docs/billing.md).
async fn run_renewals_forever(state: AppState, mailer: Arc<dyn Mailer>, every: StdDuration) {
    repeat_forever(RENEWALS_FIRST_RUN_AFTER.min(every), every, || {
        let (state, mailer) = (state.clone(), Arc::clone(&mailer));
        async move {
            let config = RenewalsConfig::for_new_run();
            match run_renewals(state.store(), &*mailer, state.clock(), &config).await {
                Ok(report) => {
                    tracing::info!(run_id = %config.run_id, sent = report.sent.len(), "renewals run finished")
                }
                Err(e) => {
                    tracing::warn!(run_id = %config.run_id, error = %e, "renewals run failed; next run retries")
                }
            }
        }
    })
    .await
}

/// Runs `job` after `first_after`, then every `every`, for ever. A run that panics is logged
/// and the next one runs on time: one bad run must not end the schedule.
async fn repeat_forever<F, Fut>(first_after: StdDuration, every: StdDuration, job: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::time::sleep(first_after).await;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        // Each run is its own task: a panic ends that task only, and shows here as a JoinError.
        if let Err(failed) = tokio::spawn(job()).await {
            tracing::error!(error = %failed, "a scheduled run panicked; the next run goes ahead");
        }
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Issue 19 item 1: a panic in the renewals run ended `nls serve`'s scheduler task for good.
    #[tokio::test]
    async fn a_panicking_run_does_not_end_the_schedule() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let schedule =
            tokio::spawn(repeat_forever(StdDuration::ZERO, StdDuration::from_millis(10), move || {
                let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if run == 1 {
                        panic!("the first run hits a bad license");
                    }
                }
            }));
        // The panic hook may take a while (a backtrace): wait for the runs, up to 20 s.
        for _ in 0..200 {
            if runs.load(Ordering::SeqCst) >= 3 || schedule.is_finished() {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert!(!schedule.is_finished(), "the schedule died with the first run");
        schedule.abort();
        assert!(runs.load(Ordering::SeqCst) >= 3, "runs after the panic: {}", runs.load(Ordering::SeqCst));
    }
}
