//! The Annex control plane: the registry of extensions and their signed
//! bundles, the trust bundle of publisher keys, per-tenant installs with
//! grants, config and sealed secrets, served over mTLS gRPC with per-role
//! access. It is the only process that talks to Postgres ([`store`]).
//!
//! Layout: domain logic in [`registry`], [`trust`] and [`installs`] works on
//! validated values and the [`store::Store`] trait; [`grpc`] decodes protobuf,
//! checks the caller's role, calls the domain logic and encodes; [`server`]
//! wires listeners, TLS, health, reflection and the admin listener.

pub mod apikeys;
pub mod config;
pub mod dispatch;
pub mod fleet;
pub mod grant;
pub mod grpc;
pub mod host;
pub mod installs;
pub mod metrics;
pub mod quota;
pub mod registry;
pub mod scheduler;
pub mod seal;
pub mod server;
pub mod storage;
pub mod store;
pub mod trust;

use std::sync::Arc;

use annex_proto::{AnnexError, ErrorCode};

pub use config::Config;
pub use server::{Listeners, run};

/// Shared state of one control-plane process.
#[derive(Clone)]
pub struct ControlPlane {
    pub store: Arc<dyn store::Store>,
    pub sealer: Arc<seal::Sealer>,
    pub limits: Limits,
    pub metrics: Arc<metrics::Metrics>,
    /// Install changes, for edges following `Dispatch.WatchRoutes`.
    pub invalidations: tokio::sync::broadcast::Sender<annex_proto::pb::InstallInvalidation>,
    /// Guest log events, for `HostServices.WatchLogs`.
    pub logs: tokio::sync::broadcast::Sender<annex_proto::pb::LogEvent>,
    pub host_app: host::HostAppConfig,
    /// Client for the host application; never follows redirects.
    pub http: reqwest::Client,
    /// Identity for calling workers (set by [`run`] from the server's own).
    pub worker_tls: Option<annex_ops::tls::TlsMaterial>,
    /// Channels to workers, health marks and rotation (see [`dispatch`]).
    workers: Arc<std::sync::OnceLock<annex_dispatch::Workers>>,
    /// Commands for connected workers (prewarm, trust changes).
    pub fleet_commands: tokio::sync::broadcast::Sender<annex_proto::pb::FleetCommand>,
    /// Commands for one worker: (worker id, command), e.g. prewarm a hash
    /// newly placed on it.
    pub worker_commands: tokio::sync::broadcast::Sender<(String, annex_proto::pb::FleetCommand)>,
    /// (content hash, worker id) pairs of the last placement this replica
    /// computed, to prewarm only what is newly placed.
    placed: Arc<parking_lot::Mutex<std::collections::HashSet<(String, String)>>>,
    /// Turns true when the process shuts down: long-lived streams (routes,
    /// heartbeats, logs) end so the server's graceful shutdown can finish.
    closing: tokio::sync::watch::Receiver<bool>,
    close: Arc<tokio::sync::watch::Sender<bool>>,
    /// Recent schedule mutations per install, for the scheduler's rate limit.
    schedule_mutations: Arc<scheduler::MutationLimiter>,
    /// Names this replica in `route_watchers` (a new UUID per process).
    pub replica_id: String,
    /// This replica's share of the quotas, for executions it dispatches.
    dispatch_quotas: quota::SharedDispatchQuotas,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("limits", &self.limits)
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
    pub scheduler: scheduler::SchedulerLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bundle_bytes: 200 * 1024 * 1024,
            unpack: annex_bundle::archive::Limits::default(),
            platform_egress_allowlist: Vec::new(),
            scheduler: scheduler::SchedulerLimits::default(),
        }
    }
}

impl ControlPlane {
    pub fn new(store: Arc<dyn store::Store>, sealer: seal::Sealer, limits: Limits) -> ControlPlane {
        let (invalidations, _) = tokio::sync::broadcast::channel(1024);
        let (logs, _) = tokio::sync::broadcast::channel(4096);
        annex_ops::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let (fleet_commands, _) = tokio::sync::broadcast::channel(1024);
        let (worker_commands, _) = tokio::sync::broadcast::channel(1024);
        let (close, closing) = tokio::sync::watch::channel(false);
        ControlPlane {
            worker_tls: None,
            workers: Arc::default(),
            fleet_commands,
            worker_commands,
            placed: Arc::default(),
            closing,
            close: Arc::new(close),
            schedule_mutations: Arc::default(),
            replica_id: uuid::Uuid::new_v4().to_string(),
            dispatch_quotas: Arc::default(),
            logs,
            host_app: host::HostAppConfig::new(),
            http,
            store,
            sealer: Arc::new(sealer),
            limits,
            metrics: Arc::new(metrics::Metrics::default()),
            invalidations,
        }
    }
}

impl ControlPlane {
    /// Ends the long-lived streams this process serves (see [`Self::closing`]).
    pub fn close_streams(&self) {
        let _ = self.close.send(true);
    }

    /// Resolves once [`Self::close_streams`] was called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.clone();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}

/// Maps a store failure to what the client sees; internal detail is logged
/// here, once, and never sent.
impl From<store::StoreError> for AnnexError {
    fn from(err: store::StoreError) -> Self {
        use store::StoreError as E;
        match err {
            E::VersionExists { version } => AnnexError::new(
                ErrorCode::ExtensionVersionAlreadyExists,
                format!(
                    "Version \"{version}\" already exists for this extension. Publish a new version and try again."
                ),
            ),
            E::AlreadyExists(what) => {
                AnnexError::new(ErrorCode::InvalidArgument, format!("{what} already exists"))
            }
            E::NotFound(what) => AnnexError::new(ErrorCode::NotFound, format!("{what} not found")),
            E::Unavailable(detail) => {
                tracing::warn!(error = %detail, "store unavailable");
                AnnexError::new(
                    ErrorCode::Unavailable,
                    "the registry database is unavailable; retry shortly",
                )
            }
            E::RevisionMismatch => {
                AnnexError::new(ErrorCode::RevisionMismatch, "revision mismatch")
            }
            E::QuotaExceeded(what) => AnnexError::new(ErrorCode::QuotaExceeded, what),
            E::InvalidData(detail) => {
                tracing::warn!(error = %detail, "the database refused a value");
                AnnexError::invalid("a value cannot be stored (the database refused it)")
            }
            E::Internal(detail) => {
                tracing::error!(error = %detail, "store failure");
                AnnexError::internal()
            }
        }
    }
}
