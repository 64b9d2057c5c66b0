//! Runs a control plane: gRPC services behind mTLS with per-service role
//! checks, `grpc.health.v1`, reflection, and the admin listener. A server is
//! a function of (state, TLS material, listeners, shutdown): it binds nothing
//! and installs no signal handlers.

use std::future::Future;
use std::time::Duration;

use annex_ops::Role;
use annex_ops::admin::AdminState;
use annex_ops::tls::{TlsMaterial, authenticate};
use annex_proto::pb;
use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::ControlPlane;
use crate::grpc::dispatch::DispatchService;
use crate::grpc::fleet::FleetService;
use crate::grpc::host::HostService;
use crate::grpc::installs::InstallsService;
use crate::grpc::registry::RegistryService;
use crate::grpc::trust::TrustService;

/// Largest gRPC message: a publish chunk or fetch chunk is far smaller, but
/// config maps and listings can be large.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

const ANY_ROLE: &[Role] = &[Role::Operator, Role::Edge, Role::Worker, Role::ControlPlane];
const INSTALL_ROLES: &[Role] = &[Role::Operator, Role::Edge, Role::ControlPlane];
const DISPATCH_ROLES: &[Role] = &[Role::Operator, Role::Edge, Role::ControlPlane];
const FLEET_ROLES: &[Role] = &[Role::Worker];
const HOST_ROLES: &[Role] = &[Role::Worker, Role::Edge, Role::Operator];

/// How long in-flight calls may take to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Bound sockets for a control plane.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

/// Serves until `shutdown` resolves, then reports not-ready, ends the
/// long-lived streams (edges and workers reconnect to another replica) and
/// lets in-flight calls finish, for up to 10 s.
pub async fn run(
    cp: ControlPlane,
    tls: TlsMaterial,
    listeners: Listeners,
    admin: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut cp = cp;
    cp.worker_tls = Some(tls.clone());
    admin.with_registry(|r| cp.metrics.register(r));
    let admin_task = tokio::spawn(annex_ops::admin::serve(
        listeners.admin,
        admin.clone(),
        stopped(),
    ));

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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(annex_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    let registry = pb::registry_server::RegistryServer::new(RegistryService(cp.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let trust = pb::trust_server::TrustServer::new(TrustService(cp.clone()));
    let installs = pb::installs_server::InstallsServer::new(InstallsService(cp.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let dispatch = pb::dispatch_server::DispatchServer::new(DispatchService(cp.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(64 * 1024 * 1024);
    let fleet = pb::fleet_server::FleetServer::new(FleetService(cp.clone()));
    let host = pb::host_services_server::HostServicesServer::new(HostService(cp.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    health
        .set_serving::<pb::dispatch_server::DispatchServer<DispatchService>>()
        .await;
    health
        .set_serving::<pb::fleet_server::FleetServer<FleetService>>()
        .await;
    health
        .set_serving::<pb::host_services_server::HostServicesServer<HostService>>()
        .await;

    let scheduler = tokio::spawn(crate::scheduler::runner::run(cp.clone(), stopped()));
    let placement = tokio::spawn(crate::fleet::placement_loop(cp.clone(), stopped()));
    let quota_upkeep = tokio::spawn(cp.clone().quota_upkeep(stop_tx.subscribe()));

    let readiness = {
        let cp = cp.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            loop {
                admin.set_ready(cp.store.ping().await.is_ok());
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    let (begun_tx, mut begun_rx) = tokio::sync::watch::channel(false);
    let serve = Server::builder()
        .tls_config(tls.server_config())
        .context("configuring TLS")?
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .layer(crate::grpc::TRACED)
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
        .add_service(InterceptedService::new(fleet, authenticate(FLEET_ROLES)))
        .add_service(InterceptedService::new(host, authenticate(HOST_ROLES)))
        .add_service(InterceptedService::new(
            health_service,
            authenticate(ANY_ROLE),
        ))
        .add_service(InterceptedService::new(reflection, authenticate(ANY_ROLE)))
        // `Server::tcp_nodelay` only applies to listeners tonic binds itself.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)),
            {
                let admin = admin.clone();
                let cp = cp.clone();
                let begun = begun_tx;
                async move {
                    shutdown.await;
                    tracing::info!("control plane shutting down");
                    admin.set_ready(false);
                    // Streams (routes, heartbeats, logs) end now; unary calls
                    // in flight finish.
                    cp.close_streams();
                    let _ = begun.send(true);
                }
            },
        );
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
    readiness.abort();
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    let _ = placement.await;
    let _ = quota_upkeep.await;
    let _ = admin_task.await;
    result
}
