//! Sealing install secrets at rest: the secret map is encrypted with
//! AES-256-GCM under a key-encryption key (KEK) read from a file, bound to the
//! install id as associated data so a row copied onto another install does not
//! open. Rows written by Alga as `inline/base64` (base64 of a JSON map of
//! strings; not encryption) are still readable. Vault transit rows are refused
//! with a clear error: Annex does not talk to Vault.
//!
//! Only the control plane holds the KEK; workers get opened values for one
//! execution through `HostServices.GetSecrets`.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Algorithm name of rows sealed by Annex.
pub(crate) const ALGORITHM: &str = "annex-aead:v1";
/// Alga's unencrypted envelope (read by the catch-all branch of
/// [`Sealer::open`]; named for the tests).
#[cfg(test)]
const ALGA_INLINE: &str = "inline/base64";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("reading the key-encryption key {path}: {source}")]
    ReadKey {
        path: String,
        source: std::io::Error,
    },
    #[error("the key-encryption key must be 32 bytes, given raw, as 64 hex digits or as base64")]
    BadKey,
    #[error("the secret envelope does not open (wrong key, or tampered)")]
    Open,
    #[error("the secret envelope is malformed: {0}")]
    Malformed(String),
    #[error("secret algorithm {0} is not supported by Annex")]
    Unsupported(String),
}

/// Everything keyed by the key-encryption key: the secrets AEAD and the
/// execution-grant signer derived from it.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
    grants: crate::grant::GrantSigner,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn from_bytes(key: &[u8]) -> Result<Sealer, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| SealError::BadKey)?;
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
            grants: crate::grant::GrantSigner::from_kek(key),
        })
    }

    /// The execution-grant signer derived from the same KEK.
    pub(crate) fn grants(&self) -> &crate::grant::GrantSigner {
        &self.grants
    }

    /// Reads a KEK file: 32 raw bytes, 64 hex digits, or base64 of 32 bytes
    /// (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Sealer, SealError> {
        let data = std::fs::read(path).map_err(|source| SealError::ReadKey {
            path: path.display().to_string(),
            source,
        })?;
        Sealer::from_bytes(&decode_key(&data)?)
    }

    /// A fresh random key, written to `path` (mode 0600) when it does not
    /// exist yet; used by `annex dev` and the tests.
    pub fn load_or_create(path: &Path) -> Result<Sealer, SealError> {
        if !path.exists() {
            let mut key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| SealError::BadKey)?;
            let io = |source| SealError::ReadKey {
                path: path.display().to_string(),
                source,
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            // Readable by the owner only from the moment it exists.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(io)?;
            std::io::Write::write_all(&mut file, hex::encode(key).as_bytes()).map_err(io)?;
        }
        Sealer::from_file(path)
    }

    /// Seals `values` for `install_id`: base64(nonce ‖ ciphertext ‖ tag).
    pub(crate) fn seal(
        &self,
        install_id: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<String, SealError> {
        let mut buf =
            serde_json::to_vec(values).map_err(|e| SealError::Malformed(e.to_string()))?;
        let mut nonce = [0u8; 12];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Open)?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(install_id.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(B64.encode(out))
    }

    /// Opens a stored envelope of either algorithm.
    pub(crate) fn open(
        &self,
        install_id: &str,
        algorithm: &str,
        ciphertext: &str,
    ) -> Result<BTreeMap<String, String>, SealError> {
        let algorithm = algorithm.trim().to_lowercase();
        if ciphertext.trim().is_empty() {
            return Ok(BTreeMap::new());
        }
        if algorithm.starts_with("vault-transit") {
            return Err(SealError::Unsupported(algorithm));
        }
        let raw = B64
            .decode(ciphertext.trim())
            .map_err(|e| SealError::Malformed(e.to_string()))?;
        let plain = if algorithm == ALGORITHM {
            if raw.len() < 12 + AES_256_GCM.tag_len() {
                return Err(SealError::Malformed("too short".into()));
            }
            let (nonce, sealed) = raw.split_at(12);
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
            let mut sealed = sealed.to_vec();
            let plain = self
                .key
                .open_in_place(nonce, Aad::from(install_id.as_bytes()), &mut sealed)
                .map_err(|_| SealError::Open)?;
            plain.to_vec()
        } else {
            // Alga: any other algorithm is base64 of a JSON map of strings.
            raw
        };
        serde_json::from_slice::<BTreeMap<String, String>>(&plain)
            .map_err(|e| SealError::Malformed(format!("not a JSON map of strings: {e}")))
    }
}

fn decode_key(data: &[u8]) -> Result<Vec<u8>, SealError> {
    if data.len() == 32 {
        return Ok(data.to_vec());
    }
    let text = std::str::from_utf8(data)
        .map_err(|_| SealError::BadKey)?
        .trim();
    if text.len() == 64
        && let Ok(k) = hex::decode(text)
    {
        return Ok(k);
    }
    match B64.decode(text) {
        Ok(k) if k.len() == 32 => Ok(k),
        _ => Err(SealError::BadKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_bytes(&[7u8; 32]).expect("key")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sealed_secrets_open_only_for_their_install_and_key() {
        let s = sealer();
        let values = map(&[("api_key", "s3cret"), ("b", "2")]);
        let ct = s.seal("install-a", &values).expect("seal");
        assert!(!ct.contains("s3cret"));
        assert_eq!(s.open("install-a", ALGORITHM, &ct).expect("open"), values);
        assert!(matches!(
            s.open("install-b", ALGORITHM, &ct),
            Err(SealError::Open)
        ));
        let other = Sealer::from_bytes(&[8u8; 32]).expect("key");
        assert!(matches!(
            other.open("install-a", ALGORITHM, &ct),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn alga_inline_envelopes_are_readable() {
        let ct = B64.encode(br#"{"ALGA_API_KEY":"k1","other":"v"}"#);
        let m = sealer().open("x", ALGA_INLINE, &ct).expect("open");
        assert_eq!(m, map(&[("ALGA_API_KEY", "k1"), ("other", "v")]));
        assert!(
            sealer()
                .open("x", ALGA_INLINE, "  ")
                .expect("empty")
                .is_empty()
        );
        let bad = B64.encode(br#"{"n":1}"#);
        assert!(matches!(
            sealer().open("x", ALGA_INLINE, &bad),
            Err(SealError::Malformed(_))
        ));
        assert!(matches!(
            sealer().open("x", "vault-transit:v1", "vault:v1:abc"),
            Err(SealError::Unsupported(_))
        ));
    }

    #[test]
    fn key_files_accept_raw_hex_and_base64() {
        let dir = tempfile::tempdir().expect("tmp");
        for (name, data) in [
            ("raw", vec![1u8; 32]),
            ("hex", hex::encode([1u8; 32]).into_bytes()),
            ("b64", format!("{}\n", B64.encode([1u8; 32])).into_bytes()),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, data).expect("write");
            Sealer::from_file(&p).expect(name);
        }
        let p = dir.path().join("short");
        std::fs::write(&p, b"abc").expect("write");
        assert!(matches!(Sealer::from_file(&p), Err(SealError::BadKey)));
        let created = dir.path().join("new/kek");
        let a = Sealer::load_or_create(&created).expect("create");
        let ct = a.seal("i", &map(&[("k", "v")])).expect("seal");
        let b = Sealer::load_or_create(&created).expect("reload");
        assert_eq!(
            b.open("i", ALGORITHM, &ct).expect("open"),
            map(&[("k", "v")])
        );
    }
}
