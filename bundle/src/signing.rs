//! Ed25519 bundle signatures over a domain-separated statement
//! (docs/design/alga-compatibility.md, "Bundles and signing").
//!
//! This module owns the signed statement's byte format (a wire contract between `annex sign`, the
//! control plane and the worker), key encodings (PKCS#8 PEM private keys; SPKI PEM or raw base64
//! public keys) and single-key sign/verify with `verify_strict`. It must not decide whom to trust:
//! which keys may sign for a publisher, and when, is [`crate::trust`]'s job.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::hash::ContentHash;

/// First bytes of every statement; the version suffix changes if the format ever does.
pub(crate) const DOMAIN: &[u8] = b"annex-bundle-signature-v1\n";

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(String),
    #[error("signature is not 64 base64-encoded bytes")]
    Malformed,
    #[error("signature does not verify")]
    Mismatch,
}

/// The bytes a bundle signature covers.
///
/// Format, version 1 (a wire contract; never change it in place, add a `-v2` domain instead):
///
/// ```text
/// "annex-bundle-signature-v1\n"
/// len(hash)      as u64 big-endian (8 bytes) || hash      as UTF-8, the text `sha256:<64 hex>`
/// len(publisher) as u64 big-endian           || publisher as UTF-8
/// len(name)      as u64 big-endian           || name      as UTF-8
/// len(version)   as u64 big-endian           || version   as UTF-8
/// ```
///
/// Lengths count bytes. Nothing follows the last field. Fields are used exactly as given (no
/// trimming, no case folding): `publisher` and `name` as the manifest spells them, `version` as
/// the exact version being registered. The length prefixes make the encoding injective, so
/// `("a", "bc")` and `("ab", "c")` give different statements, and the domain line keeps these
/// signatures from being valid for any other Ed25519 use of the same key.
pub fn statement(hash: &ContentHash, publisher: &str, name: &str, version: &str) -> Vec<u8> {
    let hash = hash.to_string();
    let fields = [hash.as_str(), publisher, name, version];
    let len = DOMAIN.len() + fields.iter().map(|f| 8 + f.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(DOMAIN);
    for field in fields {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

/// A publisher's signing key. Debug output shows only the key id.
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> KeyPair {
        KeyPair {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// A key from its 32-byte seed (RFC 8032 private key), for tests and key import.
    pub fn from_seed(seed: &[u8; 32]) -> KeyPair {
        KeyPair {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// Reads `-----BEGIN PRIVATE KEY-----` (PKCS#8 v1 or v2, as `openssl genpkey -algorithm
    /// ed25519` writes).
    pub fn from_pkcs8_pem(pem: &str) -> Result<KeyPair, SignatureError> {
        SigningKey::from_pkcs8_pem(pem.trim())
            .map(|signing| KeyPair { signing })
            .map_err(|e| SignatureError::InvalidPrivateKey(e.to_string()))
    }

    /// PKCS#8 v1 PEM (seed only, no embedded public key): the form every OpenSSL reads.
    pub fn to_pkcs8_pem(&self) -> Result<String, SignatureError> {
        let bytes = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.signing.to_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|e| SignatureError::InvalidPrivateKey(e.to_string()))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key: self.signing.verifying_key(),
        }
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.public_key().key_id())
    }
}

/// An Ed25519 public key. Serialises as standard base64 of the 32 raw bytes; deserialises from
/// anything [`PublicKey::parse`] accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// Accepts an SPKI PEM (`-----BEGIN PUBLIC KEY-----`), or base64 (standard or URL-safe, with
    /// or without padding) of either the raw 32-byte key or its DER SPKI (a PEM body without the
    /// armour lines). Small-order ("weak") keys are refused: they would verify forged signatures
    /// under non-strict verification and have no legitimate use.
    pub fn parse(text: &str) -> Result<PublicKey, SignatureError> {
        let text = text.trim();
        let invalid = |why: String| SignatureError::InvalidPublicKey(why);
        let key = if text.starts_with("-----BEGIN") {
            VerifyingKey::from_public_key_pem(text).map_err(|e| invalid(e.to_string()))?
        } else {
            let bytes =
                decode_base64(text).ok_or_else(|| invalid("neither PEM nor base64".into()))?;
            match <&[u8; 32]>::try_from(bytes.as_slice()) {
                Ok(raw) => return PublicKey::from_bytes(raw),
                Err(_) => VerifyingKey::from_public_key_der(&bytes).map_err(|_| {
                    invalid(format!(
                        "{} bytes is neither a raw 32-byte key nor a DER SPKI",
                        bytes.len()
                    ))
                })?,
            }
        };
        PublicKey::checked(key)
    }

    /// The raw 32-byte key.
    pub fn from_bytes(raw: &[u8; 32]) -> Result<PublicKey, SignatureError> {
        let key = VerifyingKey::from_bytes(raw)
            .map_err(|e| SignatureError::InvalidPublicKey(e.to_string()))?;
        PublicKey::checked(key)
    }

    fn checked(key: VerifyingKey) -> Result<PublicKey, SignatureError> {
        if key.is_weak() {
            return Err(SignatureError::InvalidPublicKey(
                "small-order (weak) key".into(),
            ));
        }
        Ok(PublicKey { key })
    }

    /// SPKI PEM with LF line endings.
    pub fn to_pem(&self) -> String {
        // Encoding a valid key to SPKI cannot fail; if it ever did, the raw base64 still
        // round-trips through `parse`.
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_else(|_| self.to_base64())
    }

    /// Standard base64 (padded) of the raw 32 bytes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// `ed25519:` + the first 16 hex characters of SHA-256 over the raw key bytes.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.key.as_bytes());
        format!("ed25519:{}", hex::encode(&digest[..8]))
    }

    /// Checks a raw signature over raw bytes (`verify_strict`: canonical encodings only).
    fn verify_message(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        self.key
            .verify_strict(message, signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PublicKey, D::Error> {
        let s = String::deserialize(deserializer)?;
        PublicKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// Decodes a base64 signature (any of the four common alphabets/paddings) of exactly 64 bytes.
pub(crate) fn parse_signature(signature_b64: &str) -> Result<Signature, SignatureError> {
    let bytes = decode_base64(signature_b64.trim()).ok_or(SignatureError::Malformed)?;
    Signature::from_slice(&bytes).map_err(|_| SignatureError::Malformed)
}

/// Signs the [`statement`] for a bundle; returns standard (padded) base64 of the 64-byte
/// signature.
pub fn sign_bundle(
    key: &KeyPair,
    hash: &ContentHash,
    publisher: &str,
    name: &str,
    version: &str,
) -> String {
    let signature = key.signing.sign(&statement(hash, publisher, name, version));
    STANDARD.encode(signature.to_bytes())
}

/// Verifies a base64 signature over the [`statement`] for a bundle with one key.
pub fn verify_bundle(
    key: &PublicKey,
    hash: &ContentHash,
    publisher: &str,
    name: &str,
    version: &str,
    signature_b64: &str,
) -> Result<(), SignatureError> {
    let signature = parse_signature(signature_b64)?;
    key.verify_message(&statement(hash, publisher, name, version), &signature)
}

/// Like [`verify_bundle`] with an already-decoded signature, so a trust bundle decodes once.
pub(crate) fn verify_parsed(
    key: &PublicKey,
    statement: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    key.verify_message(statement, signature)
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;
