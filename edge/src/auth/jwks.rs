//! The identity provider's signing keys, from its JWKS URL (an OIDC
//! issuer's `jwks_uri`), cached in memory.
//!
//! - Fetched at start and then every `refresh`; a token whose `kid` the
//!   cached set does not hold triggers a fetch at once, so a rotation at
//!   the provider is picked up with the first token signed by the new key.
//! - At most one fetch per `min_interval`, whatever the cause, and one at a
//!   time: tokens with made-up key ids cannot turn the edge into a
//!   load generator against the provider.
//! - Each fetch has a timeout and a bound on the body; a failed fetch (an
//!   outage, a 5xx, a body that is not a key set) keeps the last good set,
//!   so sessions signed with known keys keep verifying while the provider
//!   is down. Keys are never dropped for age alone.
//! - Only public keys for `RS256`, `ES256` (P-256) and `EdDSA` (Ed25519)
//!   are taken; symmetric (`oct`) keys, keys marked `use: enc` and keys of
//!   other algorithms are skipped, each key on its own.

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use parking_lot::RwLock;

use super::jwt::JwtKey;

/// Largest key-set body read, in bytes.
pub(crate) const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one key set.
pub(crate) const MAX_JWKS_KEYS: usize = 64;

/// Where and how often the key set is fetched.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// `https://…`, or `http://` to a loopback address.
    pub url: String,
    /// How often the set is fetched when nothing asks for it sooner.
    pub refresh: Duration,
    /// The least time between two fetches.
    pub min_interval: Duration,
    /// How long one fetch may take.
    pub timeout: Duration,
}

impl JwksSettings {
    /// Settings for `url` with the default periods: refresh every 5 min,
    /// at most one fetch per 30 s, 5 s per fetch.
    pub fn new(url: &str) -> anyhow::Result<JwksSettings> {
        check_url(url)?;
        Ok(JwksSettings {
            url: url.to_owned(),
            refresh: Duration::from_secs(300),
            min_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        })
    }
}

/// HTTPS, or plain HTTP only to this machine (a test identity provider).
fn check_url(url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("{url:?} is not a URL: {e}"))?;
    let host = uri
        .host()
        .map(|h| h.trim_matches(['[', ']']))
        .ok_or_else(|| anyhow::anyhow!("{url:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http")
            if host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) =>
        {
            Ok(())
        }
        _ => {
            anyhow::bail!("{url:?}: the key set must be fetched over https (http only on loopback)")
        }
    }
}

/// The cached key set and its fetcher.
pub(crate) struct JwksCache {
    settings: JwksSettings,
    client: reqwest::Client,
    keys: RwLock<Arc<Vec<JwtKey>>>,
    /// When the last fetch started; held across the fetch so only one runs.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.settings.url)
            .field("keys", &self.keys.read().len())
            .finish()
    }
}

impl JwksCache {
    /// A cache with no keys yet, and its background refresher (which stops
    /// when the cache is dropped). Must run inside a Tokio runtime.
    pub(crate) fn start(settings: JwksSettings) -> anyhow::Result<Arc<JwksCache>> {
        check_url(&settings.url)?;
        annex_ops::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("building the JWKS client: {e}"))?;
        let cache = Arc::new(JwksCache {
            settings,
            client,
            keys: RwLock::new(Arc::new(Vec::new())),
            last_attempt: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(refresher(Arc::downgrade(&cache)));
        Ok(cache)
    }

    /// The keys of the last good fetch.
    pub(crate) fn keys(&self) -> Arc<Vec<JwtKey>> {
        self.keys.read().clone()
    }

    /// Fetches the set unless a fetch started less than `min_interval`
    /// ago; waits for a fetch in flight. Whether a fetch succeeded.
    pub(crate) async fn refresh(&self) -> bool {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.settings.min_interval) {
            return false;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.settings.url, keys = keys.len(), "JWKS fetched");
                *self.keys.write() = Arc::new(keys);
                true
            }
            Err(e) => {
                tracing::warn!(url = %self.settings.url, error = %e, "JWKS fetch failed; keeping the last good key set");
                false
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<JwtKey>, String> {
        let mut resp = self
            .client
            .get(&self.settings.url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("body over {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("body: {e}"))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("body over {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_set(&body)
    }
}

/// Fetches at once, then every `refresh` (after a failure: every
/// `min_interval`) while the cache lives.
async fn refresher(cache: Weak<JwksCache>) {
    loop {
        let Some(c) = cache.upgrade() else { return };
        let ok = c.refresh().await;
        let wait = if ok {
            c.settings.refresh
        } else {
            c.settings.min_interval
        };
        drop(c);
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
    }
}

/// The usable signing keys of a JWKS document; an error only when the
/// document is not a key set at all.
pub(crate) fn parse_set(body: &[u8]) -> Result<Vec<JwtKey>, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a key set: {e}"))?;
    Ok(set
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .filter_map(|jwk| signing_key(&jwk))
        .take(MAX_JWKS_KEYS)
        .collect())
}

/// A JWK as a verification key, when it is one Annex accepts.
fn signing_key(jwk: &Jwk) -> Option<JwtKey> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
            if p.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
            if p.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).ok()?;
    JwtKey::from_jwk(alg, jwk.common.key_id.clone(), key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_http() {
        for ok in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]:1/jwks",
            "http://localhost/jwks",
        ] {
            assert!(JwksSettings::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "ftp://x/y",
            "not a url",
            "/jwks",
        ] {
            assert!(JwksSettings::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_usable_signing_keys_are_taken() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let ed = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]).verifying_key();
        let set = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": b64(ed.as_bytes()), "kid": "ed"},
            {"kty": "OKP", "crv": "Ed25519", "x": b64(&[1, 2, 3]), "kid": "short"},
            {"kty": "OKP", "crv": "Ed25519", "x": b64(ed.as_bytes()), "kid": "enc", "use": "enc"},
            {"kty": "oct", "k": b64(b"a shared secret is never taken from a URL"), "kid": "oct"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RSA-OAEP", "kid": "oaep"},
            {"kty": "weird", "kid": "weird"},
            "not even an object",
        ]});
        let keys = parse_set(set.to_string().as_bytes()).expect("a key set");
        let kids: Vec<_> = keys.iter().map(|k| k.kid()).collect();
        assert_eq!(kids, vec![Some("ed")]);
        assert!(parse_set(b"{\"nokeys\": 1}").is_err());
        assert!(parse_set(b"<html>").is_err());
    }
}
