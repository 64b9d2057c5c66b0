//! `annex-edge`: parses configuration, binds the listeners and runs until
//! SIGTERM.

/// mimalloc: the request path allocates many small, short-lived buffers
/// (HTTP, HTTP/2, protobuf); glibc malloc was a quarter of the edge's CPU
/// samples under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::Parser as _;

use annex_edge::{Config, Listeners};
use annex_ops::process;
use annex_ops::serve::Io;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = process::start(config.log_format, "annex-edge");
    let settings = config.settings().context("validating the configuration")?;
    let tls = process::load_tls(&config.tls_ca, &config.tls_cert, &config.tls_key)?;
    let listeners = Listeners {
        http: process::bind("HTTP", config.http_listen).await?,
        admin: process::bind("admin", config.admin_listen).await?,
    };
    let io = Io {
        tls,
        listeners,
        admin: annex_ops::admin::AdminState::new(),
    };
    annex_edge::run(settings, io, annex_ops::shutdown::signal()).await
}
