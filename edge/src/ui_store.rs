//! The UI files of bundles, by content hash, on local disk: fetched from the
//! control plane (`Registry.FetchBundle`), checked against the hash they were
//! asked for, unpacked with the bundle crate's capped unpacker, and kept
//! within a total size bound (least recently used bundles are evicted
//! first). Only `ui/**` is written; the component never touches the edge's
//! disk.
//!
//! Nothing on disk is trusted. Each process writes into a directory of its
//! own, created with mode 0700 under an unpredictable name inside the
//! configured root (`run-<uuid>`), and serves a file only when its bytes
//! still hash to what the bundle held ([`UiBundle`] keeps every file's
//! SHA-256 in memory). Files left by an earlier process are never served:
//! run directories whose owner is gone (its lock released) are removed at
//! start, as are bundle directories an earlier version left in the root.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use annex_bundle::ContentHash;
use annex_ops::upstream::Upstream;
use annex_proto::pb;
use annex_proto::pb::registry_client::RegistryClient;
use parking_lot::Mutex;
use sha2::Digest as _;
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
    /// A cached file no longer holds what the bundle held: 500 (the bundle
    /// is dropped from the cache and fetched again on the next request).
    #[error("cached UI file {0} changed on disk")]
    Tampered(String),
}

#[derive(Debug, Clone)]
pub struct UiStoreSettings {
    /// Where the process's private cache directory is created.
    pub root: PathBuf,
    /// Total bytes of UI files kept on disk.
    pub max_bytes: u64,
}

/// One file of a cached bundle, as the bundle held it.
#[derive(Debug, Clone)]
pub(crate) struct UiFile {
    /// `"sha256-<hex>"`, quoted: the file's strong ETag.
    pub etag: String,
    sha256: [u8; 32],
    pub len: u64,
}

/// A cached bundle's UI: where its files are and what each must hold.
#[derive(Debug)]
pub(crate) struct UiBundle {
    hex: String,
    /// The bundle's `ui/` directory.
    dir: PathBuf,
    /// Every file, by its path under `ui/`.
    pub files: HashMap<String, UiFile>,
}

impl UiBundle {
    /// The file `rel`'s bytes, when they still hash to what the bundle held.
    pub(crate) async fn read(&self, rel: &str) -> Result<Vec<u8>, UiStoreError> {
        let file = self.files.get(rel).ok_or(UiStoreError::NotFound)?.clone();
        let path = self.dir.join(rel);
        let rel = rel.to_owned();
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|_| UiStoreError::Tampered(rel.clone()))?;
            let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
            if bytes.len() as u64 != file.len || digest != file.sha256 {
                return Err(UiStoreError::Tampered(rel));
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| UiStoreError::Extract(format!("read task: {e}")))?
    }
}

#[derive(Debug)]
struct Cached {
    bundle: Arc<UiBundle>,
    bytes: u64,
    used: Instant,
}

/// This process's private directory: removed when the store goes away. The
/// lock file tells a later process whether the directory's owner is alive.
#[derive(Debug)]
struct RunDir {
    path: PathBuf,
    _lock: File,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

const LOCK_FILE: &str = ".lock";

pub(crate) struct UiStore {
    registry: RegistryClient<Upstream>,
    settings: UiStoreSettings,
    run: RunDir,
    index: Mutex<HashMap<String, Cached>>,
    fills: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    fills_total: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for UiStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiStore")
            .field("settings", &self.settings)
            .field("run", &self.run.path)
            .finish_non_exhaustive()
    }
}

impl UiStore {
    /// Opens the store: clears what no live process owns under the root and
    /// creates this process's private directory.
    pub(crate) fn open(
        registry: RegistryClient<Upstream>,
        settings: UiStoreSettings,
        fills_total: prometheus_client::metrics::counter::Counter,
    ) -> std::io::Result<UiStore> {
        std::fs::create_dir_all(&settings.root)?;
        clear_abandoned(&settings.root)?;
        let run = create_run_dir(&settings.root)?;
        Ok(UiStore {
            registry,
            settings,
            run,
            index: Mutex::default(),
            fills: Mutex::default(),
            fills_total,
        })
    }

    /// The UI of bundle `hash`, fetching it if needed.
    pub(crate) async fn bundle(&self, hash: &ContentHash) -> Result<Arc<UiBundle>, UiStoreError> {
        let hex = hash.hex().to_owned();
        if let Some(b) = self.touch(&hex) {
            return Ok(b);
        }
        let lock = self.fills.lock().entry(hex.clone()).or_default().clone();
        let _guard = lock.lock().await;
        if let Some(b) = self.touch(&hex) {
            return Ok(b);
        }
        let dir = self.run.path.join(&hex);
        let result = self.fill(hash, &dir).await;
        self.fills.lock().remove(&hex);
        let files = result?;
        self.fills_total.inc();
        let bytes = files.values().map(|f| f.len).sum();
        let bundle = Arc::new(UiBundle {
            hex: hex.clone(),
            dir: dir.join("ui"),
            files,
        });
        self.index.lock().insert(
            hex.clone(),
            Cached {
                bundle: bundle.clone(),
                bytes,
                used: Instant::now(),
            },
        );
        self.evict(&hex);
        Ok(bundle)
    }

    /// Drops a bundle whose files changed on disk; the next request fetches
    /// it again.
    pub(crate) fn forget(&self, bundle: &UiBundle) {
        if self.index.lock().remove(&bundle.hex).is_some() {
            let path = self.run.path.join(&bundle.hex);
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "removing UI files failed");
            }
        }
    }

    fn touch(&self, hex: &str) -> Option<Arc<UiBundle>> {
        let mut index = self.index.lock();
        let c = index.get_mut(hex)?;
        c.used = Instant::now();
        Some(c.bundle.clone())
    }

    async fn fill(
        &self,
        hash: &ContentHash,
        dir: &Path,
    ) -> Result<HashMap<String, UiFile>, UiStoreError> {
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
            .run
            .path
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
            let files = write_ui(&bundle, &tmp).map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                UiStoreError::Extract(format!("writing UI files: {e}"))
            })?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir).map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                UiStoreError::Extract(format!("moving UI files into place: {e}"))
            })?;
            Ok(files)
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
            let path = self.run.path.join(&victim);
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "evicting UI files failed");
            }
        }
    }
}

/// Removes what earlier edges left under `root`: run directories whose
/// owner is gone (its lock released) and bundle directories of the earlier
/// layout (64 hex digits). Anything else is not the edge's and is left
/// alone (it is never served: only this process's run directory is).
fn clear_abandoned(root: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type()?.is_dir();
        let run = name.starts_with("run-");
        let old_bundle = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_dir || !(run || old_bundle) || (run && owner_alive(&path)) {
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "removing old UI cache entries failed");
        }
    }
    Ok(())
}

/// Whether the process that made run directory `dir` still holds its lock.
fn owner_alive(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// `root/run-<uuid>`, mode 0700, created here (never an existing one), with
/// its lock file held for the life of the store.
fn create_run_dir(root: &Path) -> std::io::Result<RunDir> {
    use std::os::unix::fs::DirBuilderExt as _;
    let path = root.join(format!("run-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new().mode(0o700).create(&path)?;
    let lock = File::create(path.join(LOCK_FILE))?;
    lock.lock()?;
    Ok(RunDir { path, _lock: lock })
}

fn write_ui(bundle: &annex_bundle::Bundle, tmp: &Path) -> std::io::Result<HashMap<String, UiFile>> {
    let ui = tmp.join("ui");
    std::fs::create_dir_all(&ui)?;
    let mut files = HashMap::new();
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
        let sha256: [u8; 32] = sha2::Sha256::digest(data).into();
        files.insert(
            rel.to_owned(),
            UiFile {
                etag: format!("\"sha256-{}\"", hex::encode(sha256)),
                sha256,
                len: data.len() as u64,
            },
        );
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(root: &Path, max_bytes: u64) -> UiStore {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        UiStore::open(
            RegistryClient::new(Upstream::from(channel)),
            UiStoreSettings {
                root: root.to_owned(),
                max_bytes,
            },
            Default::default(),
        )
        .expect("open")
    }

    fn cache(s: &UiStore, hex: &str, bytes: u64) {
        let dir = s.run.path.join(hex);
        std::fs::create_dir_all(dir.join("ui")).expect("mkdir");
        s.index.lock().insert(
            hex.to_owned(),
            Cached {
                bundle: Arc::new(UiBundle {
                    hex: hex.to_owned(),
                    dir: dir.join("ui"),
                    files: HashMap::new(),
                }),
                bytes,
                used: Instant::now(),
            },
        );
    }

    #[tokio::test]
    async fn nothing_from_before_is_trusted_and_the_run_directory_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        // What an earlier process (or anyone who could write here) left.
        let forged = dir.path().join("a".repeat(64)).join("ui");
        std::fs::create_dir_all(&forged).expect("mkdir");
        std::fs::write(forged.join("index.html"), "forged").expect("write");
        std::fs::create_dir_all(dir.path().join("run-abandoned")).expect("mkdir");
        // Not the edge's: left alone (and never served).
        std::fs::write(dir.path().join("notes.txt"), "operator's").expect("write");
        let live = store(dir.path(), 1000);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[0], "notes.txt");
        assert!(names[1].starts_with("run-"), "{names:?}");
        assert!(live.index.lock().is_empty());
        let mode = std::fs::metadata(&live.run.path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // A second process keeps the first one's directory while it lives...
        let second = store(dir.path(), 1000);
        assert!(live.run.path.exists());
        // ...and it goes with its store.
        let first = live.run.path.clone();
        drop(live);
        assert!(!first.exists());
        drop(second);
    }

    #[tokio::test]
    async fn a_file_changed_on_disk_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path(), 1000);
        let tmp = s.run.path.join("b".repeat(64));
        let mut files = HashMap::new();
        std::fs::create_dir_all(tmp.join("ui")).expect("mkdir");
        std::fs::write(tmp.join("ui/app.js"), "good").expect("write");
        let sha256: [u8; 32] = sha2::Sha256::digest(b"good").into();
        files.insert(
            "app.js".to_owned(),
            UiFile {
                etag: String::new(),
                sha256,
                len: 4,
            },
        );
        let bundle = UiBundle {
            hex: "b".repeat(64),
            dir: tmp.join("ui"),
            files,
        };
        assert_eq!(bundle.read("app.js").await.expect("good"), b"good");
        std::fs::write(tmp.join("ui/app.js"), "evil").expect("write");
        assert!(matches!(
            bundle.read("app.js").await,
            Err(UiStoreError::Tampered(_))
        ));
    }

    #[tokio::test]
    async fn least_recently_used_bundles_are_evicted_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path(), 1000);
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        cache(&s, &a, 400);
        cache(&s, &b, 400);
        // `a` is used after `b`, so `b` goes first when `c` arrives.
        assert!(s.touch(&b).is_some());
        assert!(s.touch(&a).is_some());
        cache(&s, &c, 400);
        s.evict(&c);
        assert!(s.run.path.join(&a).exists());
        assert!(!s.run.path.join(&b).exists());
        assert!(s.run.path.join(&c).exists());
        assert!(s.touch(&b).is_none());
    }
}
