//! A stub of the host application's identity provider: serves a JWKS
//! document on loopback that a test swaps (key rotation) or takes down (an
//! outage, answered 503), and counts the fetches it gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use annex_edge::JwksSettings;
use annex_edge::jwt::{JwtVerifier, SigningKey};
use parking_lot::Mutex;

use super::TENANT;

/// Claims of a valid session for [`TENANT`], with `overrides` applied.
pub fn claims(overrides: serde_json::Value) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut c = serde_json::json!({
        "sub": "user-1", "tenant": TENANT, "email": "ann@example.com", "name": "Ann Example",
        "user_type": "internal", "permissions": ["extension:read", "extension:write"],
        "aud": "annex", "exp": now + 300,
    });
    if let (Some(c), Some(o)) = (c.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

/// A test key pair from `edge/tests/keys/` (`rsa-a`, `rsa-b`, `ec`, `ed`).
pub fn key(name: &str, alg: jsonwebtoken::Algorithm) -> SigningKey {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let private = std::fs::read(dir.join(format!("{name}.key"))).expect("private key");
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("public key");
    SigningKey::from_pem(alg, &private, &public).expect("key pair")
}

/// A verifier with `keys` for the default audience, no leeway.
pub fn verifier(keys: Vec<annex_edge::JwtKey>) -> JwtVerifier {
    JwtVerifier {
        keys,
        audience: "annex".into(),
        issuers: vec![],
        leeway_secs: 0,
        jwks: None,
    }
}

pub struct Idp {
    /// The JWKS document served; `None`: 503.
    body: Mutex<Option<String>>,
    hits: AtomicUsize,
    pub url: String,
}

impl Idp {
    pub async fn start(jwks: serde_json::Value) -> Arc<Idp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let idp = Arc::new(Idp {
            body: Mutex::new(Some(jwks.to_string())),
            hits: AtomicUsize::new(0),
            url: format!("http://{addr}/.well-known/jwks.json"),
        });
        let state = idp.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    match state.body.lock().clone() {
                        Some(body) => (
                            http::StatusCode::OK,
                            [(http::header::CONTENT_TYPE, "application/json")],
                            body,
                        ),
                        None => (
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            [(http::header::CONTENT_TYPE, "text/plain")],
                            "down".to_owned(),
                        ),
                    }
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        idp
    }

    /// Serves `jwks` from now on (`None`: an outage).
    pub fn serve(&self, jwks: Option<serde_json::Value>) {
        *self.body.lock() = jwks.map(|j| j.to_string());
    }

    /// Fetches so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// JWKS settings for this provider with at most one fetch per
    /// `min_interval_secs`.
    pub fn settings(&self, min_interval_secs: u64) -> JwksSettings {
        JwksSettings {
            min_interval: std::time::Duration::from_secs(min_interval_secs),
            ..JwksSettings::new(&self.url).expect("loopback JWKS URL")
        }
    }
}

/// A JWKS document of `keys`' public halves, each with its key id.
/// `keys` are (file name in `tests/keys/`, algorithm, key id).
pub fn jwks(keys: &[(&str, jsonwebtoken::Algorithm, &str)]) -> serde_json::Value {
    let keys: Vec<_> = keys
        .iter()
        .map(|(name, alg, kid)| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
            let private = std::fs::read(dir.join(format!("{name}.key"))).expect("private key");
            let enc = match alg {
                jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&private),
                jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&private),
                _ => jsonwebtoken::EncodingKey::from_ed_pem(&private),
            }
            .expect("encoding key");
            let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, *alg).expect("jwk");
            jwk.common.key_id = Some((*kid).to_owned());
            serde_json::to_value(jwk).expect("json")
        })
        .collect();
    serde_json::json!({ "keys": keys })
}
