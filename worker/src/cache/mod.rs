//! Compiled components, keyed by the component's own digest (the SHA-256 of
//! `dist/main.wasm`), not by the bundle: two bundles with the same
//! component (one extension published under several names or publishers,
//! or signed twice) compile once. A bundle is known by its record, written
//! once the bundle verified: which component it holds, the world its
//! manifest chose, and its signature record.
//!
//! In memory: an LRU of bundle records and an LRU of pre-instantiated
//! components. On disk ([`disk`]): the records and serialized artifacts.
//! Compiles go through the bounded [`queue`].
//!
//! Invariants:
//! - Nothing is compiled or loaded for a bundle before its bytes and
//!   signature verified (the loader's `load` closure does that) or, for a
//!   record read from disk, before its signature record passes `recheck`.
//! - Compilation runs on blocking threads through the queue, at most once at
//!   a time per component digest and tier (single flight: concurrent
//!   callers wait for the first).
//! - With compile tiering ([`tier`]) a large component missing from memory
//!   and disk is served from a Winch compile while Cranelift compiles it in
//!   the background; the Cranelift component then replaces it in memory. A
//!   Winch component is never written to disk, and a Winch entry never
//!   replaces a Cranelift one.
//! - A component is handed out only for the world its bundle's manifest
//!   chose, and only if it exports that world's entry point.

mod disk;
pub(crate) mod queue;
mod tier;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use annex_bundle::{ContentHash, TrustBundle, World};
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use wasmtime::Engine;
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::RunnerV2Pre;
use crate::bundles::{BundleError, SignatureRecord};
use crate::engine::{Tier, WasmEngine};
use crate::host::HostState;
use crate::metrics::CompileMetrics;
use disk::Disk;
use queue::CompileQueue;
pub use queue::{CompileSettings, CompileStats, DEFAULT_WINCH_MIN_BYTES, Tiering};

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

/// What a verified bundle is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BundleRecord {
    /// SHA-256 of `dist/main.wasm`.
    pub(crate) component: ContentHash,
    pub(crate) component_bytes: u64,
    /// The world the bundle's manifest chose.
    pub(crate) world: World,
    /// The signed identity, checked again whenever the trust keys change.
    pub(crate) signature: SignatureRecord,
}

/// A known bundle and the trust keys its signature last verified against.
pub(crate) struct KnownBundle {
    pub(crate) hash: ContentHash,
    pub(crate) record: BundleRecord,
    verified_with: Mutex<Option<Arc<TrustBundle>>>,
}

impl KnownBundle {
    fn new(hash: ContentHash, record: BundleRecord) -> KnownBundle {
        KnownBundle {
            hash,
            record,
            verified_with: Mutex::new(None),
        }
    }

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
        crate::bundles::verify_signature(&self.hash, &self.record.signature, trust)?;
        *self.verified_with.lock() = Some(trust.clone());
        Ok(())
    }
}

/// A compiled component, pre-instantiated with the worker's linker, and
/// its entry point for each world it exports.
pub(crate) struct Prepared {
    pub(crate) digest: ContentHash,
    /// The compiler of its code; its stores must use `engine`.
    tier: Tier,
    engine: Engine,
    runner: Option<RunnerV2Pre<HostState>>,
    proxy: Option<ProxyPre<HostState>>,
}

/// How a request enters a component.
#[derive(Clone)]
pub(crate) enum Entry {
    /// `alga:extension/runner`'s `handler`.
    Alga(RunnerV2Pre<HostState>),
    /// `wasi:http/incoming-handler`'s `handle`.
    WasiHttp(ProxyPre<HostState>),
}

/// A bundle ready to run: what it is and how to enter its component.
pub(crate) struct Compiled {
    pub(crate) bundle: Arc<KnownBundle>,
    pub(crate) entry: Entry,
    /// Keeps the pre-instantiated component alive while it runs.
    _prepared: Arc<Prepared>,
}

impl Compiled {
    /// The engine every store that instantiates this component must use.
    pub(crate) fn engine(&self) -> &Engine {
        &self._prepared.engine
    }

    /// The compiler tier of the component's code.
    pub(crate) fn tier(&self) -> Tier {
        self._prepared.tier
    }

    fn new(bundle: Arc<KnownBundle>, prepared: Arc<Prepared>) -> Result<Compiled, CacheError> {
        let world = bundle.record.world;
        let entry = match world {
            World::Alga => prepared.runner.clone().map(Entry::Alga),
            World::WasiHttp => prepared.proxy.clone().map(Entry::WasiHttp),
        };
        let entry = entry.ok_or_else(|| CacheError::WorldMismatch {
            world,
            component: prepared.digest.clone(),
        })?;
        Ok(Compiled {
            bundle,
            entry,
            _prepared: prepared,
        })
    }
}

/// Why a component could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    /// Fetching or verifying the bundle failed (Alga: `bundle_fetch_failed`).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Compiling or linking failed (Alga: `execute_failed`).
    #[error("{0}")]
    Compile(String),
    /// The component does not export the entry point of the world its
    /// manifest chose.
    #[error(
        "component {component} does not export the entry point of the {world} world its manifest's runtime chose"
    )]
    WorldMismatch {
        world: World,
        component: ContentHash,
    },
}

/// What the loader hands the cache after verification.
pub(crate) struct Verified {
    pub(crate) component: Vec<u8>,
    /// SHA-256 of `component`, computed where it was extracted.
    pub(crate) digest: ContentHash,
    pub(crate) world: World,
    pub(crate) signature: SignatureRecord,
}

/// How the cache is built.
pub(crate) struct CacheParts {
    pub(crate) engine: Arc<WasmEngine>,
    pub(crate) linker: Linker<HostState>,
    /// The linker on the Winch engine, when compile tiering is on.
    pub(crate) winch_linker: Option<Linker<HostState>>,
    /// Components kept in memory (bundle records: four times as many).
    pub(crate) capacity: NonZeroUsize,
    pub(crate) disk: Option<PathBuf>,
    pub(crate) compile: CompileSettings,
    pub(crate) metrics: CompileMetrics,
}

/// The compiled-component cache.
pub struct ComponentCache {
    core: Arc<Core>,
    bundles: Mutex<LruCache<ContentHash, Arc<KnownBundle>>>,
    inflight: Mutex<HashMap<ContentHash, Arc<OnceCell<Arc<Prepared>>>>>,
    wait: std::time::Duration,
    tiering: Tiering,
    winch_min_bytes: u64,
    /// Whether Winch code is replaced by Cranelift's (always, but in
    /// benchmarks of Winch code).
    upgrades: bool,
}

/// What compiles, stores and prepares components: shared with the
/// background Cranelift compiles of tiering ([`tier`]).
struct Core {
    engine: Arc<WasmEngine>,
    linker: Linker<HostState>,
    winch_linker: Option<Linker<HostState>>,
    components: Mutex<LruCache<ContentHash, Arc<Prepared>>>,
    disk: Option<Disk>,
    queue: CompileQueue,
    /// Components whose background Cranelift compile is under way.
    upgrading: Mutex<HashSet<ContentHash>>,
}

impl ComponentCache {
    pub(crate) fn new(parts: CacheParts) -> anyhow::Result<ComponentCache> {
        let disk = match parts.disk {
            Some(dir) => Some(Disk::open(dir, parts.engine.clone())?),
            None => None,
        };
        let records = parts
            .capacity
            .saturating_mul(NonZeroUsize::MIN.saturating_add(3));
        let tiering = match (&parts.winch_linker, parts.compile.tiering) {
            (Some(_), tiering) => tiering,
            (None, _) => Tiering::Cranelift,
        };
        Ok(ComponentCache {
            core: Arc::new(Core {
                queue: CompileQueue::new(&parts.compile, parts.metrics),
                engine: parts.engine,
                linker: parts.linker,
                winch_linker: parts.winch_linker,
                components: Mutex::new(LruCache::new(parts.capacity)),
                disk,
                upgrading: Mutex::new(HashSet::new()),
            }),
            wait: parts.compile.wait,
            tiering,
            winch_min_bytes: parts.compile.winch_min_bytes,
            upgrades: parts.compile.upgrades(),
            bundles: Mutex::new(LruCache::new(records)),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// Components compiled to the final tier (Cranelift) by this process
    /// so far.
    pub fn compiles(&self) -> u64 {
        self.core.queue.stats().compiles
    }

    /// The compile queue right now.
    pub fn compile_stats(&self) -> CompileStats {
        self.core.queue.stats()
    }

    /// The tier of bundle `hash`'s component in memory, if it is there.
    pub fn memory_tier(&self, hash: &ContentHash) -> Option<Tier> {
        let bundle = self.bundles.lock().peek(hash).cloned()?;
        self.core
            .components
            .lock()
            .peek(&bundle.record.component)
            .map(|p| p.tier)
    }

    /// How long a call waits for a component being prepared.
    pub(crate) fn compile_wait(&self) -> std::time::Duration {
        self.wait
    }

    /// When a call refused while its component is prepared should retry.
    pub(crate) fn retry_after(&self) -> std::time::Duration {
        self.core.queue.retry_after()
    }

    /// Bundles whose component is compiled in memory, most recently used
    /// first.
    pub fn cached_hashes(&self) -> Vec<String> {
        let components = self.core.components.lock();
        self.bundles
            .lock()
            .iter()
            .filter(|(_, b)| components.contains(&b.record.component))
            .map(|(h, _)| h.to_string())
            .collect()
    }

    /// Forgets `hash` in memory (its signature stopped verifying).
    pub(crate) fn evict(&self, hash: &ContentHash) {
        self.bundles.lock().pop(hash);
    }

    /// A memory hit, without loading anything.
    pub(crate) fn get_memory(&self, hash: &ContentHash) -> Option<Result<Compiled, CacheError>> {
        let bundle = self.bundles.lock().get(hash).cloned()?;
        let prepared = self
            .core
            .components
            .lock()
            .get(&bundle.record.component)
            .cloned()?;
        Some(Compiled::new(bundle, prepared))
    }

    /// Returns bundle `hash` ready to run: its record from memory, else from
    /// disk (after the signature record passes `recheck`), else from bytes
    /// `load` fetched and verified; then its component from memory, else
    /// disk, else compiled (from `load`'s bytes).
    pub(crate) async fn get<L, LF, R>(
        &self,
        hash: &ContentHash,
        recheck: R,
        load: L,
    ) -> Result<(Compiled, LoadSource), CacheError>
    where
        L: FnOnce() -> LF,
        LF: Future<Output = Result<Verified, CacheError>>,
        R: AsyncFnOnce(&SignatureRecord) -> Result<(), CacheError>,
    {
        if let Some(hit) = self.get_memory(hash) {
            return Ok((hit?, LoadSource::Memory));
        }
        let in_memory = self.bundles.lock().get(hash).cloned();
        let known = match in_memory {
            Some(known) => Some(known),
            None => self.known_from_disk(hash, recheck).await?,
        };
        let (bundle, prepared, source) = match known {
            Some(bundle) => {
                let record = bundle.record.clone();
                let bytes = move || async move {
                    let verified = load().await?;
                    if verified.digest != record.component {
                        return Err(CacheError::Compile(format!(
                            "bundle's component is {}, its record says {}",
                            verified.digest, record.component
                        )));
                    }
                    Ok(verified.component)
                };
                let (prepared, source) = self
                    .component(
                        &bundle.record.component,
                        bundle.record.component_bytes,
                        bytes,
                    )
                    .await?;
                (bundle, prepared, source)
            }
            None => {
                let verified = load().await?;
                let record = BundleRecord {
                    component: verified.digest.clone(),
                    component_bytes: verified.component.len() as u64,
                    world: verified.world,
                    signature: verified.signature,
                };
                let bundle = self.remember(hash, record).await;
                let bytes = verified.component;
                let (prepared, source) = self
                    .component(&verified.digest, bundle.record.component_bytes, move || {
                        std::future::ready(Ok(bytes))
                    })
                    .await?;
                (bundle, prepared, source)
            }
        };
        self.bundles.lock().put(hash.clone(), bundle.clone());
        Ok((Compiled::new(bundle, prepared)?, source))
    }

    /// A bundle record from disk whose signature record still passes
    /// `recheck`; one that does not is removed.
    async fn known_from_disk<R>(
        &self,
        hash: &ContentHash,
        recheck: R,
    ) -> Result<Option<Arc<KnownBundle>>, CacheError>
    where
        R: AsyncFnOnce(&SignatureRecord) -> Result<(), CacheError>,
    {
        let Some(disk) = &self.core.disk else {
            return Ok(None);
        };
        let Some(record) = disk.record(hash).await else {
            return Ok(None);
        };
        if let Err(error) = recheck(&record.signature).await {
            // Not trusted (any more): never use it; fetch and verify afresh.
            tracing::info!(%error, bundle = %hash, "a cached bundle record's signature no longer verifies; discarding it");
            disk.forget(hash).await;
            return Ok(None);
        }
        Ok(Some(Arc::new(KnownBundle::new(hash.clone(), record))))
    }

    /// Records a verified bundle in memory and on disk.
    async fn remember(&self, hash: &ContentHash, record: BundleRecord) -> Arc<KnownBundle> {
        if let Some(disk) = &self.core.disk {
            disk.remember(hash, &record).await;
        }
        tracing::debug!(bundle = %hash, component = %record.component, world = %record.world, "bundle verified");
        Arc::new(KnownBundle::new(hash.clone(), record))
    }

    /// Component `digest` from memory, else disk, else compiled from the
    /// bytes `bytes` returns; once at a time per digest.
    async fn component<B, BF>(
        &self,
        digest: &ContentHash,
        size: u64,
        bytes: B,
    ) -> Result<(Arc<Prepared>, LoadSource), CacheError>
    where
        B: FnOnce() -> BF,
        BF: Future<Output = Result<Vec<u8>, CacheError>>,
    {
        if let Some(hit) = self.core.components.lock().get(digest).cloned() {
            return Ok((hit, LoadSource::Memory));
        }
        let cell = self
            .inflight
            .lock()
            .entry(digest.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let mut source = LoadSource::Memory;
        let result = cell
            .get_or_try_init(|| async {
                let (prepared, s) = self.load_component(digest, size, bytes).await?;
                source = s;
                Ok::<_, CacheError>(prepared)
            })
            .await
            .cloned();
        if let Ok(prepared) = &result {
            self.core.keep(prepared.clone());
        }
        // Done either way: later callers go through memory, or retry afresh.
        self.inflight.lock().remove(digest);
        result.map(|p| (p, source))
    }

    async fn load_component<B, BF>(
        &self,
        digest: &ContentHash,
        size: u64,
        bytes: B,
    ) -> Result<(Arc<Prepared>, LoadSource), CacheError>
    where
        B: FnOnce() -> BF,
        BF: Future<Output = Result<Vec<u8>, CacheError>>,
    {
        if let Some(disk) = &self.core.disk
            && let Some(component) = disk.artifact(digest).await
        {
            let prepared = self.core.prepare(Tier::Cranelift, digest, &component)?;
            return Ok((prepared, LoadSource::Disk));
        }
        let bytes = Arc::new(bytes().await?);
        tracing::debug!(component = %digest, size_bytes = size, "component not cached; compiling");
        if self.tiering.uses_winch() && size >= self.winch_min_bytes {
            match self.core.winch(digest, bytes.clone()).await {
                Ok(prepared) => {
                    if self.upgrades {
                        self.core.upgrade_in_background(digest, bytes);
                    }
                    return Ok((prepared, LoadSource::Compiled));
                }
                Err(error) => tracing::warn!(
                    component = %digest,
                    %error,
                    "Winch could not compile the component; waiting for Cranelift"
                ),
            }
        }
        let prepared = self
            .core
            .cranelift(digest, bytes, queue::Urgency::Call)
            .await?;
        Ok((prepared, LoadSource::Compiled))
    }
}
