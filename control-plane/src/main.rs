//! `annex-control-plane`: parses configuration, connects the store, binds the
//! listeners and runs until SIGTERM.

/// mimalloc: the request path allocates many small, short-lived buffers
/// (HTTP, HTTP/2, protobuf); glibc malloc was a quarter of the edge's CPU
/// samples under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use annex_control_plane::{Config, Listeners};
use annex_ops::process;
use annex_ops::serve::Io;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = process::start(config.log_format, "annex-control-plane");
    let tls = process::load_tls(&config.tls_ca, &config.tls_cert, &config.tls_key)?;
    let settings = config.settings().await?;
    let io = Io {
        tls,
        listeners: Listeners {
            grpc: process::bind("gRPC", config.grpc_listen).await?,
            admin: process::bind("admin", config.admin_listen).await?,
        },
        admin: annex_ops::admin::AdminState::new(),
    };
    annex_control_plane::run(settings, io, annex_ops::shutdown::signal()).await
}
