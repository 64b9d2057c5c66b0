//! Configuration of the `annex-control-plane` binary: flags, each with an
//! `ANNEX_CONTROL_PLANE_*` environment variable; secrets come from files.

use std::net::SocketAddr;
use std::path::PathBuf;

use annex_ops::telemetry::LogFormat;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "annex-control-plane",
    version,
    about = "Annex control plane: registry, trust, installs, scheduling and host services"
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
    /// The host application's URLs and credentials.
    pub fn host_app(&self) -> anyhow::Result<crate::host::HostAppConfig> {
        use anyhow::Context as _;
        let token = match &self.host_app_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the host-app token from {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(crate::host::HostAppConfig {
            base_url: self.host_app_url.clone(),
            token,
            ui_proxy_base_url: self.ui_proxy_url.clone(),
            ..crate::host::HostAppConfig::new()
        })
    }

    /// The database URL from the flag or its file.
    pub fn database_url(&self) -> anyhow::Result<String> {
        use anyhow::Context as _;
        match (&self.database_url, &self.database_url_file) {
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
}
