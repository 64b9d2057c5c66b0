//! Assembling a worker: the engine, linker, caches and executor from
//! [`Settings`], and serving the `Worker` service on a listener until a
//! shutdown signal. Library code binds nothing itself: callers pass the
//! listener (tests use `127.0.0.1:0`).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::admission::{Admission, AdmissionConfig};
use crate::backend::HostBackend;
use crate::bundles::{BundleSource, TrustSource};
use crate::cache::ComponentCache;
use crate::egress::{EgressClient, EgressConfig};
use crate::engine::{EngineConfig, WasmEngine};
use crate::execute::{ExecConfig, Executor, ExecutorParts};
use crate::grpc::WorkerService;
use crate::host::{self, Services};
use crate::metrics::Metrics;

/// Everything configurable about a worker, as values.
#[derive(Debug, Clone)]
pub struct Settings {
    pub worker_id: String,
    pub engine: EngineConfig,
    pub exec: ExecConfig,
    pub admission: AdmissionConfig,
    pub egress: EgressConfig,
    /// Compiled components kept in memory. A JS component's code is ~36 MB
    /// mapped; 64 of them fit comfortably in a worker's memory.
    pub memory_cache_entries: NonZeroUsize,
    /// Serialized artifacts; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            worker_id: "worker".to_string(),
            engine: EngineConfig::default(),
            exec: ExecConfig::default(),
            admission: AdmissionConfig::default(),
            egress: EgressConfig::default(),
            memory_cache_entries: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            cache_dir: None,
        }
    }
}

/// Where a worker's bundles, trust keys and host services come from.
pub struct Sources {
    pub backend: Arc<dyn HostBackend>,
    pub bundles: Arc<dyn BundleSource>,
    pub trust: Arc<dyn TrustSource>,
}

/// Builds the engine and executor.
pub fn build(
    settings: &Settings,
    sources: Sources,
    metrics: Metrics,
) -> anyhow::Result<Arc<Executor>> {
    let engine = WasmEngine::new(&settings.engine)?;
    tracing::info!(
        allocator = ?engine.allocator(),
        compatibility = engine.compatibility_hash(),
        "wasmtime engine ready"
    );
    let linker = host::linker(engine.engine())?;
    let cache = ComponentCache::new(
        engine.clone(),
        linker,
        settings.memory_cache_entries,
        settings.cache_dir.clone(),
    )?;
    let services = Arc::new(Services {
        backend: sources.backend,
        egress: Arc::new(EgressClient::new(settings.egress.clone())),
    });
    // Never admit more executions than the pool has instance slots (each
    // execution holds one component instance and one async stack).
    let mut admission = settings.admission.clone();
    if engine.allocator() == crate::engine::Allocator::Pooling {
        let pool = &settings.engine.pool;
        let slots = pool.total_component_instances.min(pool.total_stacks) as usize;
        admission.capacity = admission.capacity.min(slots.max(1));
    }
    let mut exec = settings.exec.clone();
    // A request may never be granted more memory than a pool slot holds.
    let pool_mb =
        u32::try_from(settings.engine.pool.max_memory_size / (1024 * 1024)).unwrap_or(u32::MAX);
    exec.max_memory_mb = exec.max_memory_mb.min(pool_mb);
    exec.default_memory_mb = exec.default_memory_mb.min(exec.max_memory_mb);
    Ok(Arc::new(Executor::new(ExecutorParts {
        engine,
        cache,
        services,
        bundles: sources.bundles,
        trust: sources.trust,
        admission: Admission::new(admission),
        config: exec,
        metrics,
        worker_id: settings.worker_id.clone(),
    })?))
}

/// Serves the `Worker` service (plaintext) on `listener` until `shutdown`.
/// The binary serves it with mTLS and the role interceptor instead.
pub async fn serve_plaintext(
    executor: Arc<Executor>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(WorkerService::new(executor).into_server())
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

/// Accepted connections with TCP_NODELAY: `Server::tcp_nodelay` only applies
/// to listeners tonic binds itself, and with Nagle a response split over two
/// writes can wait for the peer's delayed ACK.
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Roles that may call the `Worker` service.
pub const CALLER_ROLES: &[annex_ops::Role] =
    &[annex_ops::Role::Edge, annex_ops::Role::ControlPlane];

/// Serves the `Worker` service with mTLS on `listener` until `shutdown`:
/// a client certificate signed by the CA is required, and only the edge and
/// control-plane roles are admitted.
pub async fn serve_tls(
    executor: Arc<Executor>,
    listener: TcpListener,
    tls: &annex_ops::tls::TlsMaterial,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = tonic::service::interceptor::InterceptedService::new(
        WorkerService::new(executor).into_server(),
        annex_ops::tls::authenticate(CALLER_ROLES),
    );
    tonic::transport::Server::builder()
        .tls_config(tls.server_config())?
        .add_service(service)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// Bound sockets for a worker process.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

/// How long trust keys are cached: bounds how long a revoked key still
/// admits new loads.
const TRUST_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a whole worker process from its configuration: sources (the control
/// plane, or a bundle directory and trust file), the executor, fleet
/// membership, the admin listener and the mTLS `Worker` server. On
/// `shutdown` it reports not-ready and heartbeats `draining` at once, keeps
/// serving the calls that still arrive for the propagation window, then
/// refuses new ones with UNAVAILABLE, lets in-flight executions finish up to
/// the grace period and returns. Used by the binary and by
/// `annex dev`.
pub async fn run(
    config: &crate::config::Config,
    tls: annex_ops::tls::TlsMaterial,
    listeners: Listeners,
    admin: annex_ops::admin::AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use std::time::Duration;

    use anyhow::Context as _;
    use tonic::transport::Channel;

    use crate::backend::{GrpcHostBackend, NoHostBackend};
    use crate::bundles::{DirBundleSource, GrpcBundleSource, GrpcTrust, StaticTrust};
    use crate::fleet;

    let settings = config.settings()?;
    let mut fleet_channel = None;
    let mut grpc_trust = None;
    let sources = match &config.control_plane_url {
        Some(url) => {
            let channel = Channel::from_shared(url.clone())
                .context("parsing the control plane URL")?
                .tls_config(tls.client_config(&config.control_plane_name))
                .context("configuring TLS to the control plane")?
                .connect_lazy();
            let trust = Arc::new(GrpcTrust::new(channel.clone(), TRUST_TTL));
            fleet_channel = Some(channel.clone());
            grpc_trust = Some(trust.clone());
            Sources {
                backend: Arc::new(GrpcHostBackend::new(channel.clone())),
                bundles: Arc::new(GrpcBundleSource::new(channel)),
                trust,
            }
        }
        None => {
            let (Some(dir), Some(trust_file)) = (&config.bundle_dir, &config.trust_file) else {
                anyhow::bail!("--bundle-dir and --trust-file are required without a control plane");
            };
            let trust = std::fs::read(trust_file).context("reading the trust file")?;
            let trust = serde_json::from_slice(&trust).context("parsing the trust file")?;
            Sources {
                backend: Arc::new(NoHostBackend),
                bundles: Arc::new(DirBundleSource::new(dir)),
                trust: Arc::new(StaticTrust(Arc::new(trust))),
            }
        }
    };

    let metrics = admin.with_registry(Metrics::register);
    let executor = build(&settings, sources, metrics).context("building the worker")?;

    let admin_listener = listeners.admin;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Fleet membership: stops (with a final draining heartbeat) as soon as
    // shutdown begins, so no new work is placed here.
    let (fleet_stop_tx, fleet_stop_rx) = tokio::sync::watch::channel(false);
    let fleet_task = fleet_channel.map(|channel| {
        let membership = fleet::Membership {
            channel,
            executor: executor.clone(),
            trust: grpc_trust.clone(),
            advertise: config.advertise_address.clone().unwrap_or_else(|| {
                let mut addr = config.grpc_listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                addr.to_string()
            }),
        };
        tokio::spawn(fleet::run(membership, fleet_stop_rx))
    });
    let admin_task = {
        let admin = admin.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let _ = annex_ops::admin::serve(admin_listener, admin, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
        })
    };

    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let propagation = Duration::from_millis(config.drain_propagation_ms);
    let drain_executor = executor.clone();
    let drain_admin = admin.clone();
    let drain = async move {
        shutdown.await;
        // 1. Leave the fleet: the next heartbeat (sent now) says draining,
        //    so the routing snapshot drops this worker; calls already on
        //    their way are still served while the snapshot propagates.
        tracing::info!(?propagation, "shutting down: leaving the fleet");
        drain_admin.set_ready(false);
        drain_executor.leave();
        tokio::time::sleep(propagation).await;
        // 2. Refuse new calls with UNAVAILABLE (callers retry elsewhere) and
        //    let in-flight executions finish, up to the grace period.
        tracing::info!("shutting down: draining");
        drain_executor.drain();
        let deadline = tokio::time::Instant::now() + grace;
        while drain_executor.admission().running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // 3. Final heartbeat, then the server stops.
        let _ = fleet_stop_tx.send(true);
    };
    admin.set_ready(true);
    tracing::info!(listen = %config.grpc_listen, worker = %config.worker_id, "worker serving");
    serve_tls(executor, listeners.grpc, &tls, drain)
        .await
        .context("serving gRPC")?;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    if let Some(task) = fleet_task {
        let _ = task.await;
    }
    Ok(())
}
