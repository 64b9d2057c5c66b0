//! Configuration of the `annex-edge` binary: flags, each with an
//! `ANNEX_EDGE_*` environment variable; key material comes from files.
//! [`Config::settings`] validates everything once at start and yields the
//! [`Settings`] value the library runs on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use annex_ops::telemetry::LogFormat;
use anyhow::Context as _;

use crate::audit::AuditSettings;
use crate::auth::{JwtVerifier, SessionArgs};
use crate::clients::LookupSettings;
use crate::debug_stream::StreamSettings;
use crate::ext_ui::UiPolicy;
use crate::listener::ConnectionSettings;
use crate::ratelimit::RateSettings;
use crate::ui_hosts::UiHostPattern;
use crate::ui_store::UiStoreSettings;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "annex-edge",
    version,
    about = "Annex edge: Alga's extension HTTP contracts in front of the worker fleet"
)]
pub struct Config {
    /// Public HTTP listen address (TLS is terminated in front of the edge).
    #[arg(long, env = "ANNEX_EDGE_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,
    /// Admin listen address (plaintext /live, /ready, /metrics).
    #[arg(long, env = "ANNEX_EDGE_ADMIN_LISTEN", default_value = "0.0.0.0:9091")]
    pub admin_listen: SocketAddr,
    /// The control plane's gRPC address, `https://host:port`: repeat the
    /// flag or separate URLs with commas for several replicas, or give one
    /// name that resolves to every replica (a headless Service). Calls are
    /// spread over all of them and move on when one goes away.
    #[arg(
        long,
        env = "ANNEX_EDGE_CONTROL_PLANE",
        value_delimiter = ',',
        required = true
    )]
    pub control_plane: Vec<String>,
    /// Name checked against every control plane's certificate (default: the
    /// host of the first URL), whatever address it is reached at.
    #[arg(long, env = "ANNEX_EDGE_CONTROL_PLANE_SERVER_NAME")]
    pub control_plane_server_name: Option<String>,
    /// Name checked against worker certificates (default: each worker's host).
    #[arg(long, env = "ANNEX_EDGE_WORKER_SERVER_NAME")]
    pub worker_server_name: Option<String>,
    /// CA certificate (PEM) that signs every Annex peer.
    #[arg(long, env = "ANNEX_EDGE_TLS_CA")]
    pub tls_ca: PathBuf,
    /// This edge's certificate (PEM) with the edge role.
    #[arg(long, env = "ANNEX_EDGE_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// This edge's private key (PEM).
    #[arg(long, env = "ANNEX_EDGE_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Names this edge in the control plane's logs.
    #[arg(long, env = "ANNEX_EDGE_ID", default_value = "edge")]
    pub edge_id: String,
    #[command(flatten)]
    pub session: SessionArgs,
    /// Cookie that carries the session token when there is no Authorization header.
    #[arg(long, env = "ANNEX_EDGE_SESSION_COOKIE")]
    pub session_cookie: Option<String>,
    /// Origins allowed to call /api/ext with credentials (comma-separated, exact).
    #[arg(long, env = "ANNEX_EDGE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Origins allowed to call /api/ext-proxy (Alga's EXT_PROXY_ALLOWED_ORIGINS).
    #[arg(long, env = "ANNEX_EDGE_PROXY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub proxy_allowed_origins: Vec<String>,
    /// Token-bucket size per install.
    #[arg(long, env = "ANNEX_EDGE_RATE_CAPACITY", default_value_t = 60)]
    pub rate_capacity: u32,
    /// Tokens added per second per install.
    #[arg(long, env = "ANNEX_EDGE_RATE_REFILL_PER_SEC", default_value_t = 1.0)]
    pub rate_refill_per_sec: f64,
    /// Largest request body, in bytes (Alga: 10 MiB).
    #[arg(long, env = "ANNEX_EDGE_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Execution deadline in milliseconds, also sent as the guest's timeout (Alga: 30000).
    #[arg(long, env = "ANNEX_EDGE_TIMEOUT_MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Longest an install resolution is cached without an invalidation, in seconds.
    #[arg(long, env = "ANNEX_EDGE_INSTALL_CACHE_TTL_SECS", default_value_t = 30)]
    pub install_cache_ttl_secs: u64,
    /// How long an API key check is cached, in seconds.
    #[arg(long, env = "ANNEX_EDGE_API_KEY_CACHE_TTL_SECS", default_value_t = 30)]
    pub api_key_cache_ttl_secs: u64,
    /// Audit rows buffered before requests are refused with 503 (as Alga
    /// answers when its audit insert fails). Memory is used only while rows
    /// wait (a few hundred bytes each); 131,072 rows ride out about 14 s of
    /// a control-plane outage at 9,000 req/s on one edge.
    #[arg(long, env = "ANNEX_EDGE_AUDIT_BUFFER", default_value_t = 131_072)]
    pub audit_buffer: usize,
    /// RecordExecutions calls in flight at once.
    #[arg(long, env = "ANNEX_EDGE_AUDIT_IN_FLIGHT", default_value_t = 4)]
    pub audit_in_flight: usize,
    /// Directory for cached UI files.
    #[arg(
        long,
        env = "ANNEX_EDGE_UI_CACHE_DIR",
        default_value = "/tmp/annex-edge-ui"
    )]
    pub ui_cache_dir: PathBuf,
    /// Total bytes of UI files kept on disk.
    #[arg(long, env = "ANNEX_EDGE_UI_CACHE_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub ui_cache_max_bytes: u64,
    /// Largest UI file served (413 above); unlimited when unset.
    #[arg(long, env = "ANNEX_EDGE_UI_MAX_FILE_BYTES")]
    pub ui_max_file_bytes: Option<u64>,
    /// Replaces the UI's Content-Security-Policy entirely.
    #[arg(long, env = "ANNEX_EDGE_UI_CSP")]
    pub ui_csp: Option<String>,
    /// Appended to the CSP as `frame-ancestors <value>`.
    #[arg(long, env = "ANNEX_EDGE_UI_FRAME_ANCESTORS")]
    pub ui_frame_ancestors: Option<String>,
    /// Per-extension UI origins: a host pattern such as
    /// `{extension}.ext.example.com` (the registry id fills `{extension}`).
    /// Each UI is then served only on its own host, and nothing but UI files
    /// and bridge scripts on such hosts. Unset: every UI on the edge's origin.
    #[arg(long, env = "ANNEX_EDGE_UI_HOST_PATTERN")]
    pub ui_host_pattern: Option<String>,
    /// Bytes of install resolutions cached (refusals get an eighth more).
    #[arg(long, env = "ANNEX_EDGE_INSTALL_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub install_cache_max_bytes: usize,
    /// Bytes of API-key checks cached (refusals get a quarter more).
    #[arg(long, env = "ANNEX_EDGE_API_KEY_CACHE_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub api_key_cache_max_bytes: usize,
    /// Lookups one client may cause in a burst by naming tenants (`/ext-ui`)
    /// or API keys the edge has not cached; over it: 429.
    #[arg(long, env = "ANNEX_EDGE_LOOKUP_BURST", default_value_t = 200)]
    pub lookup_burst: u32,
    /// Lookups per second one client's budget regains.
    #[arg(long, env = "ANNEX_EDGE_LOOKUP_PER_SEC", default_value_t = 20.0)]
    pub lookup_per_sec: f64,
    /// A header the proxy in front of the edge appends the client's address
    /// to (e.g. `x-forwarded-for`; its last value counts). Unset: the
    /// connection's peer address. Set it only behind a proxy that writes it.
    #[arg(long, env = "ANNEX_EDGE_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// Client connections open at once; more are closed on arrival.
    #[arg(long, env = "ANNEX_EDGE_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,
    /// How long a request's head may take to arrive, in milliseconds.
    #[arg(
        long,
        env = "ANNEX_EDGE_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,
    /// How long a connection may stay silent both ways, in seconds (above
    /// the execution deadline).
    #[arg(long, env = "ANNEX_EDGE_IDLE_TIMEOUT_SECS", default_value_t = 75)]
    pub idle_timeout_secs: u64,
    /// Debug streams one tenant may hold open at once (429 beyond).
    #[arg(
        long,
        env = "ANNEX_EDGE_DEBUG_STREAMS_PER_TENANT",
        default_value_t = 20
    )]
    pub debug_streams_per_tenant: usize,
    /// Debug streams one user (or API key) may hold open at once (429 beyond).
    #[arg(long, env = "ANNEX_EDGE_DEBUG_STREAMS_PER_USER", default_value_t = 5)]
    pub debug_streams_per_user: usize,
    /// Recent events a debug stream starts with (and a first poll answers
    /// with); at most 2000.
    #[arg(long, env = "ANNEX_EDGE_DEBUG_STREAM_TAIL", default_value_t = 200)]
    pub debug_stream_tail: u32,
    /// Log format.
    #[arg(long, env = "ANNEX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// Request handling limits.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_body_bytes: usize,
    pub timeout: Duration,
}

/// Everything an edge runs on, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub edge_id: String,
    /// One URL per replica, or one resolving to all of them.
    pub control_plane_urls: Vec<http::Uri>,
    pub control_plane_server_name: String,
    pub worker_server_name: Option<String>,
    /// Workers in this process (`annex dev`), reached without the network;
    /// empty for the edge binary.
    pub in_process: annex_ops::in_process::Endpoints,
    pub jwt: JwtVerifier,
    pub session_cookie: Option<String>,
    pub allowed_origins: Vec<String>,
    pub proxy_allowed_origins: Vec<String>,
    pub rate: RateSettings,
    pub policy: Policy,
    pub install_cache_ttl: Duration,
    pub api_key_cache_ttl: Duration,
    pub audit: AuditSettings,
    pub ui_store: UiStoreSettings,
    pub ui_policy: UiPolicy,
    /// Bytes of install resolutions cached.
    pub install_cache_max_bytes: usize,
    /// Bytes of API-key checks cached.
    pub api_key_cache_max_bytes: usize,
    /// Lookups per client.
    pub lookups: LookupSettings,
    /// A header a trusted proxy appends the client's address to.
    pub client_ip_header: Option<http::HeaderName>,
    pub connections: ConnectionSettings,
    pub debug_streams: StreamSettings,
}

/// The host of `https://host:port` (brackets of an IPv6 literal removed).
pub(crate) fn url_host(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(uri.host()?.trim_matches(['[', ']']).to_owned())
}

fn origins(list: &[String], flag: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for o in list
        .iter()
        .map(|o| o.trim().trim_end_matches('/'))
        .filter(|o| !o.is_empty())
    {
        anyhow::ensure!(
            o != "*" && o != "null",
            "{flag}: {o:?} is not allowed; list exact origins"
        );
        anyhow::ensure!(
            o.starts_with("https://") || o.starts_with("http://"),
            "{flag}: {o:?} is not an origin (scheme://host[:port])"
        );
        out.push(o.to_owned());
    }
    Ok(out)
}

impl Config {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let jwt = self.session.verifier()?;
        anyhow::ensure!(
            self.rate_capacity >= 1,
            "--rate-capacity must be at least 1"
        );
        anyhow::ensure!(
            self.rate_refill_per_sec.is_finite() && self.rate_refill_per_sec > 0.0,
            "--rate-refill-per-sec must be positive"
        );
        anyhow::ensure!(self.timeout_ms >= 1, "--timeout-ms must be positive");
        anyhow::ensure!(
            self.idle_timeout_secs.saturating_mul(1000) > self.timeout_ms,
            "--idle-timeout-secs must be longer than --timeout-ms (a call waits that long in silence)"
        );
        anyhow::ensure!(
            self.header_read_timeout_ms >= 1 && self.max_connections >= 1,
            "--header-read-timeout-ms and --max-connections must be positive"
        );
        anyhow::ensure!(
            self.lookup_burst >= 1 && self.lookup_per_sec.is_finite() && self.lookup_per_sec > 0.0,
            "--lookup-burst and --lookup-per-sec must be positive"
        );
        let client_ip_header = self
            .client_ip_header
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()))
            .transpose()
            .context("--client-ip-header is not a header name")?;
        let ui_hosts = self
            .ui_host_pattern
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(UiHostPattern::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--ui-host-pattern: {e}"))?;
        let control_plane_urls =
            annex_ops::upstream::parse_urls(&self.control_plane).context("--control-plane")?;
        let server_name = match &self.control_plane_server_name {
            Some(n) => n.clone(),
            None => url_host(&control_plane_urls[0].to_string())
                .context("--control-plane has no host")?,
        };
        Ok(Settings {
            edge_id: self.edge_id.clone(),
            control_plane_urls,
            control_plane_server_name: server_name,
            worker_server_name: self.worker_server_name.clone(),
            in_process: annex_ops::in_process::Endpoints::default(),
            jwt,
            session_cookie: self.session_cookie.clone().filter(|c| !c.is_empty()),
            allowed_origins: origins(&self.allowed_origins, "--allowed-origins")?,
            proxy_allowed_origins: origins(&self.proxy_allowed_origins, "--proxy-allowed-origins")?,
            rate: RateSettings {
                capacity: self.rate_capacity,
                refill_per_sec: self.rate_refill_per_sec,
            },
            policy: Policy {
                max_body_bytes: self.max_body_bytes,
                timeout: Duration::from_millis(self.timeout_ms),
            },
            install_cache_ttl: Duration::from_secs(self.install_cache_ttl_secs),
            api_key_cache_ttl: Duration::from_secs(self.api_key_cache_ttl_secs),
            audit: AuditSettings {
                buffer: self.audit_buffer.max(1),
                in_flight: self.audit_in_flight.max(1),
                ..AuditSettings::default()
            },
            ui_store: UiStoreSettings {
                root: self.ui_cache_dir.clone(),
                max_bytes: self.ui_cache_max_bytes,
            },
            ui_policy: UiPolicy {
                hosts: ui_hosts,
                ..UiPolicy::new(
                    self.ui_csp.clone(),
                    self.ui_frame_ancestors.clone(),
                    self.ui_max_file_bytes,
                )
            },
            install_cache_max_bytes: self.install_cache_max_bytes,
            api_key_cache_max_bytes: self.api_key_cache_max_bytes,
            lookups: LookupSettings {
                burst: self.lookup_burst,
                per_sec: self.lookup_per_sec,
            },
            client_ip_header,
            connections: ConnectionSettings {
                max_connections: self.max_connections,
                header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                // In-flight calls may take their whole deadline to finish.
                drain: Duration::from_millis(self.timeout_ms) + Duration::from_secs(1),
            },
            debug_streams: StreamSettings {
                per_tenant: self.debug_streams_per_tenant.max(1),
                per_user: self.debug_streams_per_user.max(1),
                tail: self.debug_stream_tail.min(crate::debug_stream::MAX_TAIL),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_origins_are_refused() {
        assert!(origins(&["*".into()], "x").is_err());
        assert!(origins(&["app.example.com".into()], "x").is_err());
        assert_eq!(
            origins(&["https://a.example/".into(), " ".into()], "x").expect("ok"),
            vec!["https://a.example".to_owned()]
        );
        assert_eq!(
            url_host("https://127.0.0.1:7443").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(url_host("https://[::1]:7443").as_deref(), Some("::1"));
    }

    fn parse(control_plane: &[&str]) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("hs256");
        std::fs::write(&secret, "s".repeat(32))?;
        let mut args = vec![
            "annex-edge".to_owned(),
            "--tls-ca=ca".into(),
            "--tls-cert=c".into(),
            "--tls-key=k".into(),
            format!("--jwt-hs256-secret-file={}", secret.display()),
        ];
        args.extend(control_plane.iter().map(|u| format!("--control-plane={u}")));
        <Config as clap::Parser>::try_parse_from(args)?.settings()
    }

    #[test]
    fn several_control_planes_come_from_repeated_flags_and_commas() {
        let s = parse(&[
            "https://cp-a:7443,https://cp-b:7443",
            "https://10.0.0.3:7443",
        ])
        .expect("valid");
        assert_eq!(s.control_plane_urls.len(), 3);
        assert_eq!(s.control_plane_server_name, "cp-a", "the first URL's host");
        assert!(parse(&["http://cp-a:7443"]).is_err(), "TLS only");
        assert!(parse(&[]).is_err(), "a control plane is required");
    }
}
