//! The arguments of `annex capture …` and `annex replay` (docs/design/replay.md).
//!
//! Like its parent module, this only describes arguments; it must not touch files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum CaptureCommand {
    /// Start capturing an install's executions: a sample of them, its failures, or both.
    Start {
        #[command(flatten)]
        install: InstallArg,
        /// Share of calls recorded, as a percentage (`1%`, `0.1%`, `100%`).
        #[arg(long, value_name = "PERCENT", value_parser = parse_sample)]
        sample: Option<u32>,
        /// Keep every failed execution (trap, timeout, out of memory, or a 5xx answer).
        #[arg(long)]
        failures: bool,
        /// How long captures are kept, in hours [default: 72; at most 720].
        #[arg(long, value_name = "HOURS")]
        retention_hours: Option<u32>,
        /// Largest capture kept, in bytes [default: 1 MiB; at most 3 MiB].
        #[arg(long, value_name = "BYTES")]
        max_bytes: Option<u64>,
    },
    /// Stop capturing an install's executions (captures kept so far stay until they expire).
    Stop {
        #[command(flatten)]
        install: InstallArg,
    },
    /// List the tenant's captures, newest first.
    List {
        /// Only this install's (slug, registry id or install id), with its capture policy.
        #[arg(value_name = "EXTENSION")]
        extension: Option<String>,
        /// At most this many [default: 50; at most 500].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show one capture: the request, the host calls with their answers, the response.
    Show {
        #[arg(value_name = "CAPTURE_ID")]
        id: String,
        /// Show the secret values the guest read (recorded in the audit trail).
        #[arg(long)]
        reveal_secrets: bool,
    },
    /// Write one capture, with its bundle, to a file `annex replay --file` runs anywhere.
    Export {
        #[arg(value_name = "CAPTURE_ID")]
        id: String,
        /// The file to write.
        #[arg(short, long, value_name = "PATH")]
        output: PathBuf,
        /// Include the secret values the guest read, in clear (recorded in the audit trail).
        #[arg(long)]
        reveal_secrets: bool,
    },
}

/// The install, as `EXTENSION` or `--install EXTENSION`.
#[derive(Debug, Args)]
pub struct InstallArg {
    /// Extension slug, registry id or install id.
    #[arg(value_name = "EXTENSION", required_unless_present = "install")]
    pub extension: Option<String>,
    /// The same, as a flag.
    #[arg(
        long = "install",
        value_name = "EXTENSION",
        conflicts_with = "extension"
    )]
    pub install: Option<String>,
}

impl InstallArg {
    pub fn name(&self) -> &str {
        self.extension
            .as_deref()
            .or(self.install.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The capture to replay (fetched from the control plane with its bundle).
    #[arg(
        value_name = "CAPTURE_ID",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    pub id: Option<String>,
    /// Replay a capture exported with `annex capture export` (no control plane needed).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Run this bundle instead of the captured one (to check a fix against a real call).
    #[arg(long, value_name = "BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// Give the guest the secret values it read (recorded in the audit trail); without it,
    /// secrets read as "(sealed)".
    #[arg(long)]
    pub reveal_secrets: bool,
    /// Keep compiled components here between replays.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `1%`, `0.25%` or `100%` as parts per million.
fn parse_sample(s: &str) -> Result<u32, String> {
    let number = s.trim().trim_end_matches('%').trim();
    let percent: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage like 1% or 0.5%"))?;
    if !(0.0..=100.0).contains(&percent) || !percent.is_finite() {
        return Err(format!("`{s}` is not between 0% and 100%"));
    }
    let ppm = (percent * 10_000.0).round();
    if percent > 0.0 && ppm < 1.0 {
        return Err(format!("`{s}` is below 0.0001%"));
    }
    Ok(ppm as u32)
}

#[cfg(test)]
mod tests {
    use super::parse_sample;

    #[test]
    fn samples_are_percentages() {
        assert_eq!(parse_sample("1%"), Ok(10_000));
        assert_eq!(parse_sample("0.5%"), Ok(5_000));
        assert_eq!(parse_sample("100%"), Ok(1_000_000));
        assert_eq!(parse_sample("100"), Ok(1_000_000));
        for bad in ["", "%", "abc", "101%", "-1%", "0.00001%", "NaN%"] {
            assert!(parse_sample(bad).is_err(), "{bad:?}");
        }
    }
}
