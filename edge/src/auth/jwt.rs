//! Verification of the host application's session tokens with the
//! `jsonwebtoken` crate: compact JWS signed with `HS256`, `RS256`, `ES256`
//! (P-256) or `EdDSA` (Ed25519), checked for signature, `exp` (required),
//! `nbf`, audience and, when configured, issuer before any claim is
//! believed.
//!
//! The key decides the algorithm: a token is only ever checked against keys
//! of the algorithm its header names, so `alg: none` and algorithm
//! confusion (an HS256 token "signed" with a public key) are refused. Keys
//! come from configuration (a shared secret, PEM public keys) and, when a
//! JWKS URL is configured, from the identity provider's key set
//! ([`super::jwks`]); a header `kid` narrows the candidates to the key of
//! that id.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

pub(crate) use super::claims::Claims;
pub use super::jwks::JwksSettings;

/// The algorithms a session may be signed with.
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// The most clock skew an operator may allow on `exp`/`nbf`, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 3600;

/// A key the host application's sessions verify with.
#[derive(Clone)]
pub struct JwtKey {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKey({:?}, kid {:?})", self.alg, self.kid)
    }
}

impl JwtKey {
    /// A shared HS256 secret.
    pub fn hs256(secret: &[u8]) -> Result<JwtKey, JwtError> {
        if secret.is_empty() {
            return Err(JwtError::BadKey);
        }
        Ok(JwtKey {
            alg: Algorithm::HS256,
            kid: None,
            key: DecodingKey::from_secret(secret).map_err(|_| JwtError::BadKey)?,
        })
    }

    /// A public key in PEM (SPKI `PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`):
    /// Ed25519 verifies `EdDSA`, P-256 `ES256` and RSA `RS256`.
    pub fn public_pem(text: &str) -> Result<JwtKey, JwtError> {
        let pem = text.trim().as_bytes();
        let (alg, key) = if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (Algorithm::EdDSA, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (Algorithm::ES256, key)
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (Algorithm::RS256, key)
        } else {
            return Err(JwtError::BadKey);
        };
        JwtKey::checked(alg, None, key)
    }

    /// An Ed25519 public key: SPKI PEM, or its 32 raw bytes in base64.
    pub fn ed25519_from_text(text: &str) -> Result<JwtKey, JwtError> {
        use base64::Engine as _;
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            let key = DecodingKey::from_ed_pem(text.as_bytes()).map_err(|_| JwtError::BadKey)?;
            return JwtKey::checked(Algorithm::EdDSA, None, key);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| JwtError::BadKey)?;
        JwtKey::checked(Algorithm::EdDSA, None, DecodingKey::from_ed_der(&raw))
    }

    /// A key from an identity provider's key set.
    pub(crate) fn from_jwk(
        alg: Algorithm,
        kid: Option<String>,
        key: DecodingKey,
    ) -> Result<JwtKey, JwtError> {
        JwtKey::checked(alg, kid, key)
    }

    /// Refuses key material the crypto backend would choke on later: an
    /// Ed25519 key is exactly 32 bytes, a P-256 point 65. (An RSA key from
    /// a JWK is held as its components and checked when used.)
    fn checked(alg: Algorithm, kid: Option<String>, key: DecodingKey) -> Result<JwtKey, JwtError> {
        let len = key.try_get_as_bytes().map(<[u8]>::len);
        let ok = match alg {
            Algorithm::EdDSA => len == Ok(32),
            Algorithm::ES256 => len == Ok(65),
            _ => true,
        };
        if !ok {
            return Err(JwtError::BadKey);
        }
        Ok(JwtKey { alg, kid, key })
    }

    /// This key with a key id (what a token's `kid` header names).
    pub fn with_kid(mut self, kid: impl Into<String>) -> JwtKey {
        self.kid = Some(kid.into());
        self
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Whether a token with header `alg` and `kid` may have been signed by
    /// this key. A key without an id matches any `kid`.
    fn matches(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        self.alg == alg && (self.kid.is_none() || kid.is_none() || self.kid.as_deref() == kid)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the key is not a usable key")]
    BadKey,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("no key has the token's key id")]
    UnknownKey,
    #[error("the signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not yet valid")]
    NotYetValid,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token is from another issuer")]
    Issuer,
}

impl JwtError {
    fn from_crate(e: &jsonwebtoken::errors::Error) -> JwtError {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => JwtError::Signature,
            K::ExpiredSignature => JwtError::Expired,
            K::ImmatureSignature => JwtError::NotYetValid,
            K::InvalidAudience => JwtError::Audience,
            K::InvalidIssuer => JwtError::Issuer,
            K::InvalidAlgorithm | K::UnsupportedAlgorithm | K::MissingAlgorithm => {
                JwtError::Algorithm
            }
            K::MissingRequiredClaim(c) | K::InvalidClaimFormat(c) => match c.as_str() {
                "exp" => JwtError::Expired,
                "nbf" => JwtError::NotYetValid,
                "aud" => JwtError::Audience,
                "iss" => JwtError::Issuer,
                _ => JwtError::Malformed,
            },
            _ => JwtError::Malformed,
        }
    }
}

/// How sessions are verified: static keys, the optional JWKS source, the
/// audience and issuers accepted and the clock leeway.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    pub keys: Vec<JwtKey>,
    /// The `aud` a token must carry (one of, when it carries a list).
    pub audience: String,
    /// Accepted `iss` values; empty: `iss` is not checked.
    pub issuers: Vec<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf` (at most
    /// [`MAX_LEEWAY_SECS`]).
    pub leeway_secs: u64,
    /// The identity provider's key set, fetched and cached.
    pub jwks: Option<JwksSettings>,
}

impl JwtVerifier {
    /// The registered-claim checks for tokens signed with `alg`.
    pub(crate) fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway_secs.min(MAX_LEEWAY_SECS);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_audience(&[&self.audience]);
        let mut required = vec!["exp", "aud"];
        if !self.issuers.is_empty() {
            v.set_issuer(&self.issuers);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// Verifies `token` against the configured keys only (no key set).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = header(token)?;
        verify_with(self, token, &header, self.keys.iter())
    }
}

/// The token's header; an unknown algorithm (`none` included) is an
/// algorithm error, anything unreadable a malformed token.
pub(crate) fn header(token: &str) -> Result<Header, JwtError> {
    match jsonwebtoken::decode_header(token) {
        Ok(h) if ALGORITHMS.contains(&h.alg) => Ok(h),
        Ok(_) => Err(JwtError::Algorithm),
        Err(_) => {
            #[derive(serde::Deserialize)]
            struct AnyAlg {
                #[allow(dead_code)]
                alg: String,
            }
            use base64::Engine as _;
            let names_an_algorithm = token
                .split('.')
                .next()
                .and_then(|h| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(h)
                        .ok()
                })
                .is_some_and(|h| serde_json::from_slice::<AnyAlg>(&h).is_ok())
                && token.split('.').count() == 3;
            Err(if names_an_algorithm {
                JwtError::Algorithm
            } else {
                JwtError::Malformed
            })
        }
    }
}

/// Verifies `token` (whose header is `header`) against the candidate keys
/// among `keys`: the first whose signature verifies decides, and its
/// registered claims must then hold.
pub(crate) fn verify_with<'k>(
    verifier: &JwtVerifier,
    token: &str,
    header: &Header,
    keys: impl Iterator<Item = &'k JwtKey>,
) -> Result<Claims, JwtError> {
    let validation = verifier.validation(header.alg);
    let mut tried = false;
    for key in keys.filter(|k| k.matches(header.alg, header.kid.as_deref())) {
        tried = true;
        match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => match JwtError::from_crate(&e) {
                JwtError::Signature => continue,
                other => return Err(other),
            },
        }
    }
    Err(if tried {
        JwtError::Signature
    } else if header.kid.is_some() {
        JwtError::UnknownKey
    } else {
        JwtError::Algorithm
    })
}

/// A key sessions are signed with (tests, `annex dev` and the e2e suite
/// mint sessions with it).
pub struct SigningKey {
    alg: Algorithm,
    kid: Option<String>,
    encoding: EncodingKey,
    verifying: JwtKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?}, kid {:?})", self.alg, self.kid)
    }
}

impl SigningKey {
    /// An HS256 shared secret.
    pub fn hs256(secret: &[u8]) -> Result<SigningKey, JwtError> {
        Ok(SigningKey {
            alg: Algorithm::HS256,
            kid: None,
            encoding: EncodingKey::from_secret(secret).map_err(|_| JwtError::BadKey)?,
            verifying: JwtKey::hs256(secret)?,
        })
    }

    /// An Ed25519 key from its 32-byte seed.
    pub fn ed25519(seed: &[u8; 32]) -> Result<SigningKey, JwtError> {
        use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let private = key
            .to_pkcs8_pem(Default::default())
            .map_err(|_| JwtError::BadKey)?;
        let public = key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .map_err(|_| JwtError::BadKey)?;
        SigningKey::from_pem(Algorithm::EdDSA, private.as_bytes(), &public)
    }

    /// A private key in PEM (PKCS#8, or PKCS#1/SEC1 for RSA/EC) for `alg`
    /// (`RS256`, `ES256` or `EdDSA`) with its public key in PEM.
    pub fn from_pem(
        alg: Algorithm,
        private_pem: &[u8],
        public_pem: &str,
    ) -> Result<SigningKey, JwtError> {
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem),
            _ => return Err(JwtError::Algorithm),
        }
        .map_err(|_| JwtError::BadKey)?;
        let verifying = JwtKey::public_pem(public_pem)?;
        if verifying.alg != alg {
            return Err(JwtError::BadKey);
        }
        Ok(SigningKey {
            alg,
            kid: None,
            encoding,
            verifying,
        })
    }

    /// This key with a key id, written into each token's header.
    pub fn with_kid(mut self, kid: impl Into<String>) -> SigningKey {
        let kid = kid.into();
        self.verifying = self.verifying.with_kid(kid.clone());
        self.kid = Some(kid);
        self
    }

    /// The key that verifies this key's tokens.
    pub fn verifying(&self) -> JwtKey {
        self.verifying.clone()
    }

    /// Signs `claims` into a compact JWS.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, JwtError> {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| JwtError::BadKey)
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
