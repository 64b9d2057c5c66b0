//! Assembling a worker: the engine, linker, caches and executor from
//! [`ExecutorSettings`], serving the `Worker` service on a listener until a
//! shutdown signal, and [`run`], a whole worker process from [`Settings`]
//! (with Alga's runner API on its own listener when it is on).
//! Library code binds nothing itself and installs no signal handler:
//! callers pass the listeners (tests use `127.0.0.1:0`) and the shutdown
//! future.

use std::sync::Arc;
use std::time::Duration;

use annex_ops::serve::Io;
use annex_ops::tls::{Tls, TlsMaterial};
use annex_ops::upstream::{Upstream, UpstreamSettings};
use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::transport::Channel;

use crate::admission::Admission;
use crate::backend::{GrpcHostBackend, HostBackend, NoHostBackend};
use crate::bundles::{
    BundleSource, DirBundleSource, GrpcBundleSource, NoBundleSource, TrustSource,
};
use crate::cache::{CacheParts, ComponentCache};
use crate::egress::EgressClient;
use crate::engine::{Allocator, Tier, WasmEngine};
use crate::execute::{Executor, ExecutorParts};
use crate::fleet;
use crate::grpc::WorkerService;
use crate::host::{self, Services};
use crate::loader::Loader;
use crate::logs::LogRates;
use crate::metrics::Metrics;
use crate::runner_api::{self, RunnerApi};
use crate::settings::{ExecutorSettings, Origin, Settings, ShutdownTiming};
use crate::trust::{GrpcTrust, StaticTrust};

/// Where a worker's bundles, trust keys and host services come from.
pub struct Sources {
    pub backend: Arc<dyn HostBackend>,
    pub bundles: Arc<dyn BundleSource>,
    pub trust: Arc<dyn TrustSource>,
}

/// Builds the engine and executor.
pub fn build(
    settings: &ExecutorSettings,
    sources: Sources,
    metrics: Metrics,
) -> anyhow::Result<Arc<Executor>> {
    let engine = WasmEngine::new(&settings.engine, settings.compile.tiering.uses_winch())?;
    tracing::info!(
        allocator = ?engine.allocator(),
        compatibility = engine.compatibility_hash(),
        "wasmtime engine ready"
    );
    let linker = host::linker(engine.engine())?;
    let winch_linker = match engine.engine_for(Tier::Winch) {
        Some(winch) => Some(host::linker(winch)?),
        None => None,
    };
    let cache = ComponentCache::new(CacheParts {
        engine: engine.clone(),
        linker,
        winch_linker,
        capacity: settings.memory_cache_entries,
        disk: settings.cache_dir.clone(),
        compile: settings.compile,
        metrics: metrics.compile.clone(),
    })?;
    tracing::info!(
        concurrency = settings.compile.concurrency,
        memory_budget_bytes = settings.compile.memory_budget_bytes,
        wait_ms = u64::try_from(settings.compile.wait.as_millis()).unwrap_or(u64::MAX),
        tiering = ?settings.compile.tiering,
        winch_min_bytes = settings.compile.winch_min_bytes,
        "compile queue ready"
    );
    let services = Arc::new(Services {
        backend: sources.backend,
        egress: Arc::new(EgressClient::new(settings.egress.clone())),
        log_rates: Arc::new(LogRates::new(settings.log_rates)),
    });
    // Never admit more executions than the pool has instance slots (each
    // execution holds one component instance and one async stack).
    let mut admission = settings.admission.clone();
    if engine.allocator() == Allocator::Pooling {
        let pool = &settings.engine.pool;
        let slots = pool.total_component_instances.min(pool.total_stacks) as usize;
        admission.capacity = admission.capacity.min(slots.max(1));
    }
    let mut limits = settings.limits.clone();
    // A request may never be granted more memory than a pool slot holds.
    let pool_mb =
        u32::try_from(settings.engine.pool.max_memory_size / (1024 * 1024)).unwrap_or(u32::MAX);
    limits.max_memory_mb = limits.max_memory_mb.min(pool_mb);
    limits.default_memory_mb = limits.default_memory_mb.min(limits.max_memory_mb);
    Ok(Arc::new(Executor::new(ExecutorParts {
        engine,
        loader: Loader::new(cache, sources.bundles, sources.trust),
        services,
        admission: Admission::new(admission),
        limits,
        metrics,
        worker_id: settings.worker_id.clone(),
    })?))
}

/// Serves the `Worker` service (plaintext) on `listener` until `shutdown`,
/// for tests only. The binary serves it with mTLS and the role interceptor
/// instead.
#[cfg(feature = "testing")]
pub(crate) async fn serve_plaintext(
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
#[cfg(feature = "testing")]
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Roles that may call the `Worker` service.
const CALLER_ROLES: &[annex_ops::Role] = &[annex_ops::Role::Edge, annex_ops::Role::ControlPlane];

/// Serves the `Worker` service with mTLS on `listener` until `shutdown`:
/// a client certificate signed by the CA is required, and only the edge and
/// control-plane roles are admitted. The material is fixed; [`run`] serves
/// with certificates reloaded from their files.
pub async fn serve_tls(
    executor: Arc<Executor>,
    listener: TcpListener,
    tls: &TlsMaterial,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = Tls::new(tls.clone()).context("loading the TLS material")?;
    serve_mtls(executor, listener, tls, shutdown).await
}

/// [`serve_tls`] with `tls` read per handshake (reloaded certificates reach
/// new connections).
async fn serve_mtls(
    executor: Arc<Executor>,
    listener: TcpListener,
    tls: Tls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = tonic::service::interceptor::InterceptedService::new(
        WorkerService::new(executor).into_server(),
        annex_ops::tls::authenticate(CALLER_ROLES),
    );
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(annex_ops::tls::incoming(listener, tls), shutdown)
        .await?;
    Ok(())
}

/// Bound sockets for a worker process.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
    /// Alga's runner API; required exactly when the settings turn it on.
    pub runner_api: Option<TcpListener>,
}

/// How often the trust keys are listed again in the background: bounds how
/// long a revoked key still admits new loads when the control plane's
/// announcement of the change does not reach this worker.
const TRUST_REFRESH: Duration = Duration::from_secs(10);
/// Deadline of connecting to the control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on the control-plane connection, and how long one may go
/// unanswered before the connection counts as dead.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The sources, and the fleet connection when there is a control plane.
struct Connected {
    sources: Sources,
    fleet: Option<(Channel, Arc<GrpcTrust>)>,
    /// The trust keys the runner API verifies signatures with, if any.
    runner_trust: Option<Arc<dyn TrustSource>>,
}

/// Reads a trust bundle file.
fn read_trust(path: &std::path::Path) -> anyhow::Result<Arc<annex_bundle::TrustBundle>> {
    let trust = std::fs::read(path).context("reading the trust file")?;
    Ok(Arc::new(
        serde_json::from_slice(&trust).context("parsing the trust file")?,
    ))
}

/// Opens the sources `origin` names (the control plane's replicas connect
/// lazily, with deadlines and keep-alive pings: bundle, trust and
/// host-service calls spread over them, the heartbeat stream stays on one; a
/// local trust file is read now).
fn connect(
    origin: &Origin,
    tls: &Tls,
    trust_max_age: Duration,
    in_process: Option<&annex_ops::in_process::Endpoints>,
) -> anyhow::Result<Connected> {
    match origin {
        Origin::ControlPlane { urls, name } => {
            let mut upstream = UpstreamSettings::new(urls.clone(), Some(name.clone()));
            upstream.connect_timeout = CONNECT_TIMEOUT;
            upstream.keepalive = KEEP_ALIVE_INTERVAL;
            upstream.keepalive_timeout = KEEP_ALIVE_TIMEOUT;
            let mut upstream = Upstream::new(upstream, tls.clone())
                .context("configuring the control-plane connection")?;
            // One control plane in this process (`annex dev`): bundles,
            // trust and host calls go to its services directly.
            if let (Some(endpoints), [url]) = (in_process, urls.as_slice())
                && let Some(authority) = url.authority()
            {
                upstream = upstream.prefer_in_process(
                    endpoints.clone(),
                    authority.as_str(),
                    annex_ops::Role::Worker,
                );
            }
            let trust = Arc::new(GrpcTrust::with_max_age(
                upstream.clone(),
                TRUST_REFRESH,
                trust_max_age,
            ));
            Ok(Connected {
                sources: Sources {
                    backend: Arc::new(GrpcHostBackend::new(upstream.clone())),
                    bundles: Arc::new(GrpcBundleSource::new(upstream.clone())),
                    trust: trust.clone(),
                },
                runner_trust: Some(trust.clone()),
                fleet: Some((upstream.stream_channel(), trust)),
            })
        }
        Origin::Local {
            bundle_dir,
            trust_file,
        } => {
            let trust = Arc::new(StaticTrust(read_trust(trust_file)?));
            Ok(Connected {
                sources: Sources {
                    backend: Arc::new(NoHostBackend),
                    bundles: Arc::new(DirBundleSource::new(bundle_dir)),
                    trust: trust.clone(),
                },
                runner_trust: Some(trust),
                fleet: None,
            })
        }
        Origin::RunnerApiOnly { trust_file } => {
            let keys = match trust_file {
                Some(path) => read_trust(path)?,
                None => Arc::default(),
            };
            let trust = Arc::new(StaticTrust(keys));
            Ok(Connected {
                sources: Sources {
                    backend: Arc::new(NoHostBackend),
                    bundles: Arc::new(NoBundleSource),
                    trust: trust.clone(),
                },
                runner_trust: trust_file.as_ref().map(|_| trust as Arc<dyn TrustSource>),
                fleet: None,
            })
        }
    }
}

/// Runs a whole worker process: sources (the control plane, or a bundle
/// directory and trust file), the executor, fleet membership, the admin
/// listener and the mTLS `Worker` server. On `shutdown` it reports
/// not-ready and heartbeats `draining` at once, keeps serving the calls
/// that still arrive for the propagation window, then refuses new ones with
/// UNAVAILABLE, lets in-flight executions finish up to the grace period and
/// returns. Used by the binary and by `annex dev`.
pub async fn run(
    settings: Settings,
    io: Io<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Io {
        tls,
        listeners,
        admin,
    } = io;
    // Certificates are reloaded when their files change (cert-manager
    // renews them in place); new connections use the current ones.
    let tls = Tls::new(tls).context("loading the TLS certificate, key and CA")?;
    tls.watch(&admin);
    let connected = connect(
        &settings.origin,
        &tls,
        settings.trust_max_age,
        settings.in_process.as_ref(),
    )?;
    let metrics = admin.with_registry(Metrics::register);
    let mut executor_settings = settings.executor.clone();
    deny_platform(&mut executor_settings, &settings, &listeners);
    let executor =
        build(&executor_settings, connected.sources, metrics).context("building the worker")?;
    let runner_api = match (&settings.runner_api, listeners.runner_api) {
        (Some(api), Some(listener)) => {
            let parts = runner_api::Parts {
                executor: executor.clone(),
                trust: connected.runner_trust,
                cache_dir: settings.executor.cache_dir.clone(),
            };
            let state = admin.with_registry(|r| RunnerApi::new(api, parts, Some(r)))?;
            Some((Arc::new(state), api.clone(), listener))
        }
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("the runner API is on but has no listener"),
        (None, Some(_)) => anyhow::bail!("a runner API listener was given but the API is off"),
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Fleet membership: stops (with a final draining heartbeat) as soon as
    // shutdown begins, so no new work is placed here.
    let (fleet_stop_tx, fleet_stop_rx) = tokio::sync::watch::channel(false);
    let fleet_task = connected.fleet.map(|(channel, trust)| {
        let membership = fleet::Membership {
            channel,
            executor: executor.clone(),
            trust: Some(trust),
            advertise: settings.advertise_address.clone(),
        };
        tokio::spawn(fleet::run(membership, fleet_stop_rx))
    });
    let runner_api_task = runner_api.map(|(state, api, listener)| {
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(error) = runner_api::serve(state, &api, listener, stopped).await {
                tracing::error!(error = %format!("{error:#}"), "runner API stopped");
            }
        })
    });
    let admin_task = {
        let admin = admin.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let _ = annex_ops::admin::serve(listeners.admin, admin, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
        })
    };

    let drain = {
        let executor = executor.clone();
        let admin = admin.clone();
        let timing = settings.shutdown;
        async move {
            shutdown.await;
            drain(&executor, &admin, timing).await;
            // Final heartbeat, then the server stops.
            let _ = fleet_stop_tx.send(true);
        }
    };
    admin.set_ready(true);
    let listen = listeners
        .grpc
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    tracing::info!(%listen, worker = %settings.executor.worker_id, "worker serving");
    // Callers in this process reach the same service without the network,
    // for as long as the mTLS server runs.
    let in_process = settings.in_process.as_ref().map(|endpoints| {
        // The same role check as the mTLS server's.
        endpoints.register(
            &settings.advertise_address,
            tonic::service::interceptor::InterceptedService::new(
                WorkerService::new(executor.clone()).into_server(),
                annex_ops::tls::authenticate(CALLER_ROLES),
            ),
        )
    });
    serve_mtls(executor, listeners.grpc, tls, drain)
        .await
        .context("serving gRPC")?;
    drop(in_process);
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    if let Some(task) = runner_api_task {
        let _ = task.await;
    }
    if let Some(task) = fleet_task {
        let _ = task.await;
    }
    Ok(())
}

/// Adds this worker's listeners, its advertised address and the control
/// plane's URLs to the addresses guests may never reach.
fn deny_platform(executor: &mut ExecutorSettings, settings: &Settings, listeners: &Listeners) {
    let deny = &mut executor.egress.deny;
    let runner_api = listeners.runner_api.as_ref();
    for listener in [&listeners.grpc, &listeners.admin]
        .into_iter()
        .chain(runner_api)
    {
        if let Ok(addr) = listener.local_addr() {
            deny.listener(addr);
        }
    }
    let mut names = vec![settings.advertise_address.clone()];
    if let Origin::ControlPlane { urls, .. } = &settings.origin {
        for url in urls {
            if let Some(host) = url.host() {
                names.push(format!("{host}:{}", url.port_u16().unwrap_or(443)));
            }
        }
    }
    for name in names {
        if let Err(error) = deny.add(&name) {
            tracing::warn!(%error, "not a host:port; guests are not kept from it");
        }
    }
}

/// The shutdown sequence, up to the point where the server may stop.
async fn drain(executor: &Executor, admin: &annex_ops::admin::AdminState, timing: ShutdownTiming) {
    // 1. Leave the fleet: the next heartbeat (sent now) says draining, so
    //    the routing snapshot drops this worker; calls already on their way
    //    are still served while the snapshot propagates.
    tracing::info!(propagation = ?timing.propagation, "shutting down: leaving the fleet");
    admin.set_ready(false);
    executor.drain_state().leave();
    tokio::time::sleep(timing.propagation).await;
    // 2. Refuse new calls with UNAVAILABLE (callers retry elsewhere) and let
    //    in-flight executions finish, up to the grace period.
    tracing::info!("shutting down: draining");
    executor.drain_state().drain();
    let deadline = tokio::time::Instant::now() + timing.grace;
    while executor.admission().running() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
