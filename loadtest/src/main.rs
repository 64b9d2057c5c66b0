//! `annex-loadtest`: see the library root for what it does and must not do.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = annex_loadtest::cli::Cli::parse();
    match annex_loadtest::main_with(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("annex-loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
