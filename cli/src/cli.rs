//! The command line: every subcommand, flag and environment variable, with its help text.
//!
//! This module only describes and parses arguments (clap derive); it must not read files or
//! talk to the network. Values that need checking beyond their type (`k=v` pairs, durations,
//! timestamps) are parsed by value parsers (in `values`), so a malformed one is a usage error
//! (exit 2) reported before anything runs.
//!
//! [`Cli`], the [`Global`] options and the [`Command`] list live here; each command group's
//! arguments are in a submodule (`author`, `local`, `edge`, `publish`, `tenant`), re-exported
//! here so every command refers to them as `crate::cli::…`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod author;
mod capture;
mod edge;
mod local;
mod publish;
mod rollout;
mod tenant;
mod values;

pub use author::{BuildArgs, CompletionsArgs, Lang, NewArgs};
pub use capture::{CaptureCommand, ReplayArgs};
pub use edge::{CallArgs, EdgeArgs, LogsArgs};
pub use local::{DevArgs, TokenArgs};
pub use publish::{KeygenArgs, PackArgs, PublishArgs, SignArgs, TrustAddArgs, TrustCommand};
pub use rollout::{RolloutCommand, RolloutStartArgs};
pub use tenant::{
    ApiKeyCommand, ConfigCommand, ExtensionArg, InstallArgs, QuotaCommand, SchemaCommand,
    SecretsCommand, StorageCommand, UpgradeArgs, UsageArgs,
};
pub use values::{KeyValue, UserType, parse_duration, parse_time};

/// Default control-plane address: what `annex dev` serves on.
pub const DEFAULT_CONTROL_PLANE: &str = "https://127.0.0.1:7443";

/// Where the edge is and how to authenticate to it.
pub const DEFAULT_EDGE: &str = "http://127.0.0.1:8080";

/// Annex: build, sign, publish and install WebAssembly extensions.
///
/// Commands that talk to the control plane use mTLS with an operator certificate: by default
/// ca.pem, operator.pem and operator-key.pem from --tls-dir (the directory `annex dev` writes).
#[derive(Debug, Parser)]
#[command(name = "annex", version, arg_required_else_help = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments like [`Parser::try_parse`], and notes
    /// which values came from the command line and which from the
    /// environment (clap's derive does not keep that).
    pub fn parse_with_sources() -> Result<Cli, clap::Error> {
        use clap::parser::ValueSource;
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Cli::command().try_get_matches()?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        // Global arguments are kept both at the top and in the
        // subcommand's matches, wherever they were written.
        let sub = matches.subcommand().map_or(&matches, |(_, m)| m);
        let on_command_line =
            |m: &clap::ArgMatches| m.value_source("tenant") == Some(ValueSource::CommandLine);
        cli.global.tenant_on_command_line = on_command_line(&matches) || on_command_line(sub);
        // `token` exists only on the edge commands.
        let token_from_env = || sub.value_source("token") == Some(ValueSource::EnvVariable);
        match &mut cli.command {
            Command::Call(args) => args.edge.token_from_env = token_from_env(),
            Command::Logs(args) => args.edge.token_from_env = token_from_env(),
            _ => {}
        }
        Ok(cli)
    }
}

/// Options every command accepts, before or after the subcommand.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Control-plane gRPC address (https://host:port).
    #[arg(
        long = "control-plane",
        env = "ANNEX_CONTROL_PLANE_URL",
        default_value = DEFAULT_CONTROL_PLANE,
        value_name = "URL",
        global = true
    )]
    pub control_plane: String,

    /// Directory holding ca.pem, operator.pem and operator-key.pem.
    #[arg(
        long,
        env = "ANNEX_TLS_DIR",
        default_value = ".annex/pki",
        value_name = "DIR",
        global = true
    )]
    pub tls_dir: PathBuf,

    /// CA certificate (PEM) that signed the control plane's certificate [default: <tls-dir>/ca.pem].
    #[arg(long, env = "ANNEX_TLS_CA", value_name = "PEM", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) with the operator role [default: <tls-dir>/operator.pem].
    #[arg(long, env = "ANNEX_TLS_CERT", value_name = "PEM", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate [default: <tls-dir>/operator-key.pem].
    #[arg(long, env = "ANNEX_TLS_KEY", value_name = "PEM", global = true)]
    pub tls_key: Option<PathBuf>,

    /// Name to verify in the control plane's certificate [default: the URL's host].
    #[arg(
        long,
        env = "ANNEX_TLS_SERVER_NAME",
        value_name = "NAME",
        global = true
    )]
    pub tls_server_name: Option<String>,

    /// Tenant that install, config, secrets, api-key and token commands act for.
    #[arg(long, env = "ANNEX_TENANT", value_name = "TENANT", global = true)]
    pub tenant: Option<String>,

    /// Whether `--tenant` was given on the command line (not only set in
    /// ANNEX_TENANT): it then wins over a token for another tenant taken
    /// from ANNEX_TOKEN. Set by [`Cli::parse_with_sources`].
    #[arg(skip)]
    pub tenant_on_command_line: bool,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an extension project (manifest, handler, UI, build setup and a test).
    New(NewArgs),
    /// Build an extension project into dist/main.wasm and pack bundle.tar.zst.
    Build(BuildArgs),
    /// Generate an Ed25519 signing key for publishing bundles.
    Keygen(KeygenArgs),
    /// Validate an extension directory and pack it into bundle.tar.zst.
    Pack(PackArgs),
    /// Sign a bundle with a publisher key, writing <bundle>.sig.
    Sign(SignArgs),
    /// Upload a signed bundle to the registry.
    Publish(PublishArgs),
    /// List the published versions of an extension.
    Versions(ExtensionArg),
    /// Install an extension for the tenant.
    Install(InstallArgs),
    /// Move the tenant's install to another version.
    Upgrade(UpgradeArgs),
    /// Gradual rollouts of the tenant's install to new versions (start, status, promote, abort).
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Remove the tenant's install (its config and secrets go with it).
    Uninstall(ExtensionArg),
    /// Enable the tenant's install so it serves requests again.
    Enable(ExtensionArg),
    /// Disable the tenant's install; requests are refused until it is enabled.
    Disable(ExtensionArg),
    /// List the tenant's installs.
    Installs,
    /// Show the tenant's install of an extension.
    Status(ExtensionArg),
    /// Read or change an install's config.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Store or list an install's secrets (values are sealed and never shown).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// An install's storage: the JSON schemas of its namespaces.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Manage the publisher keys the registry trusts.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Manage the tenant's API keys for service clients of the edge.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Fleet-wide execution quotas of the tenant (or of one of its installs).
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// The tenant's usage per extension and minute, as workers reported it.
    Usage(UsageArgs),
    /// Mint a development JWT for a tenant and user (for the edge's Authorization header).
    Token(TokenArgs),
    /// Run Annex locally: control plane, worker and edge in one process, with the sample installed.
    Dev(DevArgs),
    /// Call an extension through the edge: <METHOD> /api/ext/<EXT>/<PATH>.
    Call(CallArgs),
    /// Follow an extension's logs (guest logging, stderr, failures) through the edge.
    Logs(LogsArgs),
    /// Capture an install's real executions for replay (start, stop, list, show, export).
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// Replay a captured execution in this process, offline, and report the first divergence.
    Replay(ReplayArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(CompletionsArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_values_split_at_the_first_equals() {
        let kv: KeyValue = "url=https://x/?a=b".parse().expect("parses");
        assert_eq!(kv.key, "url");
        assert_eq!(kv.value, "https://x/?a=b");
        assert_eq!("k=".parse::<KeyValue>().expect("empty value").value, "");
        assert!("=v".parse::<KeyValue>().is_err());
        assert!("novalue".parse::<KeyValue>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1h"),
            Ok(std::time::Duration::from_secs(3600))
        );
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(
            parse_duration("2d"),
            Ok(std::time::Duration::from_secs(172_800))
        );
        for bad in ["", "0", "h", "1w", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times() {
        let t = parse_time("2027-01-31").expect("date");
        assert_eq!(t.to_rfc3339(), "2027-01-31T00:00:00+00:00");
        let t = parse_time("2027-01-31T12:00:00+02:00").expect("rfc3339");
        assert_eq!(t.to_rfc3339(), "2027-01-31T10:00:00+00:00");
        assert!(parse_time("tomorrow").is_err());
    }
}
