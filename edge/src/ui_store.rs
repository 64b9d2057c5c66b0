//! The UI files of bundles, by content hash, on local disk: fetched from the
//! control plane (`Registry.FetchBundle`), checked against the hash they were
//! asked for, unpacked with the bundle crate's capped unpacker, and kept
//! under `<root>/<hex>/` within a total size bound (least recently used
//! bundles are evicted first). Only `ui/**` is written; the component never
//! touches the edge's disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use annex_bundle::ContentHash;
use annex_ops::upstream::Upstream;
use annex_proto::pb;
use annex_proto::pb::registry_client::RegistryClient;
use parking_lot::Mutex;
use tokio_stream::StreamExt as _;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UiStoreError {
    /// The bytes the control plane sent do not hash to what was asked: 502.
    #[error("archive hash mismatch: expected {expected}, got {actual}")]
    HashMismatch { expected: String, actual: String },
    /// No such bundle: 404.
    #[error("no bundle with this content hash")]
    NotFound,
    /// Fetching, unpacking or writing failed: 500.
    #[error("extracting the bundle failed: {0}")]
    Extract(String),
}

#[derive(Debug, Clone)]
pub struct UiStoreSettings {
    pub root: PathBuf,
    /// Total bytes of UI files kept on disk.
    pub max_bytes: u64,
}

#[derive(Debug)]
struct Cached {
    bytes: u64,
    used: Instant,
}

pub(crate) struct UiStore {
    registry: RegistryClient<Upstream>,
    settings: UiStoreSettings,
    index: Mutex<HashMap<String, Cached>>,
    fills: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    etags: Mutex<HashMap<PathBuf, String>>,
    fills_total: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for UiStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// ETags remembered before the map is cleared.
const MAX_ETAGS: usize = 20_000;

impl UiStore {
    /// Opens the store, indexing what an earlier process left (partial
    /// fills are removed).
    pub(crate) fn open(
        registry: RegistryClient<Upstream>,
        settings: UiStoreSettings,
        fills_total: prometheus_client::metrics::counter::Counter,
    ) -> std::io::Result<UiStore> {
        std::fs::create_dir_all(&settings.root)?;
        let mut index = HashMap::new();
        for entry in std::fs::read_dir(&settings.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.len() == 64
                && name.bytes().all(|b| b.is_ascii_hexdigit())
                && path.join("ui").is_dir()
            {
                index.insert(
                    name,
                    Cached {
                        bytes: dir_size(&path),
                        used: Instant::now(),
                    },
                );
            } else if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Ok(UiStore {
            registry,
            settings,
            index: Mutex::new(index),
            fills: Mutex::default(),
            etags: Mutex::default(),
            fills_total,
        })
    }

    /// The `ui/` directory of bundle `hash`, fetching it if needed.
    pub(crate) async fn ui_dir(&self, hash: &ContentHash) -> Result<PathBuf, UiStoreError> {
        let hex = hash.hex().to_owned();
        let dir = self.settings.root.join(&hex);
        if self.touch(&hex) {
            return Ok(dir.join("ui"));
        }
        let lock = self.fills.lock().entry(hex.clone()).or_default().clone();
        let _guard = lock.lock().await;
        if self.touch(&hex) {
            return Ok(dir.join("ui"));
        }
        let result = self.fill(hash, &dir).await;
        self.fills.lock().remove(&hex);
        let bytes = result?;
        self.fills_total.inc();
        self.index.lock().insert(
            hex.clone(),
            Cached {
                bytes,
                used: Instant::now(),
            },
        );
        self.evict(&hex);
        Ok(dir.join("ui"))
    }

    fn touch(&self, hex: &str) -> bool {
        match self.index.lock().get_mut(hex) {
            Some(c) => {
                c.used = Instant::now();
                true
            }
            None => false,
        }
    }

    async fn fill(&self, hash: &ContentHash, dir: &Path) -> Result<u64, UiStoreError> {
        let limits = annex_bundle::Limits::default();
        let mut stream = self
            .registry
            .clone()
            .fetch_bundle(pb::FetchBundleRequest {
                content_hash: hash.to_string(),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => UiStoreError::NotFound,
                _ => UiStoreError::Extract(format!("FetchBundle: {:?} {}", s.code(), s.message())),
            })?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(part) = stream.next().await {
            let part =
                part.map_err(|s| UiStoreError::Extract(format!("FetchBundle stream: {s}")))?;
            if let Some(pb::fetch_bundle_response::Part::Chunk(chunk)) = part.part {
                if (bytes.len() + chunk.len()) as u64 > limits.max_archive_bytes {
                    return Err(UiStoreError::Extract(
                        "bundle larger than the archive cap".into(),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
        }
        let expected = hash.clone();
        let dir = dir.to_owned();
        let tmp = self
            .settings
            .root
            .join(format!(".fill-{}", uuid::Uuid::new_v4()));
        tokio::task::spawn_blocking(move || {
            let actual = ContentHash::of(&bytes);
            if actual != expected {
                return Err(UiStoreError::HashMismatch {
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
            let bundle = annex_bundle::archive::unpack(&bytes, &limits)
                .map_err(|e| UiStoreError::Extract(format!("unpacking: {e}")))?;
            let written = write_ui(&bundle, &tmp).map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                UiStoreError::Extract(format!("writing UI files: {e}"))
            })?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir).map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                UiStoreError::Extract(format!("moving UI files into place: {e}"))
            })?;
            Ok(written)
        })
        .await
        .map_err(|e| UiStoreError::Extract(format!("unpack task: {e}")))?
    }

    /// Removes least recently used bundles (never `keep`) until under the bound.
    fn evict(&self, keep: &str) {
        let mut index = self.index.lock();
        let mut total: u64 = index.values().map(|c| c.bytes).sum();
        while total > self.settings.max_bytes {
            let Some(victim) = index
                .iter()
                .filter(|(k, _)| k.as_str() != keep)
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(c) = index.remove(&victim) {
                total -= c.bytes;
            }
            let path = self.settings.root.join(&victim);
            self.etags.lock().retain(|p, _| !p.starts_with(&path));
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "evicting UI files failed");
            }
        }
    }

    /// The strong ETag of a cached file: `"sha256-<hex of its bytes>"`.
    pub(crate) fn etag(&self, path: &Path, bytes: &[u8]) -> String {
        if let Some(t) = self.etags.lock().get(path) {
            return t.clone();
        }
        use sha2::Digest as _;
        let tag = format!("\"sha256-{}\"", hex::encode(sha2::Sha256::digest(bytes)));
        let mut etags = self.etags.lock();
        if etags.len() >= MAX_ETAGS {
            etags.clear();
        }
        etags.insert(path.to_owned(), tag.clone());
        tag
    }
}

fn write_ui(bundle: &annex_bundle::Bundle, tmp: &Path) -> std::io::Result<u64> {
    let ui = tmp.join("ui");
    std::fs::create_dir_all(&ui)?;
    let mut total = 0u64;
    for (rel, data) in bundle.ui_files() {
        // The unpacker already refused absolute, `..` and hidden paths.
        let path = ui.join(rel);
        if rel.ends_with('/') {
            std::fs::create_dir_all(&path)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, data)?;
        total += data.len() as u64;
    }
    Ok(total)
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(root: &Path, hex: &str, bytes: usize) {
        let ui = root.join(hex).join("ui");
        std::fs::create_dir_all(&ui).expect("mkdir");
        std::fs::write(ui.join("index.html"), vec![b'x'; bytes]).expect("write");
    }

    #[tokio::test]
    async fn the_cache_reopens_what_it_had_and_evicts_least_recently_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        fill(dir.path(), &a, 400);
        fill(dir.path(), &b, 400);
        std::fs::create_dir_all(dir.path().join(".fill-partial")).expect("mkdir");
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let store = UiStore::open(
            RegistryClient::new(Upstream::from(channel)),
            UiStoreSettings {
                root: dir.path().to_owned(),
                max_bytes: 1000,
            },
            Default::default(),
        )
        .expect("open");
        assert!(
            !dir.path().join(".fill-partial").exists(),
            "partial fills are removed"
        );
        assert_eq!(store.index.lock().len(), 2);
        // `a` is used after `b`, so `b` goes first when `c` arrives.
        assert!(store.touch(&b));
        assert!(store.touch(&a));
        fill(dir.path(), &c, 400);
        store.index.lock().insert(
            c.clone(),
            Cached {
                bytes: 400,
                used: Instant::now(),
            },
        );
        store.evict(&c);
        assert!(dir.path().join(&a).exists());
        assert!(!dir.path().join(&b).exists());
        assert!(dir.path().join(&c).exists());
        assert!(!store.touch(&b));
    }
}
