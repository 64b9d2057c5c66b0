//! The edge's session-token flags (flattened into `crate::Config`), each
//! with an `ANNEX_EDGE_JWT_*` environment variable; key material comes
//! from files or the identity provider's JWKS URL.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::jwks::JwksSettings;
use super::jwt::{JwtKey, JwtVerifier, MAX_LEEWAY_SECS};

#[derive(Debug, Clone, clap::Args)]
pub struct SessionArgs {
    /// Audience session tokens must carry.
    #[arg(long, env = "ANNEX_EDGE_JWT_AUDIENCE", default_value = "annex")]
    pub jwt_audience: String,
    /// Issuers accepted in `iss` (comma-separated, exact); unset: `iss` is not checked.
    #[arg(long, env = "ANNEX_EDGE_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,
    /// File holding the HS256 secret the host application signs sessions with.
    #[arg(long, env = "ANNEX_EDGE_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// File holding the host application's Ed25519 public key (SPKI PEM or base64).
    #[arg(long, env = "ANNEX_EDGE_JWT_ED25519_PUBLIC_KEY_FILE")]
    pub jwt_ed25519_public_key_file: Option<PathBuf>,
    /// Public-key PEM files (RSA: RS256, P-256: ES256, Ed25519: EdDSA);
    /// repeat the flag or separate paths with commas.
    #[arg(long, env = "ANNEX_EDGE_JWT_PUBLIC_KEY_FILE", value_delimiter = ',')]
    pub jwt_public_key_file: Vec<PathBuf>,
    /// The identity provider's JWKS URL (https; http only on loopback).
    #[arg(long, env = "ANNEX_EDGE_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// How often the JWKS is fetched again, in seconds.
    #[arg(long, env = "ANNEX_EDGE_JWT_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwt_jwks_refresh_secs: u64,
    /// The least time between two JWKS fetches (an unknown `kid` asks for
    /// one), in seconds.
    #[arg(
        long,
        env = "ANNEX_EDGE_JWT_JWKS_MIN_INTERVAL_SECS",
        default_value_t = 30
    )]
    pub jwt_jwks_min_interval_secs: u64,
    /// How long one JWKS fetch may take, in milliseconds.
    #[arg(long, env = "ANNEX_EDGE_JWT_JWKS_TIMEOUT_MS", default_value_t = 5000)]
    pub jwt_jwks_timeout_ms: u64,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds (at most 3600).
    #[arg(long, env = "ANNEX_EDGE_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
}

impl SessionArgs {
    pub(crate) fn verifier(&self) -> anyhow::Result<JwtVerifier> {
        let mut keys = Vec::new();
        if let Some(path) = &self.jwt_hs256_secret_file {
            let secret = std::fs::read(path)
                .with_context(|| format!("reading the HS256 secret from {}", path.display()))?;
            let secret = secret.trim_ascii();
            anyhow::ensure!(
                secret.len() >= 32,
                "the HS256 secret must be at least 32 bytes"
            );
            keys.push(JwtKey::hs256(secret).context("the HS256 secret")?);
        }
        if let Some(path) = &self.jwt_ed25519_public_key_file {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("reading the Ed25519 public key from {}", path.display())
            })?;
            keys.push(JwtKey::ed25519_from_text(&text).context("parsing the Ed25519 public key")?);
        }
        for path in &self.jwt_public_key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the public key from {}", path.display()))?;
            keys.push(JwtKey::public_pem(&text).with_context(|| {
                format!(
                    "{}: not an RSA, P-256 or Ed25519 public key in PEM",
                    path.display()
                )
            })?);
        }
        let jwks = match self.jwt_jwks_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => {
                anyhow::ensure!(
                    self.jwt_jwks_refresh_secs >= 1 && self.jwt_jwks_timeout_ms >= 1,
                    "--jwt-jwks-refresh-secs and --jwt-jwks-timeout-ms must be positive"
                );
                Some(JwksSettings {
                    refresh: Duration::from_secs(self.jwt_jwks_refresh_secs),
                    min_interval: Duration::from_secs(self.jwt_jwks_min_interval_secs),
                    timeout: Duration::from_millis(self.jwt_jwks_timeout_ms),
                    ..JwksSettings::new(url).context("--jwt-jwks-url")?
                })
            }
            _ => None,
        };
        anyhow::ensure!(
            !keys.is_empty() || jwks.is_some(),
            "a session key is required: --jwt-hs256-secret-file, --jwt-ed25519-public-key-file, --jwt-public-key-file or --jwt-jwks-url"
        );
        anyhow::ensure!(
            self.jwt_leeway_secs <= MAX_LEEWAY_SECS,
            "--jwt-leeway-secs must be at most {MAX_LEEWAY_SECS}"
        );
        Ok(JwtVerifier {
            keys,
            audience: self.jwt_audience.clone(),
            issuers: self
                .jwt_issuer
                .iter()
                .map(|i| i.trim().to_owned())
                .filter(|i| !i.is_empty())
                .collect(),
            leeway_secs: self.jwt_leeway_secs,
            jwks,
        })
    }
}
