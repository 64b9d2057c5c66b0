//! An edge in-process: `annex_edge::run` on `127.0.0.1:0` in front of a
//! [`ControlPlane`], with its certificate from that control plane's CA, an
//! HS256 session secret tests sign tokens with ([`sign_session`]), one
//! allowed origin ([`ORIGIN`]) and a UI cache in a temporary directory.
//!
//! It starts the edge only through its `run`; which claims a token carries
//! and which extensions exist is the calling test's business.

use std::net::SocketAddr;
use std::time::Duration;

use annex_edge::jwt::{JwtKey, SigningKey};
use annex_edge::{
    AuditSettings, JwtVerifier, Policy, RateSettings, Settings, UiPolicy, UiStoreSettings,
};
use annex_ops::Role;
use annex_ops::admin::AdminState;
use annex_ops::serve::Io;

use crate::control_plane::ControlPlane;
use crate::http::Resp;
use crate::running::{self, Running};

/// The HS256 secret session tokens are signed with.
pub const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-edge-tests";
/// The JWT audience the edge accepts.
pub const AUDIENCE: &str = "annex";
/// The session cookie the edge reads a token from.
pub const SESSION_COOKIE: &str = "annex_session";
/// The one origin allowed for `/api/ext` and `/api/ext-proxy`.
pub const ORIGIN: &str = "https://app.example.com";
/// The largest UI file the edge serves, small so a test bundle can hold a
/// bigger one.
pub const UI_MAX_FILE: u64 = 2048;

/// How long the edge may take to report ready: its first routing snapshot
/// from a control plane on loopback.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Signs `claims` as a session token the edge accepts (given an `aud` of
/// [`AUDIENCE`] and an `exp` in the future).
pub fn sign_session(claims: &serde_json::Value) -> String {
    SigningKey::hs256(HS_SECRET)
        .and_then(|k| k.sign(claims))
        .unwrap_or_else(|e| panic!("signing a session: {e}"))
}

/// Edge settings a test may change.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    pub rate: RateSettings,
    pub max_body_bytes: usize,
    pub timeout: Duration,
    pub audit_buffer: usize,
    pub audit_batch: usize,
    /// Caches, budgets, connections and UI hosts (the hardening tests
    /// tighten them).
    pub limits: EdgeLimits,
    /// How sessions verify (default: the HS256 secret [`HS_SECRET`],
    /// audience [`AUDIENCE`], no leeway).
    pub jwt: Option<JwtVerifier>,
}

/// The edge's bounds on what a caller can make it hold.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// The UI cache's root (default: a fresh temporary directory).
    pub ui_dir: Option<std::path::PathBuf>,
    pub ui_hosts: Option<annex_edge::UiHostPattern>,
    pub client_ip_header: Option<&'static str>,
    pub install_cache_max_bytes: usize,
    pub api_key_cache_max_bytes: usize,
    pub lookups: annex_edge::LookupSettings,
    pub connections: annex_edge::ConnectionSettings,
    pub debug_streams: annex_edge::StreamSettings,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            ui_dir: None,
            ui_hosts: None,
            client_ip_header: None,
            install_cache_max_bytes: 16 * 1024 * 1024,
            api_key_cache_max_bytes: 4 * 1024 * 1024,
            lookups: annex_edge::LookupSettings::default(),
            connections: annex_edge::ConnectionSettings::default(),
            debug_streams: annex_edge::StreamSettings::default(),
        }
    }
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            rate: RateSettings {
                capacity: 1000,
                refill_per_sec: 1000.0,
            },
            max_body_bytes: 64 * 1024,
            timeout: Duration::from_secs(1),
            audit_buffer: 1024,
            audit_batch: 64,
            limits: EdgeLimits::default(),
            jwt: None,
        }
    }
}

/// A running edge; dropping it stops it.
pub struct Edge {
    /// The public HTTP listener.
    pub http: SocketAddr,
    pub admin: SocketAddr,
    _ui_dir: tempfile::TempDir,
    running: Running,
}

impl Edge {
    /// Starts an edge following `cp` and waits until it reports ready.
    pub async fn start(cp: &ControlPlane, opts: EdgeOptions) -> Edge {
        let ui_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let settings = settings(cp, opts, ui_dir.path());
        let tls = cp
            .ca
            .issue(Role::Edge, "edge")
            .unwrap_or_else(|e| panic!("edge certificate: {e}"));
        let (http, admin) = (running::bind().await, running::bind().await);
        let (http_addr, admin_addr) = (running::local_addr(&http), running::local_addr(&admin));
        let io = Io {
            tls,
            listeners: annex_edge::Listeners { http, admin },
            admin: AdminState::new(),
        };
        let mut running =
            Running::spawn("edge", |shutdown| annex_edge::run(settings, io, shutdown));
        running.wait_ready(admin_addr, READY_WITHIN).await;
        Edge {
            http: http_addr,
            admin: admin_addr,
            _ui_dir: ui_dir,
            running,
        }
    }

    /// One request to the public listener.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        crate::http::send(self.http, method, path, headers, body).await
    }

    /// Stops at once.
    pub fn stop(&mut self) {
        self.running.stop();
    }

    /// Stops gracefully and returns what `run` returned.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.running.shutdown().await
    }
}

fn settings(cp: &ControlPlane, opts: EdgeOptions, ui_dir: &std::path::Path) -> Settings {
    let limits = opts.limits;
    Settings {
        edge_id: "edge-test".into(),
        control_plane_urls: vec![
            cp.url()
                .parse()
                .unwrap_or_else(|e| panic!("control-plane URL: {e}")),
        ],
        control_plane_server_name: "localhost".into(),
        worker_server_name: None,
        in_process: annex_ops::in_process::Endpoints::default(),
        jwt: opts.jwt.unwrap_or_else(|| JwtVerifier {
            keys: vec![JwtKey::hs256(HS_SECRET).unwrap_or_else(|e| panic!("session key: {e}"))],
            audience: AUDIENCE.into(),
            issuers: vec![],
            leeway_secs: 0,
            jwks: None,
        }),
        session_cookie: Some(SESSION_COOKIE.into()),
        allowed_origins: vec![ORIGIN.into()],
        proxy_allowed_origins: vec![ORIGIN.into()],
        rate: opts.rate,
        policy: Policy {
            max_body_bytes: opts.max_body_bytes,
            timeout: opts.timeout,
        },
        install_cache_ttl: Duration::from_secs(30),
        api_key_cache_ttl: Duration::from_secs(30),
        audit: AuditSettings {
            buffer: opts.audit_buffer,
            batch: opts.audit_batch,
            in_flight: 2,
            flush_interval: Duration::from_millis(50),
        },
        ui_store: UiStoreSettings {
            root: limits.ui_dir.unwrap_or_else(|| ui_dir.to_owned()),
            max_bytes: 64 * 1024 * 1024,
        },
        ui_policy: UiPolicy {
            hosts: limits.ui_hosts,
            ..UiPolicy::new(None, None, Some(UI_MAX_FILE))
        },
        install_cache_max_bytes: limits.install_cache_max_bytes,
        api_key_cache_max_bytes: limits.api_key_cache_max_bytes,
        lookups: limits.lookups,
        client_ip_header: limits.client_ip_header.map(http::HeaderName::from_static),
        connections: limits.connections,
        debug_streams: limits.debug_streams,
    }
}
