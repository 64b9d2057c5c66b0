//! Configuration of the `annex-control-plane` binary: flags, each with an
//! `ANNEX_CONTROL_PLANE_*` environment variable; secrets come from files.
//! [`Config::settings`] turns them into [`Settings`], the validated value
//! [`run`](crate::run) takes (`annex dev` and the tests build one directly).
//! Nothing here binds a socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use annex_ops::telemetry::LogFormat;
use anyhow::Context as _;

use crate::blobs::BlobLimits;
use crate::blobs::migrate::MigrateReport;
use crate::host::HostAppConfig;
use crate::scheduler::SchedulerLimits;
use crate::seal::Sealer;
use crate::store::{
    BlobStore, BlobStoreSpec, PgStore, PgStoreConfig, S3Settings, Store, open_blob_store,
};

/// Everything a control plane runs with, validated.
pub struct Settings {
    /// The database (Postgres in production, `MemoryStore` in tests).
    pub store: Arc<dyn Store>,
    /// Where bundle bytes live: the database's own `bundle_blobs` (`store`
    /// itself), a directory or an object store.
    pub blobs: Arc<dyn BlobStore>,
    /// The key-encryption key: seals install secrets, signs execution grants.
    pub sealer: Sealer,
    pub limits: Limits,
    /// Where the host application's internal APIs are.
    pub host_app: HostAppConfig,
    /// In-process endpoints (`annex dev`): the gRPC services are also
    /// registered there under the listener's address. None for the binary.
    pub in_process: Option<annex_ops::in_process::Endpoints>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("blobs", &self.blobs.describe())
            .field("limits", &self.limits)
            .field("host_app", &self.host_app.base_url)
            .finish_non_exhaustive()
    }
}

/// Limits the control plane enforces on what it accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest bundle a publish may upload (Alga: 200 MiB).
    pub max_bundle_bytes: u64,
    /// Caps applied while unpacking a bundle at publish.
    pub unpack: annex_bundle::archive::Limits,
    /// Hosts installs may be allowed to reach; an install's own list must fit
    /// inside it. `*` admits any host (not recommended in production).
    pub platform_egress_allowlist: Vec<String>,
    /// The scheduler host API's quota and mutation rate (Alga's: 50, 10 per 60 s).
    pub scheduler: SchedulerLimits,
    /// How long a completed idempotency record answers repeats of its call
    /// (docs/design/idempotency.md): 24 h by default, 1 min to 30 days.
    pub idempotency_retention: std::time::Duration,
    /// The upload spool and the blob orphan collector.
    pub blobs: BlobLimits,
    /// How often each replica evaluates the active rollouts
    /// (docs/design/rollouts.md): 1 s by default, 100 ms to 60 s.
    pub rollout_tick: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bundle_bytes: 200 * 1024 * 1024,
            unpack: annex_bundle::archive::Limits::default(),
            platform_egress_allowlist: Vec::new(),
            scheduler: SchedulerLimits::default(),
            idempotency_retention: crate::idempotency::DEFAULT_RETENTION,
            blobs: BlobLimits::default(),
            rollout_tick: crate::rollouts::DEFAULT_TICK,
        }
    }
}

/// How to reach an S3-compatible blob store (`--blob-store s3://…`, and the
/// `migrate-blobs` side that is one). Unset values come from the standard
/// `AWS_*` environment and the instance or web-identity credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct S3Args {
    /// S3-compatible endpoint URL (MinIO, Ceph RGW, …); unset: AWS.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_BLOB_S3_ENDPOINT")]
    pub blob_s3_endpoint: Option<String>,
    /// Region (default: `AWS_REGION`, else us-east-1).
    #[arg(long, env = "ANNEX_CONTROL_PLANE_BLOB_S3_REGION")]
    pub blob_s3_region: Option<String>,
    /// Access key id (default: `AWS_ACCESS_KEY_ID`).
    #[arg(long, env = "ANNEX_CONTROL_PLANE_BLOB_S3_ACCESS_KEY_ID")]
    pub blob_s3_access_key_id: Option<String>,
    /// File holding the secret access key (default: `AWS_SECRET_ACCESS_KEY`).
    #[arg(long, env = "ANNEX_CONTROL_PLANE_BLOB_S3_SECRET_ACCESS_KEY_FILE")]
    pub blob_s3_secret_access_key_file: Option<PathBuf>,
    /// Allow a plain-HTTP endpoint (a local server; never in production).
    #[arg(long, env = "ANNEX_CONTROL_PLANE_BLOB_S3_ALLOW_HTTP")]
    pub blob_s3_allow_http: bool,
    /// Retries of a failed object-store request.
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_BLOB_S3_MAX_RETRIES",
        default_value_t = 10
    )]
    pub blob_s3_max_retries: usize,
    /// Time after which a failed request is not retried again, in seconds.
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_BLOB_S3_RETRY_TIMEOUT_SECS",
        default_value_t = 180
    )]
    pub blob_s3_retry_timeout_secs: u64,
}

impl S3Args {
    /// The settings, with the secret read from its file.
    pub fn settings(&self) -> anyhow::Result<S3Settings> {
        let secret_access_key = match &self.blob_s3_secret_access_key_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("reading the S3 secret access key from {}", path.display())
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(S3Settings {
            endpoint: self.blob_s3_endpoint.clone(),
            region: self.blob_s3_region.clone(),
            access_key_id: self.blob_s3_access_key_id.clone(),
            secret_access_key,
            allow_http: self.blob_s3_allow_http,
            max_retries: self.blob_s3_max_retries,
            retry_timeout: std::time::Duration::from_secs(self.blob_s3_retry_timeout_secs),
        })
    }
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "annex-control-plane",
    version,
    about = "Annex control plane: registry, trust, installs, scheduling and host services",
    after_help = "Also: `annex-control-plane migrate-blobs --from <store> --to <store>` copies bundle bytes between blob stores (see its --help)."
)]
pub struct Config {
    /// gRPC (mTLS) listen address.
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_GRPC_LISTEN",
        default_value = "0.0.0.0:7443"
    )]
    pub grpc_listen: SocketAddr,
    /// Admin listen address (plaintext /live, /ready, /metrics).
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,
    /// Postgres URL (postgres://user@host:port/db).
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_DATABASE_URL",
        conflicts_with = "database_url_file"
    )]
    pub database_url: Option<String>,
    /// File holding the Postgres URL (keeps the password out of the environment).
    #[arg(long, env = "ANNEX_CONTROL_PLANE_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Postgres connection pool size.
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_DB_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub db_max_connections: usize,
    /// CA certificate (PEM) that signs every Annex peer.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_TLS_CA")]
    pub tls_ca: PathBuf,
    /// This server's certificate (PEM) with the control-plane role.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// This server's private key (PEM).
    #[arg(long, env = "ANNEX_CONTROL_PLANE_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Key-encryption key for install secrets: 32 bytes raw, hex or base64.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_KEK_FILE")]
    pub kek_file: PathBuf,
    /// Where bundle bytes live: `postgres` (the database's `bundle_blobs`),
    /// `fs:/path` (a directory) or `s3://bucket[/prefix]` (S3-compatible).
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_BLOB_STORE",
        default_value = "postgres"
    )]
    pub blob_store: BlobStoreSpec,
    #[command(flatten)]
    pub s3: S3Args,
    /// Directory uploads are spooled to while they stream in (default: the
    /// system's temporary directory); needs room for the concurrent uploads.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_BLOB_SPOOL_DIR")]
    pub blob_spool_dir: Option<PathBuf>,
    /// Unreferenced blobs and upload leftovers younger than this many
    /// seconds are kept by the orphan collector.
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_BLOB_ORPHAN_GRACE_SECS",
        default_value_t = 3600
    )]
    pub blob_orphan_grace_secs: u64,
    /// Seconds between orphan collector passes.
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_BLOB_COLLECT_INTERVAL_SECS",
        default_value_t = 600
    )]
    pub blob_collect_interval_secs: u64,
    /// Largest bundle accepted by publish, in bytes.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_MAX_BUNDLE_BYTES", default_value_t = 200 * 1024 * 1024)]
    pub max_bundle_bytes: u64,
    /// Hosts installs may be allowed to reach (comma-separated; `*.example.com`
    /// patterns; `*` for any). Empty: no install may have egress.
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_EGRESS_ALLOWLIST",
        value_delimiter = ','
    )]
    pub egress_allowlist: Vec<String>,
    /// Base URL of the host application's internal extension APIs
    /// (`/api/internal/ext-{invoicing,clients,services}/install/{id}`).
    #[arg(long, env = "ANNEX_CONTROL_PLANE_HOST_APP_URL")]
    pub host_app_url: Option<String>,
    /// File holding the token sent to the host application as `x-runner-auth`.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_HOST_APP_TOKEN_FILE")]
    pub host_app_token_file: Option<PathBuf>,
    /// Base URL that `ui-proxy.call-route` routes go to; unset: every route is not found.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_UI_PROXY_URL")]
    pub ui_proxy_url: Option<String>,
    /// How long a call's response is kept for repeats with the same
    /// idempotency key, in seconds (60 to 2,592,000).
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_IDEMPOTENCY_RETENTION_SECS",
        default_value_t = 86_400
    )]
    pub idempotency_retention_secs: u64,
    /// How often rollouts are evaluated (health budgets, steps), in
    /// milliseconds (100 to 60,000). A breached budget reaches edges within
    /// this plus about 2 s (docs/design/rollouts.md).
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_ROLLOUT_TICK_MS",
        default_value_t = 1_000
    )]
    pub rollout_tick_ms: u64,
    /// FOR TESTS ONLY: run every enabled schedule once per this many
    /// milliseconds instead of by its cron expression (multi-replica tests of
    /// the scheduler that must not wait for whole minutes). Never set in
    /// production.
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_SCHEDULER_TEST_PERIOD_MS",
        hide = true
    )]
    pub scheduler_test_period_ms: Option<u64>,
    /// Log format.
    #[arg(long, env = "ANNEX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

impl Config {
    /// Reads the key-encryption key and the host-app token, connects to
    /// Postgres and gathers the limits.
    pub async fn settings(&self) -> anyhow::Result<Settings> {
        let sealer = Sealer::from_file(&self.kek_file).context("loading the key-encryption key")?;
        let store = Arc::new(
            PgStore::connect(PgStoreConfig {
                url: database_url(&self.database_url, &self.database_url_file)?,
                max_connections: self.db_max_connections,
            })
            .await
            .context("connecting to Postgres")?,
        );
        let blobs = open_blob_store(&self.blob_store, &self.s3.settings()?, store.clone())
            .with_context(|| format!("opening the blob store {}", self.blob_store))?;
        Ok(Settings {
            store,
            blobs,
            sealer,
            limits: self.limits()?,
            host_app: self.host_app()?,
            in_process: None,
        })
    }

    fn limits(&self) -> anyhow::Result<Limits> {
        let retention = std::time::Duration::from_secs(self.idempotency_retention_secs);
        if !(crate::idempotency::MIN_RETENTION..=crate::idempotency::MAX_RETENTION)
            .contains(&retention)
        {
            anyhow::bail!(
                "--idempotency-retention-secs must be {}..={}",
                crate::idempotency::MIN_RETENTION.as_secs(),
                crate::idempotency::MAX_RETENTION.as_secs()
            );
        }
        if !(100..=60_000).contains(&self.rollout_tick_ms) {
            anyhow::bail!("--rollout-tick-ms must be 100..=60000");
        }
        Ok(Limits {
            rollout_tick: std::time::Duration::from_millis(self.rollout_tick_ms),
            max_bundle_bytes: self.max_bundle_bytes,
            platform_egress_allowlist: self.egress_allowlist.clone(),
            scheduler: SchedulerLimits {
                test_period: self
                    .scheduler_test_period_ms
                    .map(std::time::Duration::from_millis),
                ..SchedulerLimits::default()
            },
            idempotency_retention: retention,
            blobs: BlobLimits {
                spool_dir: self.blob_spool_dir.clone(),
                orphan_grace: std::time::Duration::from_secs(self.blob_orphan_grace_secs),
                collect_every: std::time::Duration::from_secs(
                    self.blob_collect_interval_secs.max(1),
                ),
            },
            ..Limits::default()
        })
    }

    /// The host application's URLs and credentials.
    fn host_app(&self) -> anyhow::Result<HostAppConfig> {
        let token = match &self.host_app_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the host-app token from {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(HostAppConfig {
            base_url: self.host_app_url.clone(),
            token,
            ui_proxy_base_url: self.ui_proxy_url.clone(),
            ..HostAppConfig::new()
        })
    }
}

/// The database URL from the flag or its file.
fn database_url(url: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<String> {
    match (url, file) {
        (Some(url), _) => Ok(url.clone()),
        (None, Some(path)) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading the database URL from {}", path.display()))?
            .trim()
            .to_owned()),
        (None, None) => anyhow::bail!(
            "a database is required: set --database-url or --database-url-file (ANNEX_CONTROL_PLANE_DATABASE_URL)"
        ),
    }
}

/// `annex-control-plane migrate-blobs`: copies every referenced bundle's
/// bytes from one blob store to another, verifying each blob's SHA-256;
/// idempotent and resumable (blobs already copied are skipped).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "annex-control-plane migrate-blobs",
    bin_name = "annex-control-plane migrate-blobs",
    about = "Copy every referenced bundle blob from one blob store to another, verifying SHA-256"
)]
pub struct MigrateBlobs {
    /// The store to copy from: `postgres`, `fs:/path` or `s3://bucket[/prefix]`.
    #[arg(long)]
    pub from: BlobStoreSpec,
    /// The store to copy to.
    #[arg(long)]
    pub to: BlobStoreSpec,
    /// Postgres URL of the control plane's database (the bundle rows, and
    /// `bundle_blobs` when a side is `postgres`).
    #[arg(
        long,
        env = "ANNEX_CONTROL_PLANE_DATABASE_URL",
        conflicts_with = "database_url_file"
    )]
    pub database_url: Option<String>,
    /// File holding the Postgres URL.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Directory each blob is spooled to while it is verified.
    #[arg(long, env = "ANNEX_CONTROL_PLANE_BLOB_SPOOL_DIR")]
    pub blob_spool_dir: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Log format.
    #[arg(long, env = "ANNEX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl MigrateBlobs {
    /// Connects and copies; the report counts every referenced blob.
    pub async fn run(&self) -> anyhow::Result<MigrateReport> {
        if self.from == self.to {
            anyhow::bail!("--from and --to name the same store ({})", self.from);
        }
        let store = Arc::new(
            PgStore::connect(PgStoreConfig {
                url: database_url(&self.database_url, &self.database_url_file)?,
                max_connections: 4,
            })
            .await
            .context("connecting to Postgres")?,
        );
        let s3 = self.s3.settings()?;
        let open = |spec: &BlobStoreSpec| {
            open_blob_store(spec, &s3, store.clone())
                .with_context(|| format!("opening the blob store {spec}"))
        };
        let (from, to) = (open(&self.from)?, open(&self.to)?);
        let spool = BlobLimits {
            spool_dir: self.blob_spool_dir.clone(),
            ..BlobLimits::default()
        }
        .spool_dir();
        std::fs::create_dir_all(&spool)
            .with_context(|| format!("creating the spool {}", spool.display()))?;
        crate::blobs::migrate::migrate_blobs(store.as_ref(), from.as_ref(), to.as_ref(), &spool)
            .await
    }
}
