//! Verification of the host application's session tokens: compact JWS with
//! `EdDSA` (Ed25519) or `HS256`, checked for signature, `exp`, `nbf` and
//! audience before any claim is believed.
//!
//! Verified here rather than through a JWT crate: two algorithms, a dozen
//! lines each on the ring / ed25519-dalek stack the workspace already uses,
//! and no chance of `alg: none` or algorithm confusion (the key decides the
//! algorithm, the header must agree).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

/// A key the host application signs sessions with.
#[derive(Clone)]
pub enum JwtKey {
    /// Shared secret for HS256.
    Hs256(Vec<u8>),
    /// Ed25519 public key for EdDSA.
    EdDsa(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Hs256(_) => f.write_str("JwtKey::Hs256(..)"),
            JwtKey::EdDsa(k) => write!(f, "JwtKey::EdDsa({})", hex::encode(k.as_bytes())),
        }
    }
}

impl JwtKey {
    /// An Ed25519 public key: SPKI PEM, or 32 raw bytes in base64.
    pub(crate) fn ed25519_from_text(text: &str) -> Result<JwtKey, JwtError> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return ed25519_dalek::VerifyingKey::from_public_key_pem(text)
                .map(JwtKey::EdDsa)
                .map_err(|_| JwtError::BadKey);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| JwtError::BadKey)?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| JwtError::BadKey)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(JwtKey::EdDsa)
            .map_err(|_| JwtError::BadKey)
    }

    fn alg(&self) -> &'static str {
        match self {
            JwtKey::Hs256(_) => "HS256",
            JwtKey::EdDsa(_) => "EdDSA",
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            JwtKey::Hs256(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::verify(&key, message, signature).is_ok()
            }
            JwtKey::EdDsa(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum JwtError {
    #[error("the key is not a usable Ed25519 public key")]
    BadKey,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not yet valid")]
    NotYetValid,
    #[error("the token is for another audience")]
    Audience,
}

/// The claims Annex reads from a session token. `sub` is the user id.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub(crate) struct Claims {
    #[serde(default, alias = "user_id")]
    pub sub: String,
    #[serde(default, alias = "tenant_id")]
    pub tenant: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub name: String,
    /// `internal` or `client`.
    #[serde(default)]
    pub user_type: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The user's contact record; a string or a number. `contactId` is
    /// read when `contact_id` is absent (a token may carry both).
    #[serde(default, deserialize_with = "scalar_text")]
    pub contact_id: Option<String>,
    #[serde(default, rename = "contactId", deserialize_with = "scalar_text")]
    pub contact_id_camel: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub locale: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub timezone: Option<String>,
}

/// A claim the host application may send as a string or a number; anything
/// else (an object, a list, `null`) reads as absent rather than refusing
/// the whole token over a field Annex only passes on.
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Registered {
    exp: Option<i64>,
    nbf: Option<i64>,
    #[serde(default)]
    aud: Audience,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, want: &str) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => a == want,
            Audience::Many(all) => all.iter().any(|a| a == want),
        }
    }
}

/// Verifies tokens against the configured keys, audience and clock leeway.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    pub keys: Vec<JwtKey>,
    pub audience: String,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: i64,
}

impl JwtVerifier {
    /// Verifies `token` at `now` (Unix seconds) and returns its claims. `exp`
    /// is required: a session token that never expires is refused.
    pub(crate) fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| JwtError::Malformed)
        };
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::Malformed)?;
        let signature = decode(s)?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let mut algorithm_known = false;
        let mut verified = false;
        for key in self.keys.iter().filter(|k| k.alg() == header.alg) {
            algorithm_known = true;
            if key.verify(signed, &signature) {
                verified = true;
                break;
            }
        }
        if !algorithm_known {
            return Err(JwtError::Algorithm);
        }
        if !verified {
            return Err(JwtError::Signature);
        }
        let payload = decode(p)?;
        let registered: Registered =
            serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)?;
        match registered.exp {
            Some(exp) if now <= exp.saturating_add(self.leeway_secs) => {}
            _ => return Err(JwtError::Expired),
        }
        if registered
            .nbf
            .is_some_and(|nbf| now.saturating_add(self.leeway_secs) < nbf)
        {
            return Err(JwtError::NotYetValid);
        }
        if !registered.aud.contains(&self.audience) {
            return Err(JwtError::Audience);
        }
        serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)
    }
}

/// Signs claims (tests, `annex dev` and the e2e suite mint sessions with it).
pub fn sign(key: &SigningKey, claims: &serde_json::Value) -> String {
    let (alg, _) = match key {
        SigningKey::Hs256(_) => ("HS256", ()),
        SigningKey::EdDsa(_) => ("EdDSA", ()),
    };
    let header = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": alg, "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = match key {
        SigningKey::Hs256(secret) => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
            ring::hmac::sign(&key, signed.as_bytes()).as_ref().to_vec()
        }
        SigningKey::EdDsa(key) => {
            use ed25519_dalek::Signer as _;
            key.sign(signed.as_bytes()).to_bytes().to_vec()
        }
    };
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The signing side of a [`JwtKey`].
pub enum SigningKey {
    Hs256(Vec<u8>),
    EdDsa(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    pub fn verifying(&self) -> JwtKey {
        match self {
            SigningKey::Hs256(s) => JwtKey::Hs256(s.clone()),
            SigningKey::EdDsa(k) => JwtKey::EdDsa(k.verifying_key()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut base = json!({
            "sub": "u1", "tenant": "t1", "email": "a@b.c", "name": "Ann",
            "user_type": "internal", "permissions": ["extension:read"],
            "aud": "annex", "exp": NOW + 60,
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        base
    }

    fn ed_key() -> SigningKey {
        SigningKey::EdDsa(ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]))
    }

    fn verifier(keys: Vec<JwtKey>) -> JwtVerifier {
        JwtVerifier {
            keys,
            audience: "annex".into(),
            leeway_secs: 5,
        }
    }

    #[test]
    fn both_algorithms_verify_and_yield_claims() {
        for key in [
            ed_key(),
            SigningKey::Hs256(b"secret-secret-secret".to_vec()),
        ] {
            let token = sign(&key, &claims(json!({"client_id": "c9"})));
            let got = verifier(vec![key.verifying()])
                .verify(&token, NOW)
                .expect("valid");
            assert_eq!(got.sub, "u1");
            assert_eq!(got.tenant, "t1");
            assert_eq!(got.client_id.as_deref(), Some("c9"));
            assert_eq!(got.permissions, vec!["extension:read".to_owned()]);
        }
    }

    #[test]
    fn failures_are_refused() {
        let key = ed_key();
        let v = verifier(vec![key.verifying()]);
        let cases: Vec<(String, JwtError)> = vec![
            (
                sign(&key, &claims(json!({"exp": NOW - 10}))),
                JwtError::Expired,
            ),
            (sign(&key, &claims(json!({"exp": null}))), JwtError::Expired),
            (
                sign(&key, &claims(json!({"nbf": NOW + 100}))),
                JwtError::NotYetValid,
            ),
            (
                sign(&key, &claims(json!({"aud": "other"}))),
                JwtError::Audience,
            ),
            (
                sign(&key, &claims(json!({"aud": null}))),
                JwtError::Audience,
            ),
            (
                sign(
                    &SigningKey::EdDsa(ed25519_dalek::SigningKey::from_bytes(&[8u8; 32])),
                    &claims(json!({})),
                ),
                JwtError::Signature,
            ),
            // Algorithm confusion: an HS256 token whose secret is the public key.
            (
                sign(
                    &SigningKey::Hs256(key.verifying_bytes()),
                    &claims(json!({})),
                ),
                JwtError::Algorithm,
            ),
            ("a.b".into(), JwtError::Malformed),
            ("!!.??.**".into(), JwtError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(&token, NOW), Err(want), "{token}");
        }
        // An audience list containing ours is accepted.
        let ok = sign(&key, &claims(json!({"aud": ["x", "annex"]})));
        assert!(v.verify(&ok, NOW).is_ok());
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
        let token = format!("{header}.{payload}.");
        assert_eq!(
            verifier(vec![ed_key().verifying()]).verify(&token, NOW),
            Err(JwtError::Algorithm)
        );
    }

    impl SigningKey {
        fn verifying_bytes(&self) -> Vec<u8> {
            match self.verifying() {
                JwtKey::EdDsa(k) => k.as_bytes().to_vec(),
                JwtKey::Hs256(s) => s,
            }
        }
    }
}
