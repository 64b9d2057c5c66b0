//! The arguments of the publisher's commands (`annex keygen`, `pack`, `sign` and `publish`) and
//! of `annex trust`, which manages the publisher keys the registry trusts.
//!
//! Like its parent module, this only describes arguments; it must not touch files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse_time;

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
