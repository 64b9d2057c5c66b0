//! The `annex` command: extension authors' and operators' tool for Annex.
//!
//! `main` owns the process contract every subcommand shares: arguments are parsed by clap
//! ([`cli`]), the command runs on a tokio runtime ([`commands`]), its result is printed as text
//! or, with `--json`, as one JSON document on stdout ([`output`]), and any failure becomes exactly
//! one line on stderr with exit status 2 for usage errors and 1 for everything else
//! ([`failure`]). Nothing here may print a Rust `Debug` dump or a backtrace.
//!
//! Talking to the control plane lives in [`client`], so `annex dev` (which starts the services
//! in-process) and later commands reuse the same mTLS plumbing.

/// mimalloc: the request path allocates many small, short-lived buffers
/// (HTTP, HTTP/2, protobuf); glibc malloc was a quarter of the edge's CPU
/// samples under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod client;
mod commands;
mod failure;
mod files;
mod output;
mod progress;
mod templates;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    failure::install_panic_hook();
    annex_ops::tls::install_crypto_provider();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return failure::clap_error(err),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            return failure::report(&anyhow::Error::new(err).context("starting the async runtime"));
        }
    };
    let json = cli.global.json;
    match runtime.block_on(commands::run(cli)) {
        Ok(report) => {
            output::print(&report, json);
            ExitCode::SUCCESS
        }
        Err(err) => failure::report(&err),
    }
}
