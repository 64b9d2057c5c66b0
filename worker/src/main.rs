//! The `annex-worker` binary: configuration, telemetry, the admin listener
//! and the mTLS `Worker` server around the library's executor.

use std::sync::Arc;
use std::time::Duration;

use annex_ops::admin::AdminState;
use annex_ops::tls::TlsFiles;
use annex_worker::backend::{GrpcHostBackend, NoHostBackend};
use annex_worker::bundles::{DirBundleSource, GrpcBundleSource, GrpcTrust, StaticTrust};
use annex_worker::config::Config;
use annex_worker::fleet;
use annex_worker::metrics::Metrics;
use annex_worker::server::{self, Sources};
use anyhow::Context;
use clap::Parser;
use tonic::transport::Channel;

/// How long trust keys are cached: bounds how long a revoked key still
/// admits new loads.
const TRUST_TTL: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    annex_ops::telemetry::init(config.log_format());
    let settings = config.settings()?;
    let tls = TlsFiles {
        ca: config.tls_ca.clone(),
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
    }
    .load()
    .context("loading TLS material")?;

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

    let admin = AdminState::new();
    let metrics = admin.with_registry(Metrics::register);
    let executor = server::build(&settings, sources, metrics).context("building the worker")?;

    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .context("binding the admin listener")?;
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
    let drain_executor = executor.clone();
    let drain_admin = admin.clone();
    let shutdown = async move {
        annex_ops::shutdown::signal().await;
        tracing::info!("shutting down: draining");
        drain_admin.set_ready(false);
        drain_executor.drain();
        let _ = fleet_stop_tx.send(true);
        // Let in-flight executions finish, up to the grace period.
        let deadline = tokio::time::Instant::now() + grace;
        while drain_executor.admission().running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    admin.set_ready(true);
    tracing::info!(listen = %config.grpc_listen, worker = %config.worker_id, "worker serving");
    let listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .context("binding the gRPC listener")?;
    server::serve_tls(executor, listener, &tls, shutdown)
        .await
        .context("serving gRPC")?;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    if let Some(task) = fleet_task {
        let _ = task.await;
    }
    Ok(())
}
