//! The arguments of the commands that act for a tenant: installs (`install`, `upgrade` and the
//! commands taking one extension), `config`, `secrets`, `storage`, `api-key`, `quota` and `usage`.
//!
//! Like its parent module, this only describes arguments; it must not touch files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::KeyValue;

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
pub enum StorageCommand {
    /// JSON schemas of the install's storage namespaces.
    #[command(subcommand)]
    Schema(SchemaCommand),
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Add the next version of a namespace's schema: every later put into the
    /// namespace must match it (or the version the put names).
    Add {
        /// Extension slug, registry id or install id.
        #[arg(value_name = "EXTENSION")]
        extension: String,
        /// The storage namespace.
        #[arg(value_name = "NAMESPACE")]
        namespace: String,
        /// A JSON Schema document (`-` reads standard input).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// List every schema version of the install's namespaces.
    List {
        /// Extension slug, registry id or install id.
        #[arg(value_name = "EXTENSION")]
        extension: String,
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
