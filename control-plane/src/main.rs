//! `annex-control-plane`: parses configuration, connects the store, binds the
//! listeners and runs until SIGTERM; or, as `annex-control-plane
//! migrate-blobs`, copies bundle bytes between blob stores and exits.

/// mimalloc: the request path allocates many small, short-lived buffers
/// (HTTP, HTTP/2, protobuf); glibc malloc was a quarter of the edge's CPU
/// samples under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use annex_control_plane::{Config, Listeners, MigrateBlobs};
use annex_ops::process;
use annex_ops::serve::Io;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "migrate-blobs")
    {
        return migrate_blobs(MigrateBlobs::parse_from(std::env::args_os().skip(1))).await;
    }
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

/// Runs `migrate-blobs`; fails (non-zero exit) when a referenced blob could
/// not be copied, after trying every one.
async fn migrate_blobs(args: MigrateBlobs) -> anyhow::Result<()> {
    let _telemetry = process::start(args.log_format, "annex-control-plane");
    let report = args.run().await?;
    println!("migrate-blobs {} -> {}: {report}", args.from, args.to);
    if report.missing + report.failed > 0 {
        anyhow::bail!(
            "{} blob(s) missing and {} failed; fix and run again (copied blobs are skipped)",
            report.missing,
            report.failed
        );
    }
    Ok(())
}
