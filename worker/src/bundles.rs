//! Where bundles come from and how the worker decides to trust them. The
//! worker never compiles bytes it has not checked itself: the archive's
//! SHA-256 must equal the requested content hash, and the signature record
//! must verify against the current trust keys (`annex_bundle::TrustBundle`)
//! before `dist/main.wasm` is taken out of the archive.
//!
//! Sources: [`DirBundleSource`] reads `<hex>.tar.zst` plus `<hex>.sig.json`
//! from a local directory (tests and `annex dev`); [`GrpcBundleSource`]
//! streams `Registry.FetchBundle`, the whole stream bounded by
//! [`FETCH_TIMEOUT`]. Where the trust keys come from is `trust`'s
//! ([`StaticTrust`], [`GrpcTrust`]).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use annex_bundle::manifest::UnsupportedRuntime;
use annex_bundle::{ContentHash, Limits, TrustBundle, TrustError, World};
use annex_ops::upstream::Upstream;
use annex_proto::pb;
use annex_proto::pb::registry_client::RegistryClient;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

pub use crate::trust::{GrpcTrust, StaticTrust};

/// Deadline of one `Registry.FetchBundle`, the whole stream: a bundle is at
/// most 200 MiB, and 120 s is under 2 MB/s for that.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The signed identity of a bundle (what the signature statement binds the
/// content hash to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    pub(crate) publisher: String,
    pub(crate) name: String,
    pub(crate) version: String,
    /// Standard base64 Ed25519 signature.
    pub(crate) signature: String,
    /// Optional: every trusted key of the publisher is tried when empty.
    #[serde(default)]
    pub(crate) key_id: String,
}

/// Archive bytes with their signature record, not yet verified.
#[derive(Debug, Clone)]
pub struct FetchedBundle {
    pub(crate) bytes: Vec<u8>,
    pub(crate) signature: SignatureRecord,
}

/// Why a bundle could not be used. Displayed after `bundle_fetch_failed: `.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("invalid content hash: {0}")]
    InvalidHash(String),
    #[error("bundle {0} not found")]
    NotFound(String),
    #[error("fetching the bundle failed: {0}")]
    Fetch(String),
    #[error("archive hash mismatch: expected {expected}, got {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("signature not trusted: {0}")]
    Untrusted(#[from] TrustError),
    #[error("trust keys unavailable: {0}")]
    TrustUnavailable(String),
    #[error("{0}")]
    Archive(#[from] annex_bundle::ArchiveError),
    #[error("{0}")]
    Runtime(#[from] UnsupportedRuntime),
}

/// Parses a content hash; like Alga's execute, the `sha256:` prefix is optional.
pub(crate) fn parse_hash(s: &str) -> Result<ContentHash, BundleError> {
    let s = s.trim();
    ContentHash::from_str(s)
        .or_else(|_| ContentHash::from_hex(s))
        .map_err(|e| BundleError::InvalidHash(e.to_string()))
}

/// Where bundle bytes come from.
#[async_trait]
pub trait BundleSource: Send + Sync + 'static {
    async fn fetch(&self, hash: &ContentHash) -> Result<FetchedBundle, BundleError>;
}

/// The current trust keys.
#[async_trait]
pub trait TrustSource: Send + Sync + 'static {
    async fn trust(&self) -> Result<Arc<TrustBundle>, BundleError>;

    /// The keys listed again now, for a bundle the current keys do not
    /// admit (a key added since the last listing); a source without a
    /// remote returns the current keys.
    async fn relisted(&self) -> Result<Arc<TrustBundle>, BundleError> {
        self.trust().await
    }
}

/// What the worker takes out of a verified bundle.
pub(crate) struct Extracted {
    /// `dist/main.wasm`.
    pub(crate) component: Vec<u8>,
    /// The world the manifest's `runtime` chose.
    pub(crate) world: World,
}

/// Checks hash and signature (no signature without `trust`: the runner
/// API's plan when no trust keys are configured), then unpacks and returns
/// `dist/main.wasm` and the manifest's world. CPU-bound (hashing, zstd):
/// call it on a blocking thread.
pub(crate) fn verify_and_extract(
    hash: &ContentHash,
    bundle: &FetchedBundle,
    trust: Option<&TrustBundle>,
) -> Result<Extracted, BundleError> {
    let actual = ContentHash::of(&bundle.bytes);
    if actual != *hash {
        return Err(BundleError::HashMismatch {
            expected: hash.to_string(),
            actual: actual.to_string(),
        });
    }
    if let Some(trust) = trust {
        verify_signature(hash, &bundle.signature, trust)?;
    }
    let mut unpacked = annex_bundle::archive::unpack(&bundle.bytes, &Limits::default())?;
    let world = match unpacked.file(annex_bundle::archive::MANIFEST_PATH) {
        Some(manifest) => World::of_manifest_json(manifest)?,
        None => World::default(),
    };
    unpacked.require_component()?;
    let component = unpacked
        .files
        .remove(annex_bundle::archive::COMPONENT_PATH)
        .unwrap_or_default();
    Ok(Extracted { component, world })
}

/// Checks only the signature record (the hash is the caller's key).
pub(crate) fn verify_signature(
    hash: &ContentHash,
    record: &SignatureRecord,
    trust: &TrustBundle,
) -> Result<String, BundleError> {
    let key_id = Some(record.key_id.as_str()).filter(|k| !k.is_empty());
    Ok(trust.verify(
        hash,
        &record.publisher,
        &record.name,
        &record.version,
        &record.signature,
        key_id,
        now_ms(),
    )?)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Bundles in a local directory: `<hex>.tar.zst` and `<hex>.sig.json`
/// (a [`SignatureRecord`]).
#[derive(Debug, Clone)]
pub struct DirBundleSource {
    dir: PathBuf,
}

impl DirBundleSource {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> DirBundleSource {
        DirBundleSource { dir: dir.into() }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Stores a bundle so [`BundleSource::fetch`] finds it. Each file is
    /// written aside and renamed into place, the signature record first: a
    /// concurrent fetch sees no bundle, or a whole bundle with its whole
    /// record, never a half-written file. Tests' publisher only.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn store(
        &self,
        bytes: &[u8],
        signature: &SignatureRecord,
    ) -> std::io::Result<ContentHash> {
        let hash = ContentHash::of(bytes);
        std::fs::create_dir_all(&self.dir)?;
        let sig = serde_json::to_vec_pretty(signature).map_err(std::io::Error::other)?;
        self.write_whole(&format!("{}.sig.json", hash.hex()), &sig)?;
        self.write_whole(&format!("{}.tar.zst", hash.hex()), bytes)?;
        Ok(hash)
    }

    /// Writes `name` in the directory through a uniquely named temporary file.
    #[cfg(any(test, feature = "testing"))]
    fn write_whole(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let aside = self
            .dir
            .join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        std::fs::write(&aside, bytes)?;
        std::fs::rename(&aside, self.dir.join(name))
    }
}

#[async_trait]
impl BundleSource for DirBundleSource {
    async fn fetch(&self, hash: &ContentHash) -> Result<FetchedBundle, BundleError> {
        let archive = self.dir.join(format!("{}.tar.zst", hash.hex()));
        let sig = self.dir.join(format!("{}.sig.json", hash.hex()));
        let bytes = match tokio::fs::read(&archive).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BundleError::NotFound(hash.to_string()));
            }
            Err(e) => return Err(BundleError::Fetch(e.to_string())),
        };
        let sig = tokio::fs::read(&sig)
            .await
            .map_err(|e| BundleError::Fetch(format!("signature record: {e}")))?;
        let signature = serde_json::from_slice(&sig)
            .map_err(|e| BundleError::Fetch(format!("signature record: {e}")))?;
        Ok(FetchedBundle { bytes, signature })
    }
}

/// No bundles: a worker that only serves the runner API (whose bundles
/// come from Alga's bundle store) answers every `Worker.Execute` with this.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBundleSource;

#[async_trait]
impl BundleSource for NoBundleSource {
    async fn fetch(&self, hash: &ContentHash) -> Result<FetchedBundle, BundleError> {
        Err(BundleError::NotFound(hash.to_string()))
    }
}

/// `Registry.FetchBundle` on the control plane.
#[derive(Clone)]
pub struct GrpcBundleSource {
    client: RegistryClient<Upstream>,
    /// Largest archive accepted from the stream (Alga's 200 MiB).
    max_bytes: u64,
}

impl GrpcBundleSource {
    /// `channel`: the control plane's replicas, or one fixed channel.
    pub fn new(channel: impl Into<Upstream>) -> GrpcBundleSource {
        GrpcBundleSource {
            client: RegistryClient::new(channel.into()).max_decoding_message_size(16 * 1024 * 1024),
            max_bytes: Limits::default().max_archive_bytes,
        }
    }
}

#[async_trait]
impl BundleSource for GrpcBundleSource {
    async fn fetch(&self, hash: &ContentHash) -> Result<FetchedBundle, BundleError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_stream(hash))
            .await
            .map_err(|_| {
                BundleError::Fetch(format!(
                    "no complete bundle within {} s",
                    FETCH_TIMEOUT.as_secs()
                ))
            })?
    }
}

impl GrpcBundleSource {
    async fn fetch_stream(&self, hash: &ContentHash) -> Result<FetchedBundle, BundleError> {
        let mut request = annex_ops::trace_context::request(pb::FetchBundleRequest {
            content_hash: hash.to_string(),
        });
        request.set_timeout(FETCH_TIMEOUT);
        let mut stream = self
            .client
            .clone()
            .fetch_bundle(request)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => BundleError::NotFound(hash.to_string()),
                _ => BundleError::Fetch(s.message().to_string()),
            })?
            .into_inner();
        let mut info = None;
        let mut bytes = Vec::new();
        while let Some(part) = stream.next().await {
            let part = part.map_err(|s| BundleError::Fetch(s.message().to_string()))?;
            match part.part {
                Some(pb::fetch_bundle_response::Part::Info(i)) => info = Some(i),
                Some(pb::fetch_bundle_response::Part::Chunk(c)) => {
                    if (bytes.len() + c.len()) as u64 > self.max_bytes {
                        return Err(BundleError::Fetch("bundle exceeds the size limit".into()));
                    }
                    bytes.extend_from_slice(&c);
                }
                None => {}
            }
        }
        let info = info.ok_or_else(|| BundleError::Fetch("no bundle info in the stream".into()))?;
        Ok(FetchedBundle {
            bytes,
            signature: SignatureRecord {
                publisher: info.publisher,
                name: info.name,
                version: info.version,
                signature: info.signature,
                key_id: info.signing_key_id,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_with_or_without_prefix() {
        let hex = "ab".repeat(32);
        assert!(parse_hash(&format!("sha256:{hex}")).is_ok());
        assert!(parse_hash(&hex.to_uppercase()).is_ok());
        assert!(parse_hash("sha256:abc").is_err());
    }
}
