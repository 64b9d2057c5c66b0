//! Runs a control plane: builds the domain types from [`Settings`] once, serves
//! the gRPC services behind mTLS with per-service role checks,
//! `grpc.health.v1`, reflection and the admin listener, and runs the
//! background loops (scheduler, placement, quota participation, expiry of
//! idempotency records, the blob orphan collector). A server is
//! a function of (settings, TLS material, listeners, shutdown): it binds
//! nothing and installs no signal handlers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use annex_ops::Role;
use annex_ops::serve::Io;
use annex_ops::tls::authenticate;
use annex_proto::pb;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::Settings;
use crate::apikeys::{ApiKeys, Audit};
use crate::blobs::Collector;
use crate::captures::Captures;
use crate::dispatch::Dispatcher;
use crate::fleet::Fleet;
use crate::grant::GrantSigner;
use crate::grpc::Closing;
use crate::grpc::captures::CapturesService;
use crate::grpc::dispatch::DispatchService;
use crate::grpc::fleet::FleetService;
use crate::grpc::host::HostService;
use crate::grpc::installs::InstallsService;
use crate::grpc::registry::RegistryService;
use crate::grpc::trust::TrustService;
use crate::host::Host;
use crate::idempotency::Idempotency;
use crate::installs::{Installs, InstallsParts};
use crate::logs::DebugLogs;
use crate::metrics::Metrics;
use crate::quota::Quotas;
use crate::registry::Registry;
use crate::rollouts::Rollouts;
use crate::scheduler::Scheduler;
use crate::storage::Storage;
use crate::store::Store;
use crate::trust::Trust;

/// Largest gRPC message: a publish chunk or fetch chunk is far smaller, but
/// config maps and listings can be large.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

const ANY_ROLE: &[Role] = &[Role::Operator, Role::Edge, Role::Worker, Role::ControlPlane];
const INSTALL_ROLES: &[Role] = &[Role::Operator, Role::Edge, Role::ControlPlane];
const DISPATCH_ROLES: &[Role] = &[Role::Operator, Role::Edge, Role::ControlPlane];
const FLEET_ROLES: &[Role] = &[Role::Worker];
const CAPTURE_ROLES: &[Role] = &[Role::Operator];
const HOST_ROLES: &[Role] = &[Role::Worker, Role::Edge, Role::Operator];

/// How long in-flight calls may take to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Bound sockets for a control plane.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

/// The domain types of one control-plane process, each built once here and
/// shared by the gRPC services and loops that call it.
struct ControlPlane {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    grants: Arc<GrantSigner>,
    registry: Arc<Registry>,
    trust: Arc<Trust>,
    installs: Arc<Installs>,
    rollouts: Arc<Rollouts>,
    rollout_tick: Duration,
    fleet: Arc<Fleet>,
    quotas: Arc<Quotas>,
    dispatcher: Arc<Dispatcher>,
    scheduler: Arc<Scheduler>,
    storage: Arc<Storage>,
    idempotency: Arc<Idempotency>,
    host: Arc<Host>,
    logs: Arc<DebugLogs>,
    api_keys: Arc<ApiKeys>,
    audit: Arc<Audit>,
    collector: Arc<Collector>,
    captures: Arc<Captures>,
    spool_dir: std::path::PathBuf,
}

impl ControlPlane {
    /// Wires the domain types; `worker_tls` is the identity the control plane
    /// presents to workers (its own, reloaded with it).
    fn new(settings: Settings, worker_tls: annex_ops::tls::Tls) -> ControlPlane {
        let Settings {
            store,
            blobs,
            sealer,
            limits,
            host_app,
            in_process: _,
        } = settings;
        let metrics = Arc::new(Metrics::default());
        let grants = Arc::new(sealer.grants().clone());
        let trust = Arc::new(Trust::new(store.clone()));
        let spool_dir = limits.blobs.spool_dir();
        let collector = Arc::new(Collector::new(
            blobs.clone(),
            store.clone(),
            limits.blobs.clone(),
            metrics.clone(),
        ));
        let registry = Arc::new(Registry::new(
            store.clone(),
            blobs,
            trust.clone(),
            &limits,
            metrics.clone(),
        ));
        let fleet = Arc::new(Fleet::new(store.clone()));
        let installs = Arc::new(Installs::new(
            store.clone(),
            InstallsParts {
                sealer: Arc::new(sealer),
                registry: registry.clone(),
                trust: trust.clone(),
                fleet: fleet.clone(),
                platform_egress_allowlist: limits.platform_egress_allowlist,
                metrics: metrics.clone(),
            },
        ));
        let quotas = Arc::new(Quotas::new(store.clone(), installs.clone()));

        let captures = Arc::new(Captures::new(
            store.clone(),
            installs.clone(),
            installs.sealer(),
        ));
        let dispatcher = Arc::new(Dispatcher::new(
            installs.clone(),
            fleet.clone(),
            quotas.clone(),
            captures.clone(),
            worker_tls,
        ));
        let rollouts = Arc::new(Rollouts::new(
            store.clone(),
            installs.clone(),
            registry.clone(),
            metrics.clone(),
        ));
        ControlPlane {
            rollouts,
            rollout_tick: limits.rollout_tick,
            captures,
            scheduler: Arc::new(Scheduler::new(
                store.clone(),
                installs.clone(),
                limits.scheduler,
            )),
            storage: Arc::new(Storage::new(store.clone(), installs.clone())),
            idempotency: Arc::new(Idempotency::new(
                store.clone(),
                installs.clone(),
                limits.idempotency_retention,
            )),
            host: Arc::new(Host::new(installs.clone(), host_app)),
            logs: Arc::new(DebugLogs::new(store.clone())),
            api_keys: Arc::new(ApiKeys::new(store.clone())),
            audit: Arc::new(Audit::new(store.clone())),
            collector,
            spool_dir,
            store,
            metrics,
            grants,
            registry,
            trust,
            installs,
            fleet,
            quotas,
            dispatcher,
        }
    }

    /// The gRPC services, each holding only the domain types it calls, plus
    /// health (serving once this returns) and reflection.
    async fn routes(&self, closing: &Closing) -> anyhow::Result<tonic::service::Routes> {
        let registry = pb::registry_server::RegistryServer::new(RegistryService {
            registry: self.registry.clone(),
            spool_dir: self.spool_dir.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let trust = pb::trust_server::TrustServer::new(TrustService {
            trust: self.trust.clone(),
        });
        let installs = pb::installs_server::InstallsServer::new(InstallsService {
            installs: self.installs.clone(),
            rollouts: self.rollouts.clone(),
            quotas: self.quotas.clone(),
            api_keys: self.api_keys.clone(),
            storage: self.storage.clone(),
            captures: self.captures.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let captures = pb::captures_server::CapturesServer::new(CapturesService {
            captures: self.captures.clone(),
        })
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let dispatch = pb::dispatch_server::DispatchServer::new(DispatchService {
            dispatcher: self.dispatcher.clone(),
            fleet: self.fleet.clone(),
            quotas: self.quotas.clone(),
            installs: self.installs.clone(),
            api_keys: self.api_keys.clone(),
            audit: self.audit.clone(),
            closing: closing.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(64 * 1024 * 1024);
        let fleet = pb::fleet_server::FleetServer::new(FleetService {
            fleet: self.fleet.clone(),
            quotas: self.quotas.clone(),
            closing: closing.clone(),
        });
        let host = pb::host_services_server::HostServicesServer::new(HostService {
            grants: self.grants.clone(),
            storage: self.storage.clone(),
            idempotency: self.idempotency.clone(),
            host: self.host.clone(),
            logs: self.logs.clone(),
            scheduler: self.scheduler.clone(),
            captures: self.captures.clone(),
            closing: closing.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<pb::registry_server::RegistryServer<RegistryService>>()
            .await;
        health
            .set_serving::<pb::trust_server::TrustServer<TrustService>>()
            .await;
        health
            .set_serving::<pb::installs_server::InstallsServer<InstallsService>>()
            .await;
        health
            .set_serving::<pb::dispatch_server::DispatchServer<DispatchService>>()
            .await;
        health
            .set_serving::<pb::fleet_server::FleetServer<FleetService>>()
            .await;
        health
            .set_serving::<pb::host_services_server::HostServicesServer<HostService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(annex_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;

        let mut routes = tonic::service::RoutesBuilder::default();
        routes
            .add_service(InterceptedService::new(registry, authenticate(ANY_ROLE)))
            .add_service(InterceptedService::new(trust, authenticate(ANY_ROLE)))
            .add_service(InterceptedService::new(
                installs,
                authenticate(INSTALL_ROLES),
            ))
            .add_service(InterceptedService::new(
                dispatch,
                authenticate(DISPATCH_ROLES),
            ))
            .add_service(InterceptedService::new(
                captures,
                authenticate(CAPTURE_ROLES),
            ))
            .add_service(InterceptedService::new(fleet, authenticate(FLEET_ROLES)))
            .add_service(InterceptedService::new(host, authenticate(HOST_ROLES)))
            .add_service(InterceptedService::new(
                health_service,
                authenticate(ANY_ROLE),
            ))
            .add_service(InterceptedService::new(reflection, authenticate(ANY_ROLE)));
        Ok(routes.routes())
    }
}

/// Serves until `shutdown` resolves, then reports not-ready, ends the
/// long-lived streams (edges and workers reconnect to another replica) and
/// lets in-flight calls finish, for up to 10 s.
pub async fn run(
    settings: Settings,
    io: Io<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    annex_ops::tls::install_crypto_provider();
    let Io {
        tls,
        listeners,
        admin,
    } = io;
    // Certificates are reloaded when their files change (cert-manager
    // renews them in place): new handshakes, served or dialled to workers,
    // use the current ones; established connections keep theirs.
    let tls = annex_ops::tls::Tls::new(tls).context("loading the TLS certificate, key and CA")?;
    tls.watch(&admin);
    let in_process = settings.in_process.clone();
    let cp = ControlPlane::new(settings, tls.clone());
    std::fs::create_dir_all(&cp.spool_dir)
        .with_context(|| format!("creating the upload spool {}", cp.spool_dir.display()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    admin.with_registry(|r| cp.metrics.register(r));
    let admin_task = tokio::spawn(annex_ops::admin::serve(
        listeners.admin,
        admin.clone(),
        stopped(),
    ));

    let (close, closing) = Closing::new();
    let routes = cp.routes(&closing).await?;

    let scheduler = tokio::spawn(crate::scheduler::runner::run(
        cp.scheduler.clone(),
        cp.dispatcher.clone(),
        stopped(),
    ));
    let placement = tokio::spawn(crate::fleet::placement_loop(cp.fleet.clone(), stopped()));
    let log_trim = tokio::spawn(cp.logs.clone().trim(stopped()));
    let quota_upkeep = {
        let (quotas, stop) = (cp.quotas.clone(), stop_tx.subscribe());
        tokio::spawn(async move { quotas.upkeep(stop).await })
    };
    let idempotency_sweep = tokio::spawn(cp.idempotency.clone().sweep(stop_tx.subscribe()));
    let blob_collector = tokio::spawn(cp.collector.clone().run(stop_tx.subscribe()));
    let rollout_evaluator = tokio::spawn(
        cp.rollouts
            .clone()
            .run(cp.rollout_tick, stop_tx.subscribe()),
    );

    let readiness = {
        let store = cp.store.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            loop {
                admin.set_ready(store.ping().await.is_ok());
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    // Callers in this process (`annex dev`'s worker) reach the same services,
    // with the same role checks and spans, without the network, while the
    // server runs.
    let in_process = match (&in_process, listeners.grpc.local_addr()) {
        (Some(endpoints), Ok(addr)) => Some(endpoints.register(
            &addr.to_string(),
            tower::Layer::layer(&crate::grpc::TRACED, routes.clone()),
        )),
        _ => None,
    };
    let (begun_tx, mut begun_rx) = tokio::sync::watch::channel(false);
    let serve = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .layer(crate::grpc::TRACED)
        .add_routes(routes)
        // mTLS with the configuration current at each handshake (and
        // TCP_NODELAY on every accepted connection).
        .serve_with_incoming_shutdown(annex_ops::tls::incoming(listeners.grpc, tls.clone()), {
            let admin = admin.clone();
            async move {
                shutdown.await;
                tracing::info!("control plane shutting down");
                admin.set_ready(false);
                // Streams (routes, heartbeats, logs) end now; unary calls
                // in flight finish.
                let _ = close.send(true);
                let _ = begun_tx.send(true);
            }
        });
    tracing::info!("control plane serving");
    // Graceful shutdown waits for every connection; a client that keeps one
    // open must not hold the process past the grace period.
    let result = tokio::select! {
        r = serve => r.context("serving gRPC"),
        () = async {
            let _ = begun_rx.wait_for(|b| *b).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections still open after the shutdown grace period; exiting");
            Ok(())
        }
    };
    drop(in_process);
    readiness.abort();
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    let _ = placement.await;
    let _ = log_trim.await;
    let _ = quota_upkeep.await;
    let _ = idempotency_sweep.await;
    let _ = blob_collector.await;
    let _ = rollout_evaluator.await;
    let _ = admin_task.await;
    result
}
