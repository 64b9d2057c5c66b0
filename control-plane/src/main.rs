//! `annex-control-plane`: parses configuration, connects the store, binds the
//! listeners and runs until SIGTERM.

/// mimalloc: the request path allocates many small, short-lived buffers
/// (HTTP, HTTP/2, protobuf); glibc malloc was a quarter of the edge's CPU
/// samples under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use annex_control_plane::store::{PgStore, PgStoreConfig};
use annex_control_plane::{Config, ControlPlane, Limits, Listeners, seal::Sealer};
use annex_ops::process;
use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = process::start(config.log_format, "annex-control-plane");
    let tls = process::load_tls(&config.tls_ca, &config.tls_cert, &config.tls_key)?;
    let sealer = Sealer::from_file(&config.kek_file).context("loading the key-encryption key")?;
    let store = PgStore::connect(PgStoreConfig {
        url: config.database_url()?,
        max_connections: config.db_max_connections,
    })
    .await
    .context("connecting to Postgres")?;
    let limits = Limits {
        max_bundle_bytes: config.max_bundle_bytes,
        platform_egress_allowlist: config.egress_allowlist.clone(),
        scheduler: annex_control_plane::scheduler::SchedulerLimits {
            test_period: config
                .scheduler_test_period_ms
                .map(std::time::Duration::from_millis),
            ..Default::default()
        },
        ..Limits::default()
    };
    let mut cp = ControlPlane::new(Arc::new(store), sealer, limits);
    cp.host_app = config.host_app()?;
    let listeners = Listeners {
        grpc: process::bind("gRPC", config.grpc_listen).await?,
        admin: process::bind("admin", config.admin_listen).await?,
    };
    let admin = annex_ops::admin::AdminState::new();
    annex_control_plane::run(cp, tls, listeners, admin, annex_ops::shutdown::signal()).await
}
