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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = annex_ops::telemetry::init(config.log_format, "annex-edge");
    annex_ops::tls::install_crypto_provider();
    let settings = config.settings().context("validating the configuration")?;
    let tls = annex_ops::tls::TlsFiles {
        ca: config.tls_ca.clone(),
        cert: config.tls_cert.clone(),
        key: config.tls_key.clone(),
    }
    .load()
    .context("loading TLS files")?;
    let listeners = Listeners {
        http: tokio::net::TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http_listen))?,
        admin: tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("binding admin on {}", config.admin_listen))?,
    };
    let admin = annex_ops::admin::AdminState::new();
    annex_edge::run(
        settings,
        tls,
        listeners,
        admin,
        annex_ops::shutdown::signal(),
    )
    .await
}
