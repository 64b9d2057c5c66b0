//! The command line: every subcommand, flag and environment variable, with its help text.
//!
//! This module only describes and parses arguments (clap derive); it must not read files or
//! talk to the network. Values that need checking beyond their type (`k=v` pairs, durations,
//! timestamps) are parsed here by value parsers, so a malformed one is a usage error (exit 2)
//! reported before anything runs.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod author;

pub use author::{BuildArgs, CompletionsArgs, Lang, NewArgs};

/// Default control-plane address: what `annex dev` serves on.
pub const DEFAULT_CONTROL_PLANE: &str = "https://127.0.0.1:7443";

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
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(CompletionsArgs),
}

/// Where the edge is and how to authenticate to it.
pub const DEFAULT_EDGE: &str = "http://127.0.0.1:8080";

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where dev state lives: certificates, keys, the PostgreSQL cluster, caches, dev.env.
    #[arg(long, env = "ANNEX_DEV_DIR", default_value = ".annex")]
    pub dir: PathBuf,

    /// The repository's examples/ directory (the sample is built from it).
    #[arg(long, default_value = "examples")]
    pub examples: PathBuf,

    /// Edge HTTP port on 127.0.0.1.
    #[arg(long, env = "ANNEX_DEV_EDGE_PORT", default_value_t = 8080)]
    pub edge_port: u16,

    /// Control-plane gRPC port on 127.0.0.1.
    #[arg(long, env = "ANNEX_DEV_CONTROL_PLANE_PORT", default_value_t = 7443)]
    pub control_plane_port: u16,

    /// Worker gRPC port on 127.0.0.1.
    #[arg(long, env = "ANNEX_DEV_WORKER_PORT", default_value_t = 7444)]
    pub worker_port: u16,

    /// Use the in-memory store even when PostgreSQL is installed.
    #[arg(long)]
    pub memory_store: bool,

    /// Do not build and install the hello sample.
    #[arg(long)]
    pub no_sample: bool,

    /// Base URL of the host application's internal extension APIs (invoicing, clients, services).
    #[arg(long, env = "ANNEX_DEV_HOST_APP_URL")]
    pub host_app_url: Option<String>,

    /// Token sent to the host application as x-runner-auth.
    #[arg(
        long,
        env = "ANNEX_DEV_HOST_APP_TOKEN",
        default_value = "dev-host-app-token"
    )]
    pub host_app_token: String,

    /// Base URL for ui-proxy routes.
    #[arg(long, env = "ANNEX_DEV_UI_PROXY_URL")]
    pub ui_proxy_url: Option<String>,

    /// Serve your extension project from DIR instead of the sample: build, sign, publish and
    /// install it now and again on every change, and serve its UI.
    #[arg(long, value_name = "DIR")]
    pub watch: Option<PathBuf>,

    /// Port on 127.0.0.1 of the page that hosts the watched extension's UI (with --watch).
    #[arg(long, env = "ANNEX_DEV_UI_PORT", default_value_t = 8081)]
    pub ui_port: u16,
}

/// Where the edge is and how `call` and `logs` authenticate to it.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Edge base URL.
    #[arg(long, env = "ANNEX_EDGE_URL", default_value = DEFAULT_EDGE)]
    pub edge: String,

    /// Bearer token [default: a dev JWT for --tenant, minted from --secret-file].
    #[arg(long, env = "ANNEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Dev JWT secret used when no token is given.
    #[arg(
        long,
        env = "ANNEX_JWT_SECRET_FILE",
        default_value = ".annex/dev-jwt.secret"
    )]
    pub secret_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Extension: install id, registry id or slug (publisher.name).
    #[arg(value_name = "EXT")]
    pub extension: String,

    /// Path under the extension, e.g. /hello.
    #[arg(value_name = "PATH", default_value = "/")]
    pub path: String,

    /// HTTP method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,

    /// Request body.
    #[arg(long, short = 'd', conflicts_with = "data_file")]
    pub data: Option<String>,

    /// Request body from a file.
    #[arg(long, value_name = "PATH")]
    pub data_file: Option<PathBuf>,

    /// Content type of the body.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,

    #[command(flatten)]
    pub edge: EdgeArgs,

    /// Give up after this many seconds.
    #[arg(long, default_value_t = 35)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Extension: registry id (as the edge's debug stream takes it) or slug.
    #[arg(value_name = "EXT")]
    pub extension: String,

    /// Only this request's events.
    #[arg(long)]
    pub request_id: Option<String>,

    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<usize>,

    /// Stop after this many seconds.
    #[arg(long = "for", value_name = "SECS")]
    pub for_secs: Option<u64>,

    #[command(flatten)]
    pub edge: EdgeArgs,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600). The public key goes beside it
    /// as <name>.pub.pem.
    #[arg(long, short, default_value = "signing-key.pem", value_name = "PATH")]
    pub out: PathBuf,

    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// Extension directory: manifest.json, dist/main.wasm and optionally ui/.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Output archive [default: <DIR>/bundle.tar.zst]. The hash sidecar goes beside it.
    #[arg(long, short, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// zstd level, 1-22 (19 matches Alga's SDK output size, at several times the pack time).
    #[arg(long, default_value_t = annex_bundle::archive::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The bundle.tar.zst to sign.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,

    /// Publisher private key (PKCS#8 PEM, as `annex keygen` writes).
    #[arg(long, env = "ANNEX_SIGNING_KEY", value_name = "PEM")]
    pub key: PathBuf,

    /// Where to write the signature [default: <BUNDLE>.sig].
    #[arg(long, short, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The bundle.tar.zst to upload.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,

    /// Signature file from `annex sign` (or a file holding just the base64 signature)
    /// [default: <BUNDLE>.sig].
    #[arg(long, value_name = "PATH")]
    pub signature_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExtensionArg {
    /// Extension slug (publisher.name), registry id, or (for install commands) install id.
    #[arg(value_name = "EXTENSION")]
    pub extension: String,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Extension slug (publisher.name) or registry id.
    #[arg(value_name = "EXTENSION")]
    pub extension: String,

    /// Exact version to install [default: the newest non-deprecated version].
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,

    /// Initial config entry; repeat for more.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<KeyValue>,

    /// Host the extension may reach over http.fetch / wasi:http; repeat for more. Must fit the
    /// platform allowlist. None: no egress.
    #[arg(long = "egress", value_name = "HOST")]
    pub egress: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Extension slug, registry id or install id.
    #[arg(value_name = "EXTENSION")]
    pub extension: String,

    /// Version to move to.
    #[arg(long, value_name = "VERSION")]
    pub version: String,

    /// Disable schedules whose endpoint the new version lacks, instead of refusing the upgrade.
    #[arg(long)]
    pub disable_missing_schedules: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the install's config (one key, or all).
    Get {
        /// Extension slug, registry id or install id.
        #[arg(value_name = "EXTENSION")]
        extension: String,
        /// Print only this key's value.
        #[arg(value_name = "KEY")]
        key: Option<String>,
    },
    /// Set config entries, keeping the others (unless --replace).
    Set {
        /// Extension slug, registry id or install id.
        #[arg(value_name = "EXTENSION")]
        extension: String,
        /// Entries to set.
        #[arg(value_name = "KEY=VALUE")]
        entries: Vec<KeyValue>,
        /// Remove this key; repeat for more.
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
        /// Replace the whole config with the given entries instead of merging.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Store secrets, merged into the existing ones (empty values are ignored).
    ///
    /// Values given as arguments end up in your shell history; prefer --from-file.
    Set {
        /// Extension slug, registry id or install id.
        #[arg(value_name = "EXTENSION")]
        extension: String,
        /// Secrets to store.
        #[arg(value_name = "KEY=VALUE")]
        entries: Vec<KeyValue>,
        /// Read secrets from a file: a JSON object of strings, or KEY=VALUE lines (blank lines
        /// and lines starting with # are skipped). Repeat for more files.
        #[arg(long, value_name = "PATH")]
        from_file: Vec<PathBuf>,
        /// Delete every existing secret first.
        #[arg(long)]
        clear: bool,
    },
    /// List the names of the install's secrets (never their values).
    ListKeys {
        /// Extension slug, registry id or install id.
        #[arg(value_name = "EXTENSION")]
        extension: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a publisher's public key for signing bundles.
    Add(TrustAddArgs),
    /// List trusted publisher keys.
    List {
        /// Only this publisher's keys.
        #[arg(long, value_name = "PUBLISHER")]
        publisher: Option<String>,
    },
    /// Revoke a key: bundles signed only by it can no longer be installed or loaded.
    Revoke {
        /// Key id, as `annex trust list` shows.
        #[arg(value_name = "KEY_ID")]
        key_id: String,
    },
}

#[derive(Debug, Args)]
pub struct TrustAddArgs {
    /// Publisher name exactly as manifests spell it.
    #[arg(long, value_name = "PUBLISHER")]
    pub publisher: String,
    /// Public key: a file (SPKI PEM, or base64) or the base64 value itself. Given a private
    /// key file, its public half is used.
    #[arg(long, value_name = "PEM|BASE64")]
    pub key: String,
    /// Key id [default: ed25519:<first 16 hex of SHA-256 of the key>].
    #[arg(long, value_name = "ID")]
    pub key_id: Option<String>,
    /// Start of validity (RFC 3339 or YYYY-MM-DD) [default: now].
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
    /// End of validity (RFC 3339 or YYYY-MM-DD) [default: no expiry].
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub not_after: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key; its secret is printed once and cannot be shown again.
    Create {
        /// A name to recognise the key by.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Permission to grant; repeat for more [default: extension:read and extension:write].
        #[arg(long = "permission", value_name = "PERMISSION")]
        permissions: Vec<String>,
    },
    /// List the tenant's API keys (never their secrets).
    List,
    /// Revoke an API key.
    Revoke {
        /// Key id, as `annex api-key list` shows.
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set (or replace) a quota; a limit left out is unlimited.
    Set {
        /// Limit one install (install id, registry id or slug) instead of the whole tenant.
        #[arg(long, value_name = "EXT")]
        extension: Option<String>,
        /// Executions in flight at once across the fleet.
        #[arg(long, value_name = "N")]
        max_concurrency: Option<u32>,
        /// Executions started per second across the fleet.
        #[arg(long = "rps", value_name = "N")]
        requests_per_second: Option<u32>,
    },
    /// List the tenant's quotas (every tenant's with --all).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Remove a quota: the tenant's, or with --extension an install's.
    Rm {
        #[arg(long, value_name = "EXT")]
        extension: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this extension (registry id, install id or slug).
    #[arg(value_name = "EXT")]
    pub extension: Option<String>,
    /// Windows starting at or after this time (RFC 3339) [default: all].
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Windows starting before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id (the `sub` claim).
    #[arg(long, default_value = "dev-user", value_name = "ID")]
    pub user: String,

    /// The `email` claim [default: <user>@example.test].
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,

    /// The `name` claim (display name).
    #[arg(long, default_value = "Dev User", value_name = "NAME")]
    pub name: String,

    /// The `user_type` claim.
    #[arg(long, value_enum, default_value_t = UserType::Internal)]
    pub user_type: UserType,

    /// The `client_id` claim (client-portal users' client); omitted when not given.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// Permission to grant; repeat for more [default: extension:read and extension:write].
    #[arg(long = "permission", value_name = "PERMISSION")]
    pub permissions: Vec<String>,

    /// The `aud` claim.
    #[arg(long, default_value = "annex", value_name = "AUDIENCE")]
    pub audience: String,

    /// Lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: std::time::Duration,

    /// HMAC secret file shared with the edge [default: .annex/dev-jwt.secret, created if absent].
    #[arg(long, env = "ANNEX_JWT_SECRET_FILE", value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UserType {
    /// Staff of the tenant (MSP users).
    Internal,
    /// Client-portal users.
    Client,
}

impl UserType {
    pub fn as_str(self) -> &'static str {
        match self {
            UserType::Internal => "internal",
            UserType::Client => "client",
        }
    }
}

/// A `KEY=VALUE` argument: split at the first `=`; the key must be non-empty, the value may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl FromStr for KeyValue {
    type Err = String;

    fn from_str(s: &str) -> Result<KeyValue, String> {
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(KeyValue {
                key: key.trim().to_owned(),
                value: value.to_owned(),
            }),
            Some(_) => Err(format!("`{s}` has an empty key; expected KEY=VALUE")),
            None => Err(format!("`{s}` is not KEY=VALUE")),
        }
    }
}

/// `90`, `90s`, `15m`, `1h`, `7d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 90s, 15m, 1h or 7d"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use s, m, h or d")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|&secs| secs > 0)
        .ok_or_else(|| format!("`{s}` must be more than zero and less than centuries"))?;
    Ok(std::time::Duration::from_secs(secs))
}

/// RFC 3339 (`2027-01-31T00:00:00Z`) or a date (`2027-01-31`, midnight UTC).
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is neither RFC 3339 (2027-01-31T00:00:00Z) nor YYYY-MM-DD"))
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
