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
use annex_ops::process;
use annex_ops::serve::Io;
use annex_worker::config::Config;
use annex_worker::server::{self, Listeners};
use anyhow::Context as _;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = process::start(config.log_format, "annex-worker");
    let settings = config.settings().context("validating the configuration")?;
    let tls = process::load_tls(&config.tls_ca, &config.tls_cert, &config.tls_key)?;
    let listeners = Listeners {
        grpc: process::bind("gRPC", config.grpc_listen).await?,
        admin: process::bind("admin", config.admin_listen).await?,
    };
    let io = Io {
        tls,
        listeners,
        admin: AdminState::new(),
    };
    server::run(settings, io, annex_ops::shutdown::signal()).await
}
