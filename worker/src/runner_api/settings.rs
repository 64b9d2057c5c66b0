//! The runner API's flags ([`RunnerApiConfig`], part of the worker's
//! `Config`) and their validated values ([`RunnerApiSettings`]). The Alga
//! settings keep the environment variables Alga's runner reads
//! (docs/design/alga-compatibility.md, "Configuration"), so an Alga
//! runner's environment configures an Annex worker unchanged; Annex's own
//! (listener, service token, TLS, idempotency bounds) are `ANNEX_WORKER_*`.
//! Values only: the token file and TLS files are read when the API starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::replay::ReplayConfig;

/// Flags of Alga's runner API on a worker.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Alga runner API")]
pub struct RunnerApiConfig {
    /// Serve Alga's runner HTTP API (`POST /v1/execute`, `GET /healthz`,
    /// `POST /warmup`) on this address; off when unset.
    #[arg(long, env = "ANNEX_WORKER_RUNNER_API_LISTEN")]
    pub runner_api_listen: Option<SocketAddr>,
    /// File holding the service token every `/v1/execute` and `/warmup`
    /// must carry in `x-runner-service-token` (required with the listener).
    #[arg(long, env = "ANNEX_WORKER_RUNNER_API_TOKEN_FILE")]
    pub(crate) runner_api_token_file: Option<PathBuf>,
    /// Certificate chain (PEM) to serve the runner API over TLS; plain HTTP
    /// (as Alga's runner) without it.
    #[arg(
        long,
        env = "ANNEX_WORKER_RUNNER_API_TLS_CERT",
        requires = "runner_api_tls_key"
    )]
    pub(crate) runner_api_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--runner-api-tls-cert`.
    #[arg(
        long,
        env = "ANNEX_WORKER_RUNNER_API_TLS_KEY",
        requires = "runner_api_tls_cert"
    )]
    pub(crate) runner_api_tls_key: Option<PathBuf>,
    /// How long an answer is replayed for a repeated `x-idempotency-key`,
    /// in seconds.
    #[arg(
        long,
        env = "ANNEX_WORKER_RUNNER_API_IDEMPOTENCY_TTL_SECS",
        default_value_t = 3600
    )]
    pub(crate) runner_api_idempotency_ttl_secs: u64,
    /// Answers kept for idempotent replay, at most.
    #[arg(
        long,
        env = "ANNEX_WORKER_RUNNER_API_IDEMPOTENCY_MAX_ENTRIES",
        default_value_t = 10_000
    )]
    pub(crate) runner_api_idempotency_max_entries: usize,
    /// Bytes of answers kept for idempotent replay, at most.
    #[arg(
        long,
        env = "ANNEX_WORKER_RUNNER_API_IDEMPOTENCY_MAX_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub(crate) runner_api_idempotency_max_bytes: usize,
    /// Alga's bundle store: bundles are read from
    /// `{base}/tenants/{tenant}/extensions/{extension}/sha256/{hex}/bundle.tar.zst`.
    /// Unset: every execution answers `engine_init_failed`, as Alga's does.
    #[arg(long, env = "BUNDLE_STORE_BASE")]
    pub(crate) bundle_store_base: Option<String>,
    /// Alga's host application for storage, scheduler, invoicing, clients
    /// and services (`/api/internal/ext-*`).
    #[arg(long, env = "STORAGE_API_BASE_URL")]
    pub(crate) storage_api_base_url: Option<String>,
    /// Used for the host application when `STORAGE_API_BASE_URL` is unset.
    #[arg(long, env = "REGISTRY_BASE_URL")]
    pub(crate) registry_base_url: Option<String>,
    /// `x-runner-auth` sent to the host application.
    #[arg(long, env = "RUNNER_STORAGE_API_TOKEN", hide_env_values = true)]
    pub(crate) runner_storage_api_token: Option<String>,
    /// Used as `x-runner-auth` when `RUNNER_STORAGE_API_TOKEN` is unset.
    #[arg(long, env = "RUNNER_SERVICE_TOKEN", hide_env_values = true)]
    pub(crate) runner_service_token: Option<String>,
    /// Base of the extensions' UI proxy routes (`ui-proxy.call-route`);
    /// unset: every route is `route-not-found`.
    #[arg(long, env = "UI_PROXY_BASE_URL")]
    pub(crate) ui_proxy_base_url: Option<String>,
    /// Time limit of one `ui-proxy.call-route`, in milliseconds.
    #[arg(long, env = "UI_PROXY_TIMEOUT_MS", default_value_t = 5000)]
    pub(crate) ui_proxy_timeout_ms: u64,
    /// Hosts the guests of runner-API executions may reach, comma-separated
    /// (`host` or `*.suffix`). Empty: none (Alga's empty list allows all).
    #[arg(long, env = "EXT_EGRESS_ALLOWLIST", value_delimiter = ',')]
    pub(crate) ext_egress_allowlist: Vec<String>,
    /// Reported by `/healthz` as `ext_cache_max_bytes`, as Alga's runner does.
    #[arg(long, env = "EXT_CACHE_MAX_BYTES")]
    pub(crate) ext_cache_max_bytes: Option<String>,
}

/// The runner API's validated settings.
#[derive(Debug, Clone)]
pub(crate) struct RunnerApiSettings {
    pub(crate) token_file: PathBuf,
    /// Certificate chain and key files: TLS instead of plain HTTP.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) replay: ReplayConfig,
    /// `None`: executions answer `engine_init_failed`.
    pub(crate) bundle_store: Option<url::Url>,
    pub(crate) host_app: HostAppSettings,
    pub(crate) egress_allowlist: Vec<String>,
    pub(crate) ext_cache_max_bytes: Option<String>,
}

/// How the runner API reaches Alga's host application.
#[derive(Debug, Clone)]
pub(crate) struct HostAppSettings {
    /// `STORAGE_API_BASE_URL` or `REGISTRY_BASE_URL`, without a trailing
    /// `/` or one trailing `/api`.
    pub(crate) base: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) ui_proxy_base: Option<url::Url>,
    pub(crate) ui_proxy_timeout: Duration,
    /// Every internal host-API call (Alga's runner: 30 s).
    pub(crate) timeout: Duration,
}

/// A runner API configuration the worker cannot start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunnerApiSettingsError {
    #[error(
        "--runner-api-listen needs --runner-api-token-file: the runner API requires a service token"
    )]
    NoToken,
    #[error("{flag}: {value:?} is not an http(s) URL")]
    Url { flag: &'static str, value: String },
    #[error(
        "EXT_EGRESS_ALLOWLIST: {0:?} is not a host or `*.suffix` (Annex has no allow-all entry)"
    )]
    Egress(String),
    #[error("the idempotency bounds (entries, bytes, ttl) must be positive")]
    Replay,
}

impl RunnerApiConfig {
    /// `None` when the runner API is off.
    pub(crate) fn settings(&self) -> Result<Option<RunnerApiSettings>, RunnerApiSettingsError> {
        if self.runner_api_listen.is_none() {
            return Ok(None);
        }
        let token_file = self
            .runner_api_token_file
            .clone()
            .ok_or(RunnerApiSettingsError::NoToken)?;
        let replay = ReplayConfig::new(
            self.runner_api_idempotency_max_entries,
            self.runner_api_idempotency_max_bytes,
            Duration::from_secs(self.runner_api_idempotency_ttl_secs),
        )
        .ok_or(RunnerApiSettingsError::Replay)?;
        Ok(Some(RunnerApiSettings {
            token_file,
            tls: self
                .runner_api_tls_cert
                .clone()
                .zip(self.runner_api_tls_key.clone()),
            replay,
            bundle_store: http_url("BUNDLE_STORE_BASE", self.bundle_store_base.as_deref())?,
            host_app: self.host_app()?,
            egress_allowlist: egress_allowlist(&self.ext_egress_allowlist)?,
            ext_cache_max_bytes: self.ext_cache_max_bytes.clone(),
        }))
    }

    fn host_app(&self) -> Result<HostAppSettings, RunnerApiSettingsError> {
        let (flag, base) = match (&self.storage_api_base_url, &self.registry_base_url) {
            (Some(b), _) if !b.trim().is_empty() => ("STORAGE_API_BASE_URL", Some(b.as_str())),
            (_, b) => ("REGISTRY_BASE_URL", b.as_deref()),
        };
        let base = http_url(flag, base)?.map(|u| trim_base(u.as_str()).to_string());
        let token = [&self.runner_storage_api_token, &self.runner_service_token]
            .into_iter()
            .flatten()
            .map(|t| t.trim().to_string())
            .find(|t| !t.is_empty());
        Ok(HostAppSettings {
            base,
            token,
            ui_proxy_base: http_url("UI_PROXY_BASE_URL", self.ui_proxy_base_url.as_deref())?,
            ui_proxy_timeout: Duration::from_millis(self.ui_proxy_timeout_ms.max(1)),
            timeout: Duration::from_secs(30),
        })
    }
}

/// An optional http(s) URL; blank is unset.
fn http_url(
    flag: &'static str,
    value: Option<&str>,
) -> Result<Option<url::Url>, RunnerApiSettingsError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(Some(u)),
        _ => Err(RunnerApiSettingsError::Url {
            flag,
            value: value.to_string(),
        }),
    }
}

/// Without a trailing `/` or one trailing `/api`, as Alga's runner trims
/// its host-API base.
pub(crate) fn trim_base(base: &str) -> &str {
    let base = base.trim_end_matches('/');
    base.strip_suffix("/api").unwrap_or(base)
}

/// Entries trimmed, blanks dropped; `*` alone (or any other entry with a
/// wildcard outside a leading `*.`) is refused rather than read as a host.
fn egress_allowlist(entries: &[String]) -> Result<Vec<String>, RunnerApiSettingsError> {
    let mut hosts = Vec::new();
    for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let host = entry.strip_prefix("*.").unwrap_or(entry);
        if host.is_empty() || host.contains(['*', '/']) || host.contains(char::is_whitespace) {
            return Err(RunnerApiSettingsError::Egress(entry.to_string()));
        }
        hosts.push(entry.to_string());
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        api: RunnerApiConfig,
    }

    fn parse(args: &[&str]) -> RunnerApiConfig {
        Flags::try_parse_from(std::iter::once("w").chain(args.iter().copied()))
            .expect("flags parse")
            .api
    }

    #[test]
    fn off_without_a_listener_and_a_token_is_required_with_one() {
        assert!(parse(&[]).settings().expect("valid").is_none());
        let no_token = parse(&["--runner-api-listen=127.0.0.1:8080"]).settings();
        assert_eq!(no_token.err(), Some(RunnerApiSettingsError::NoToken));
    }

    #[test]
    fn the_host_api_base_and_token_follow_algas_fallbacks() {
        let s = parse(&[
            "--runner-api-listen=127.0.0.1:8080",
            "--runner-api-token-file=t",
            "--registry-base-url=http://app:3000/api/",
            "--runner-service-token=svc",
        ])
        .settings()
        .expect("valid")
        .expect("on");
        assert_eq!(s.host_app.base.as_deref(), Some("http://app:3000"));
        assert_eq!(s.host_app.token.as_deref(), Some("svc"));
        assert!(s.bundle_store.is_none());
        let s = parse(&[
            "--runner-api-listen=127.0.0.1:8080",
            "--runner-api-token-file=t",
            "--registry-base-url=http://registry",
            "--storage-api-base-url=http://storage/",
            "--runner-storage-api-token=storage",
            "--runner-service-token=svc",
        ])
        .settings()
        .expect("valid")
        .expect("on");
        assert_eq!(s.host_app.base.as_deref(), Some("http://storage"));
        assert_eq!(s.host_app.token.as_deref(), Some("storage"));
    }

    #[test]
    fn bad_urls_and_allow_all_egress_fail_at_start() {
        let base = [
            "--runner-api-listen=127.0.0.1:8080",
            "--runner-api-token-file=t",
        ];
        let url = parse(&[base[0], base[1], "--bundle-store-base=ftp://x"]).settings();
        assert!(matches!(url, Err(RunnerApiSettingsError::Url { .. })));
        let all = parse(&[base[0], base[1], "--ext-egress-allowlist=a.com,*"]).settings();
        assert_eq!(all.err(), Some(RunnerApiSettingsError::Egress("*".into())));
        let ok = parse(&[base[0], base[1], "--ext-egress-allowlist= a.com, *.b.org ,"])
            .settings()
            .expect("valid")
            .expect("on");
        assert_eq!(ok.egress_allowlist, ["a.com", "*.b.org"]);
    }
}
