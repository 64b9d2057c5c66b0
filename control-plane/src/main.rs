//! `annex-control-plane`: parses configuration, connects the store, binds the
//! listeners and runs until SIGTERM.

/// mimalloc: the request path allocates many small, short-lived buffers
/// (HTTP, HTTP/2, protobuf); glibc malloc was a quarter of the edge's CPU
/// samples under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use annex_control_plane::{Config, Listeners};
use annex_ops::serve::Io;
use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = annex_ops::telemetry::init(config.log_format, "annex-control-plane");
    annex_ops::tls::install_crypto_provider();
    let tls = annex_ops::tls::TlsFiles {
        ca: config.tls_ca.clone(),
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
    }
    .load()
    .context("loading TLS files")?;
    let settings = config.settings().await?;
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("binding gRPC on {}", config.grpc_listen))?,
        admin: tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("binding admin on {}", config.admin_listen))?,
    };
    let io = Io {
        tls,
        listeners,
        admin: annex_ops::admin::AdminState::new(),
    };
    annex_control_plane::run(settings, io, annex_ops::shutdown::signal()).await
}
