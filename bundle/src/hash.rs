//! Content hashes: `sha256:<64 lowercase hex>` over the exact bytes of `bundle.tar.zst`
//! (docs/design/alga-compatibility.md, "Bundles and signing").
//!
//! This module owns the one validated representation of a content hash, so every crate compares
//! hashes the same way (lowercase, fixed length, prefixed). It hashes bytes it is given and nothing
//! else: it never reads files, and it never hashes canonicalised archive contents (repacking a
//! bundle is meant to change its hash, as in Alga).

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The prefix every textual content hash carries.
pub const PREFIX: &str = "sha256:";

/// Number of hex characters in a SHA-256 digest.
const HEX_LEN: usize = 64;

/// Why a string is not a content hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("content hash must start with `sha256:`")]
    MissingPrefix,
    #[error("content hash must be 64 hex characters after `sha256:`")]
    InvalidHex,
}

/// A validated SHA-256 content hash. Displays (and serialises) as `sha256:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash {
    /// Always exactly 64 lowercase hex characters.
    hex: String,
}

impl ContentHash {
    /// Hashes `bytes` in one go.
    pub fn of(bytes: &[u8]) -> ContentHash {
        let mut hasher = ContentHasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// Parses a bare hex digest, as Alga's upload `declaredHash` and finalize response carry it.
    /// Uppercase hex is accepted and lower-cased.
    pub fn from_hex(hex: &str) -> Result<ContentHash, HashError> {
        if hex.len() != HEX_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HashError::InvalidHex);
        }
        Ok(ContentHash {
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// The 64 lowercase hex characters, without the `sha256:` prefix (used in object keys).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The raw 32-byte digest.
    pub fn digest(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // The constructor guarantees 64 hex characters, so decoding cannot fail; fall back to
        // zeros rather than panic if that invariant were ever broken.
        let _ = hex::decode_to_slice(&self.hex, &mut out);
        out
    }
}

impl FromStr for ContentHash {
    type Err = HashError;

    /// Accepts `sha256:<64 hex>`; hex may be uppercase and is lower-cased. The prefix itself must
    /// be lowercase, and nothing else (whitespace, other algorithms, other lengths) is accepted.
    fn from_str(s: &str) -> Result<ContentHash, HashError> {
        let hex = s.strip_prefix(PREFIX).ok_or(HashError::MissingPrefix)?;
        ContentHash::from_hex(hex)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ContentHash, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Streaming hasher for archives that arrive in chunks (uploads, downloads).
/// Also an [`io::Write`], so `io::copy` can feed it.
#[derive(Clone, Default)]
pub struct ContentHasher {
    inner: Sha256,
}

impl ContentHasher {
    pub fn new() -> ContentHasher {
        ContentHasher::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
    }

    pub fn finish(self) -> ContentHash {
        ContentHash {
            hex: hex::encode(self.inner.finalize()),
        }
    }
}

impl io::Write for ContentHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_bytes_like_sha256sum() {
        let h = ContentHash::of(b"");
        assert_eq!(h.hex(), EMPTY);
        assert_eq!(h.to_string(), format!("sha256:{EMPTY}"));
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = ContentHasher::new();
        for chunk in data.chunks(333) {
            hasher.update(chunk);
        }
        assert_eq!(hasher.finish(), ContentHash::of(&data));

        let mut writer = ContentHasher::new();
        std::io::copy(&mut &data[..], &mut writer).expect("copy into hasher");
        assert_eq!(writer.finish(), ContentHash::of(&data));
    }

    #[test]
    fn parse_accepts_and_normalises() {
        let upper = format!("sha256:{}", EMPTY.to_ascii_uppercase());
        let h: ContentHash = upper.parse().expect("uppercase hex parses");
        assert_eq!(h.hex(), EMPTY);
        assert_eq!(h, ContentHash::of(b""));
        assert_eq!(ContentHash::from_hex(EMPTY), Ok(ContentHash::of(b"")));
        assert_eq!(h.digest()[..4], [0xe3, 0xb0, 0xc4, 0x42]);
    }

    #[test]
    fn parse_rejects_everything_else() {
        let cases = [
            (EMPTY.to_string(), HashError::MissingPrefix),
            (format!("SHA256:{EMPTY}"), HashError::MissingPrefix),
            (format!("sha512:{EMPTY}"), HashError::MissingPrefix),
            (format!(" sha256:{EMPTY}"), HashError::MissingPrefix),
            (format!("sha256:{EMPTY} "), HashError::InvalidHex),
            (format!("sha256:{}", &EMPTY[..63]), HashError::InvalidHex),
            (format!("sha256:{EMPTY}0"), HashError::InvalidHex),
            (format!("sha256:{}g", &EMPTY[..63]), HashError::InvalidHex),
            ("sha256:".to_string(), HashError::InvalidHex),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<ContentHash>(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn serde_is_the_display_string() {
        let h = ContentHash::of(b"x");
        let json = serde_json::to_string(&h).expect("serialise");
        assert_eq!(json, format!("\"{h}\""));
        let back: ContentHash = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, h);
        assert!(serde_json::from_str::<ContentHash>("\"sha256:zz\"").is_err());
    }
}
