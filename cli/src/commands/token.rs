//! `annex token`: mint a development JWT for a tenant and user, for the edge's
//! `Authorization: Bearer` header.
//!
//! # Wire contract (the edge verifies exactly this; keep it in step with docs/authors.md)
//!
//! A compact JWS (RFC 7515): `base64url(header) "." base64url(claims) "." base64url(mac)`, each
//! part unpadded base64url, encoded and signed by the `jsonwebtoken` crate.
//!
//! - Header: `{"alg":"HS256","typ":"JWT"}`, with `"kid"` after `typ` when `--kid` is given.
//!   With `--key-file` (a PEM private key) the algorithm is the key's: `RS256` (RSA), `ES256`
//!   (P-256) or `EdDSA` (Ed25519), and no secret file is read.
//! - MAC: HMAC-SHA256 over the ASCII bytes `base64url(header) "." base64url(claims)`. The key is
//!   the secret file's bytes with leading and trailing ASCII whitespace removed, used as they
//!   are (not base64- or hex-decoded), and at least 32 bytes long. The file is
//!   `--secret-file`, else `ANNEX_JWT_SECRET_FILE`, else `.annex/dev-jwt.secret` (created with
//!   64 random hex characters and mode 0600 when absent).
//! - Claims, in this order:
//!
//! | claim         | JSON type         | value                                                       |
//! |---------------|-------------------|-------------------------------------------------------------|
//! | `sub`         | string            | user id (`--user`, default `dev-user`)                      |
//! | `tenant`      | string            | tenant id (`--tenant` / `ANNEX_TENANT`, required)           |
//! | `email`       | string            | `--email`, default `<user>@example.test`                    |
//! | `name`        | string            | display name (`--name`, default `Dev User`)                 |
//! | `user_type`   | string            | `internal` or `client` (`--user-type`, default `internal`)  |
//! | `client_id`   | string            | `--client-id`; the claim is absent when not given           |
//! | `permissions` | array of strings  | `--permission`…, default `["extension:read","extension:write"]` |
//! | `aud`         | string            | `--audience`, default `annex`                               |
//! | `iss`         | string            | `--issuer`; the claim is absent when not given              |
//! | `iat`         | integer           | issue time, Unix seconds (informational)                    |
//! | `exp`         | integer           | expiry, Unix seconds: `iat` + `--ttl` (default 1h)          |

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::Serialize;
use serde_json::json;

use super::Context;
use crate::cli::TokenArgs;
use crate::files;
use crate::output::{Report, note};

/// Where `annex dev` and the edge keep the dev secret.
pub const DEFAULT_SECRET_FILE: &str = ".annex/dev-jwt.secret";

/// HS256's key should be at least as long as its output (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

pub const DEFAULT_PERMISSIONS: [&str; 2] = ["extension:read", "extension:write"];

/// The claims, serialised in the documented order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub email: String,
    pub name: String,
    pub user_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub permissions: Vec<String>,
    pub aud: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

impl Claims {
    /// A dev user of `tenant` with read and write permission, valid one hour.
    pub fn dev(tenant: &str) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "dev-user".into(),
            tenant: tenant.to_owned(),
            email: "dev-user@example.test".into(),
            name: "Dev User".into(),
            user_type: "internal".into(),
            client_id: None,
            permissions: vec!["extension:read".into(), "extension:write".into()],
            aud: "annex".into(),
            iss: None,
            iat: now,
            exp: now + 3600,
        }
    }
}

pub fn run(cx: &Context, args: TokenArgs) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let signer = match (&args.key_file, &args.secret_file) {
        (Some(path), _) => Signer::from_pem(&files::read(path)?)
            .with_context(|| format!("{} is not a usable private key", path.display()))?,
        (None, Some(path)) => Signer::hs256(&load_secret(path)?)?,
        (None, None) => Signer::hs256(&load_or_create_secret(Path::new(DEFAULT_SECRET_FILE))?)?,
    };
    let iat = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(args.ttl.as_secs()).context("--ttl is too long")?;
    let claims = Claims {
        email: args
            .email
            .clone()
            .unwrap_or_else(|| format!("{}@example.test", args.user)),
        sub: args.user,
        tenant,
        name: args.name,
        user_type: args.user_type.as_str().to_owned(),
        client_id: args.client_id,
        permissions: if args.permissions.is_empty() {
            DEFAULT_PERMISSIONS.map(str::to_owned).to_vec()
        } else {
            args.permissions
        },
        aud: args.audience,
        iss: args.issuer,
        iat,
        exp: iat.checked_add(ttl).context("--ttl is too long")?,
    };
    let token = signer.sign(&claims, args.kid)?;
    Ok(Report::new(
        token.clone(),
        json!({ "token": token, "claims": claims }),
    ))
}

/// Encodes and signs `claims` with HS256 as described in the module docs.
pub fn mint(secret: &[u8], claims: &Claims) -> anyhow::Result<String> {
    Signer::hs256(secret)?.sign(claims, None)
}

/// A signing key and the algorithm it signs with.
pub struct Signer {
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer {
    pub fn hs256(secret: &[u8]) -> anyhow::Result<Signer> {
        Ok(Signer {
            alg: Algorithm::HS256,
            key: EncodingKey::from_secret(secret).context("the HS256 secret")?,
        })
    }

    /// A PEM private key: Ed25519 signs EdDSA, P-256 ES256, RSA RS256.
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<Signer> {
        let (alg, key) = if let Ok(k) = EncodingKey::from_ed_pem(pem) {
            (Algorithm::EdDSA, k)
        } else if let Ok(k) = EncodingKey::from_ec_pem(pem) {
            (Algorithm::ES256, k)
        } else if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
            (Algorithm::RS256, k)
        } else {
            anyhow::bail!("not an RSA, P-256 or Ed25519 private key in PEM");
        };
        Ok(Signer { alg, key })
    }

    /// The compact JWS: the header is written here so its bytes stay the
    /// documented ones (`alg`, `typ`, then `kid`); the crate signs.
    pub fn sign(&self, claims: &Claims, kid: Option<String>) -> anyhow::Result<String> {
        #[derive(Serialize)]
        struct JoseHeader {
            alg: Algorithm,
            typ: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            kid: Option<String>,
        }
        let header = JoseHeader {
            alg: self.alg,
            typ: "JWT",
            kid,
        };
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.key, self.alg)
            .with_context(|| format!("signing the token with {:?}", self.alg))?;
        Ok(format!("{signing_input}.{signature}"))
    }
}

/// The `tenant` claim of a JWT, read without verifying it (only the edge can
/// verify); `None` for anything that is not a JWT with that claim (an API
/// key, say).
pub fn tenant_claim(token: &str) -> Option<String> {
    let payload = token.trim().split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("tenant")?.as_str().map(str::to_owned)
}

/// Reads a secret file: its bytes, ASCII whitespace trimmed, at least [`MIN_SECRET_BYTES`].
pub fn load_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let raw = files::read(path)?;
    let secret = raw.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        anyhow::bail!(
            "{} holds {} bytes; an HS256 secret needs at least {MIN_SECRET_BYTES}",
            path.display(),
            secret.len()
        );
    }
    Ok(secret)
}

/// [`load_secret`], first creating the file with a random secret when it does not exist.
/// `annex dev` calls this too, so the CLI and the dev edge share one secret.
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    if !path.exists() {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        let text = format!("{}\n", hex_encode(&bytes));
        files::write_private(path, text.as_bytes(), false)?;
        note(format!(
            "created a new dev JWT secret in {}; the edge must verify with the same file",
            path.display()
        ));
    }
    load_secret(path)
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            sub: "u1".into(),
            tenant: "acme".into(),
            email: "u1@example.test".into(),
            name: "U One".into(),
            user_type: "client".into(),
            client_id: None,
            permissions: vec!["extension:read".into()],
            aud: "annex".into(),
            iss: None,
            iat: 1_700_000_000,
            exp: 1_700_003_600,
        }
    }

    #[test]
    fn tokens_are_hs256_over_the_documented_claims() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let token = mint(secret, &claims()).expect("mint");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = URL_SAFE_NO_PAD.decode(parts[0]).expect("b64");
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        assert_eq!(
            payload,
            json!({
                "sub": "u1", "tenant": "acme", "email": "u1@example.test", "name": "U One",
                "user_type": "client", "permissions": ["extension:read"], "aud": "annex",
                "iat": 1_700_000_000, "exp": 1_700_003_600,
            }),
            "client_id is omitted when absent"
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let mac = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        ring::hmac::verify(&key, format!("{}.{}", parts[0], parts[1]).as_bytes(), &mac)
            .expect("verifies with the same secret");

        let with_client = Claims {
            client_id: Some("c9".into()),
            ..claims()
        };
        let token = mint(secret, &with_client).expect("mint");
        let payload = token.split('.').nth(1).expect("payload");
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        assert_eq!(payload["client_id"], "c9");
    }

    #[test]
    fn key_files_sign_with_their_algorithm_and_kid() {
        let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/../edge/tests/keys");
        for (name, alg) in [
            ("rsa-a", Algorithm::RS256),
            ("ec", Algorithm::ES256),
            ("ed", Algorithm::EdDSA),
        ] {
            let private = std::fs::read(format!("{keys}/{name}.key")).expect("key");
            let public = std::fs::read(format!("{keys}/{name}.pub")).expect("pub");
            let signer = Signer::from_pem(&private).expect("signer");
            let with_iss = Claims {
                iss: Some("https://app.example.com".into()),
                exp: chrono::Utc::now().timestamp() + 60,
                ..claims()
            };
            let token = signer.sign(&with_iss, Some("k1".into())).expect("sign");
            let header = jsonwebtoken::decode_header(&token).expect("header");
            assert_eq!((header.alg, header.kid.as_deref()), (alg, Some("k1")));
            let key = match alg {
                Algorithm::RS256 => jsonwebtoken::DecodingKey::from_rsa_pem(&public),
                Algorithm::ES256 => jsonwebtoken::DecodingKey::from_ec_pem(&public),
                _ => jsonwebtoken::DecodingKey::from_ed_pem(&public),
            }
            .expect("public key");
            let mut v = jsonwebtoken::Validation::new(alg);
            v.set_audience(&["annex"]);
            v.set_issuer(&["https://app.example.com"]);
            let got = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v)
                .expect("verifies with the public key");
            assert_eq!(got.claims["tenant"], "acme", "{name}");
        }
        assert!(
            Signer::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }

    #[test]
    fn the_tenant_claim_is_read_from_a_jwt_only() {
        let token = mint(b"0123456789abcdef0123456789abcdef", &claims()).expect("mint");
        assert_eq!(tenant_claim(&token).as_deref(), Some("acme"));
        assert_eq!(tenant_claim("ak_live_0123456789"), None);
        assert_eq!(tenant_claim("a.b.c"), None);
    }

    #[test]
    fn secrets_are_created_once_and_must_be_long_enough() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".annex/dev-jwt.secret");
        let first = load_or_create_secret(&path).expect("create");
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_secret(&path).expect("reuse"), first);

        let short = dir.path().join("short");
        std::fs::write(&short, "too short\n").expect("write");
        let err = load_secret(&short).expect_err("short");
        assert!(err.to_string().contains("at least 32"), "{err}");
    }
}
