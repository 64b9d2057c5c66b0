//! Assembling a worker: the engine, linker, caches and executor from
//! [`Settings`], and serving the `Worker` service on a listener until a
//! shutdown signal. Library code binds nothing itself: callers pass the
//! listener (tests use `127.0.0.1:0`).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

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
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
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
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
