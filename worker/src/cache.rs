//! Compiled components: a memory LRU of pre-instantiated components keyed
//! by content hash, backed by a disk cache of serialized artifacts keyed by
//! (content hash, engine compatibility hash).
//!
//! Invariants:
//! - The disk cache holds only artifacts this process serialized from bytes
//!   it verified and compiled itself; loading one is the crate's single
//!   `unsafe` (Wasmtime trusts serialized code). The directory is created
//!   0700 and nothing else writes into it.
//! - Compilation runs on blocking threads, and at most once at a time per
//!   hash (single flight: concurrent callers wait for the first).
//! - Next to each artifact, the bundle's signature record is kept and is
//!   checked again against the current trust keys on every disk load, so a
//!   revoked key also stops loads from the disk cache.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annex_bundle::ContentHash;
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use wasmtime::component::{Component, Linker};

use crate::bindings::RunnerV2Pre;
use crate::bundles::{BundleError, SignatureRecord};
use crate::engine::WasmEngine;
use crate::host::HostState;
use annex_bundle::TrustBundle;

/// Where a component came from on this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadSource {
    Memory,
    Disk,
    Compiled,
}

impl LoadSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LoadSource::Memory => "memory",
            LoadSource::Disk => "disk",
            LoadSource::Compiled => "compiled",
        }
    }
}

/// A component ready to instantiate.
pub(crate) struct Compiled {
    pub(crate) hash: ContentHash,
    pub(crate) pre: RunnerV2Pre<HostState>,
    /// The signed identity, checked again whenever the trust keys change.
    pub(crate) signature: SignatureRecord,
    /// The trust keys the signature last verified against.
    verified_with: Mutex<Option<Arc<TrustBundle>>>,
}

impl Compiled {
    /// Re-verifies the signature if `trust` is not the bundle it was last
    /// verified with (one Ed25519 check per trust change, none otherwise).
    pub(crate) fn ensure_trusted(&self, trust: &Arc<TrustBundle>) -> Result<(), BundleError> {
        if self
            .verified_with
            .lock()
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, trust))
        {
            return Ok(());
        }
        crate::bundles::verify_signature(&self.hash, &self.signature, trust)?;
        *self.verified_with.lock() = Some(trust.clone());
        Ok(())
    }
}

/// Why a component could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    /// Fetching or verifying the bundle failed (Alga: `bundle_fetch_failed`).
    #[error(transparent)]
    Bundle(#[from] crate::bundles::BundleError),
    /// Compiling or linking failed (Alga: `execute_failed`).
    #[error("{0}")]
    Compile(String),
}

/// What the loader hands the cache after verification.
pub(crate) struct Verified {
    pub(crate) component: Vec<u8>,
    pub(crate) signature: SignatureRecord,
}

/// The compiled-component cache.
pub struct ComponentCache {
    engine: Arc<WasmEngine>,
    linker: Linker<HostState>,
    memory: Mutex<LruCache<ContentHash, Arc<Compiled>>>,
    inflight: Mutex<HashMap<ContentHash, Arc<OnceCell<Arc<Compiled>>>>>,
    disk: Option<PathBuf>,
    compiles: AtomicU64,
}

impl ComponentCache {
    /// `capacity`: components kept in memory. `disk`: artifact directory.
    pub(crate) fn new(
        engine: Arc<WasmEngine>,
        linker: Linker<HostState>,
        capacity: NonZeroUsize,
        disk: Option<PathBuf>,
    ) -> anyhow::Result<ComponentCache> {
        if let Some(dir) = &disk {
            create_private_dir(dir)?;
        }
        Ok(ComponentCache {
            engine,
            linker,
            memory: Mutex::new(LruCache::new(capacity)),
            inflight: Mutex::new(HashMap::new()),
            disk,
            compiles: AtomicU64::new(0),
        })
    }

    /// Components compiled by this process so far.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// Hashes held in memory, most recently used first.
    pub fn cached_hashes(&self) -> Vec<String> {
        self.memory
            .lock()
            .iter()
            .map(|(h, _)| h.to_string())
            .collect()
    }

    /// Forgets `hash` in memory (its signature stopped verifying).
    pub(crate) fn evict(&self, hash: &ContentHash) {
        self.memory.lock().pop(hash);
    }

    /// A memory hit, without loading anything.
    pub(crate) fn get_memory(&self, hash: &ContentHash) -> Option<Arc<Compiled>> {
        self.memory.lock().get(hash).cloned()
    }

    /// Returns the component for `hash`, from memory, else disk (after the
    /// signature record passes `recheck`), else by verifying bytes from
    /// `load` and compiling them.
    pub(crate) async fn get<L, LF, R>(
        &self,
        hash: &ContentHash,
        recheck: R,
        load: L,
    ) -> Result<(Arc<Compiled>, LoadSource), CacheError>
    where
        L: FnOnce() -> LF,
        LF: Future<Output = Result<Verified, CacheError>>,
        R: AsyncFnOnce(&SignatureRecord) -> Result<(), CacheError>,
    {
        if let Some(hit) = self.get_memory(hash) {
            return Ok((hit, LoadSource::Memory));
        }
        let cell = self
            .inflight
            .lock()
            .entry(hash.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let mut source = LoadSource::Memory;
        let result = cell
            .get_or_try_init(|| async {
                let (compiled, s) = self.load_uncached(hash, recheck, load).await?;
                source = s;
                Ok::<_, CacheError>(compiled)
            })
            .await
            .cloned();
        if let Ok(compiled) = &result {
            self.memory.lock().put(hash.clone(), compiled.clone());
        }
        // Done either way: later callers go through memory, or retry afresh.
        self.inflight.lock().remove(hash);
        result.map(|c| (c, source))
    }

    async fn load_uncached<L, LF, R>(
        &self,
        hash: &ContentHash,
        recheck: R,
        load: L,
    ) -> Result<(Arc<Compiled>, LoadSource), CacheError>
    where
        L: FnOnce() -> LF,
        LF: Future<Output = Result<Verified, CacheError>>,
        R: AsyncFnOnce(&SignatureRecord) -> Result<(), CacheError>,
    {
        if let Some((component, record)) = self.load_from_disk(hash, recheck).await? {
            return Ok((self.prepare(hash, component, record)?, LoadSource::Disk));
        }
        let verified = load().await?;
        let engine = self.engine.clone();
        let bytes = verified.component;
        let component =
            tokio::task::spawn_blocking(move || Component::new(engine.engine(), &bytes))
                .await
                .map_err(|e| CacheError::Compile(format!("compile task failed: {e}")))?
                .map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let compiled = self.prepare(hash, component.clone(), verified.signature.clone())?;
        self.store_on_disk(hash, component, verified.signature)
            .await;
        Ok((compiled, LoadSource::Compiled))
    }

    fn prepare(
        &self,
        hash: &ContentHash,
        component: Component,
        signature: SignatureRecord,
    ) -> Result<Arc<Compiled>, CacheError> {
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        let pre = RunnerV2Pre::new(pre).map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        Ok(Arc::new(Compiled {
            hash: hash.clone(),
            pre,
            signature,
            verified_with: Mutex::new(None),
        }))
    }

    fn artifact_path(&self, dir: &Path, hash: &ContentHash) -> PathBuf {
        dir.join(format!(
            "{}-{}.cwasm",
            hash.hex(),
            self.engine.compatibility_hash()
        ))
    }

    fn signature_path(dir: &Path, hash: &ContentHash) -> PathBuf {
        dir.join(format!("{}.sig.json", hash.hex()))
    }

    /// `Ok(None)` on any miss, including an artifact whose signature record
    /// no longer passes `recheck`.
    async fn load_from_disk<R>(
        &self,
        hash: &ContentHash,
        recheck: R,
    ) -> Result<Option<(Component, SignatureRecord)>, CacheError>
    where
        R: AsyncFnOnce(&SignatureRecord) -> Result<(), CacheError>,
    {
        let Some(dir) = &self.disk else {
            return Ok(None);
        };
        let path = self.artifact_path(dir, hash);
        let Ok(sig) = tokio::fs::read(Self::signature_path(dir, hash)).await else {
            return Ok(None);
        };
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(None);
        }
        let Ok(record) = serde_json::from_slice::<SignatureRecord>(&sig) else {
            return Ok(None);
        };
        if let Err(error) = recheck(&record).await {
            // Not trusted (any more): never load it; fetch and verify afresh.
            tracing::info!(%error, hash = %hash, "cached artifact's signature no longer verifies; discarding it");
            let _ = tokio::fs::remove_file(&path).await;
            let _ = tokio::fs::remove_file(Self::signature_path(dir, hash)).await;
            return Ok(None);
        }
        let engine = self.engine.clone();
        let file = path.clone();
        let loaded = tokio::task::spawn_blocking(move || deserialize_own_artifact(&engine, &file))
            .await
            .map_err(|e| CacheError::Compile(format!("load task failed: {e}")))?;
        match loaded {
            Ok(component) => Ok(Some((component, record))),
            Err(error) => {
                tracing::warn!(%error, hash = %hash, "discarding unreadable cached artifact");
                let _ = tokio::fs::remove_file(&path).await;
                Ok(None)
            }
        }
    }

    /// Best effort: a failed write only costs a later recompile.
    async fn store_on_disk(
        &self,
        hash: &ContentHash,
        component: Component,
        signature: SignatureRecord,
    ) {
        let Some(dir) = self.disk.clone() else {
            return;
        };
        let artifact = self.artifact_path(&dir, hash);
        let sig_path = Self::signature_path(&dir, hash);
        let hash = hash.clone();
        let result = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let bytes = component.serialize()?;
            write_atomically(&artifact, &bytes)?;
            write_atomically(&sig_path, &serde_json::to_vec(&signature)?)?;
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, hash = %hash, "writing compiled artifact failed")
            }
            Err(error) => tracing::warn!(%error, hash = %hash, "artifact writer task failed"),
        }
    }
}

/// Loads an artifact from this worker's own disk cache.
#[allow(unsafe_code)]
fn deserialize_own_artifact(engine: &WasmEngine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: `Component::deserialize_file` runs the machine code in the
    // file, so the file must come from `Component::serialize` of a trusted
    // compilation. Only `store_on_disk` writes into the cache directory
    // (created 0700 by this process), and only after compiling bytes whose
    // hash and signature were verified; the file name carries the engine's
    // compatibility hash, and Wasmtime itself rejects artifacts built with
    // other settings or versions. This is the one documented exception to
    // the workspace's `unsafe_code = "deny"` lint (root Cargo.toml).
    let component = unsafe { Component::deserialize_file(engine.engine(), path)? };
    Ok(component)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
