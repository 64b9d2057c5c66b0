//! The `annex-worker` binary: configuration (validated into
//! [`Settings`](annex_worker::settings::Settings) before anything else),
//! telemetry, listeners, and the library's
//! [`run`](annex_worker::server::run) until SIGTERM.

/// mimalloc: the request path allocates many small, short-lived buffers
/// (HTTP, HTTP/2, protobuf); glibc malloc was a quarter of the edge's CPU
/// samples under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use annex_ops::admin::AdminState;
use annex_ops::serve::Io;
use annex_ops::tls::TlsFiles;
use annex_worker::config::Config;
use annex_worker::server::{self, Listeners};
use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = annex_ops::telemetry::init(config.log_format, "annex-worker");
    let settings = config.settings().context("validating the configuration")?;
    let tls = TlsFiles {
        ca: config.tls_ca.clone(),
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
    }
    .load()
    .context("loading TLS material")?;
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind(config.grpc_listen)
            .await
            .context("binding the gRPC listener")?,
        admin: tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .context("binding the admin listener")?,
    };
    let io = Io {
        tls,
        listeners,
        admin: AdminState::new(),
    };
    server::run(settings, io, annex_ops::shutdown::signal()).await
}
