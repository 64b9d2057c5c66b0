//! Making a bundle ready to instantiate: the compiled-component
//! [`cache`](crate::cache) first, else bytes from a [`BundleSource`]
//! verified against a [`TrustSource`] (on a blocking thread) and compiled.
//! Whatever the source (memory, disk, fresh), the bundle's signature must
//! still hold under the current trust keys before the component is handed
//! out: a revoked or expired key stops even a memory-cached component and
//! evicts it. A signature the current keys reject is checked once more
//! against keys listed again ([`TrustSource::relisted`]): a key added since
//! the last listing admits its bundle at once.
//!
//! A load follows a [`LoadPlan`]: the worker's own (its bundle source and
//! trust keys), or one a caller brings (the runner API's bundle store). A
//! plan without trust keys checks the content hash only; the compiled cache
//! is shared, and a plan with trust keys re-verifies whatever it finds
//! there, so a component loaded without a signature never reaches a caller
//! that requires one.
//!
//! A load that misses memory runs as its own task, one per bundle hash (a
//! flight), which callers join: a caller that stops waiting (a call
//! answered `COMPONENT_COMPILING`, a cancelled request) does not stop the
//! compile, so the next call finds the component ready. Joiners share the
//! flight's bytes (they are checked against the hash whatever their source)
//! and each re-checks the signature under its own plan. This is the only
//! place that combines sources, trust and the cache; it runs no guest and
//! knows nothing of requests.

use std::collections::HashMap;
use std::sync::Arc;

use annex_bundle::{ContentHash, TrustBundle};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::bundles::{self, BundleError, BundleSource, TrustSource};
use crate::cache::{CacheError, Compiled, ComponentCache, LoadSource, Verified};

/// Where one load takes bundle bytes and trust keys from.
#[derive(Clone)]
pub(crate) struct LoadPlan {
    pub(crate) bundles: Arc<dyn BundleSource>,
    /// `None`: the content hash is the only check (no signature).
    pub(crate) trust: Option<Arc<dyn TrustSource>>,
}

/// A load's result, shared by everyone who joined its flight.
type Shared = Result<Arc<Compiled>, Arc<CacheError>>;

/// A flight's outcome as its joiners see it: `None` until the load ends.
type FlightResult = watch::Receiver<Option<(Shared, LoadSource)>>;

/// Loads verified, compiled components.
#[derive(Clone)]
pub(crate) struct Loader {
    inner: Arc<Inner>,
}

struct Inner {
    cache: ComponentCache,
    own: LoadPlan,
    /// Loads under way, by bundle hash, with where the result came from.
    flights: Mutex<HashMap<ContentHash, FlightResult>>,
}

/// A load a caller is waiting for (see [`Loader::begin`]).
pub(crate) struct Pending {
    loader: Loader,
    hash: ContentHash,
    plan: LoadPlan,
    state: PendingState,
}

enum PendingState {
    /// Ready in memory.
    Ready(Arc<Compiled>),
    /// Under way in its flight; `started` when this caller started it.
    Flight { result: FlightResult, started: bool },
}

impl Pending {
    /// Waits for the load and re-checks the bundle's signature under the
    /// plan's current trust keys.
    pub(crate) async fn wait(self) -> Result<(Arc<Compiled>, LoadSource), Arc<CacheError>> {
        let Pending {
            loader,
            hash,
            plan,
            state,
        } = self;
        let (compiled, source) = match state {
            PendingState::Ready(compiled) => (compiled, LoadSource::Memory),
            PendingState::Flight {
                mut result,
                started,
            } => {
                let done = result
                    .wait_for(Option::is_some)
                    .await
                    .map(|r| r.clone())
                    .ok()
                    .flatten();
                let Some((shared, source)) = done else {
                    return Err(Arc::new(CacheError::Compile(
                        "the load task ended without a result".into(),
                    )));
                };
                // Whoever joined a flight someone else started got it from
                // memory, as far as they are concerned.
                (shared?, if started { source } else { LoadSource::Memory })
            }
        };
        loader
            .ensure_trusted(&hash, &compiled, &plan)
            .await
            .map_err(Arc::new)?;
        Ok((compiled, source))
    }
}

impl Loader {
    pub(crate) fn new(
        cache: ComponentCache,
        bundles: Arc<dyn BundleSource>,
        trust: Arc<dyn TrustSource>,
    ) -> Loader {
        Loader {
            inner: Arc::new(Inner {
                cache,
                own: LoadPlan {
                    bundles,
                    trust: Some(trust),
                },
                flights: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn cache(&self) -> &ComponentCache {
        &self.inner.cache
    }

    /// The component for `hash` from the worker's own sources, and where it
    /// came from on this call.
    pub(crate) async fn load(
        &self,
        hash: &ContentHash,
    ) -> Result<(Arc<Compiled>, LoadSource), Arc<CacheError>> {
        self.begin(hash).wait().await
    }

    /// The component for `hash`, fetched and trusted as `plan` says.
    pub(crate) async fn load_with(
        &self,
        hash: &ContentHash,
        plan: &LoadPlan,
    ) -> Result<(Arc<Compiled>, LoadSource), Arc<CacheError>> {
        self.begin_with(hash, plan).wait().await
    }

    /// A memory hit, or the flight loading `hash` from the worker's own
    /// sources (joined, or started now).
    pub(crate) fn begin(&self, hash: &ContentHash) -> Pending {
        let own = self.inner.own.clone();
        self.begin_with(hash, &own)
    }

    /// A memory hit, or the flight loading `hash` (joined, or started now
    /// with `plan`).
    pub(crate) fn begin_with(&self, hash: &ContentHash, plan: &LoadPlan) -> Pending {
        let pending = |state| Pending {
            loader: self.clone(),
            hash: hash.clone(),
            plan: plan.clone(),
            state,
        };
        if let Some(Ok(compiled)) = self.inner.cache.get_memory(hash) {
            return pending(PendingState::Ready(Arc::new(compiled)));
        }
        let mut flights = self.inner.flights.lock();
        if let Some(result) = flights.get(hash) {
            return pending(PendingState::Flight {
                result: result.clone(),
                started: false,
            });
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(hash.clone(), rx.clone());
        drop(flights);
        let loader = self.clone();
        let key = hash.clone();
        let flight_plan = plan.clone();
        tokio::spawn(async move {
            let result = loader.load_uncached(&key, &flight_plan).await;
            let shared = result
                .map(|(c, s)| (Ok(Arc::new(c)), s))
                .unwrap_or_else(|e| (Err(Arc::new(e)), LoadSource::Compiled));
            // Done either way: later callers go through memory, or retry afresh.
            loader.inner.flights.lock().remove(&key);
            let _ = tx.send(Some(shared));
        });
        pending(PendingState::Flight {
            result: rx,
            started: true,
        })
    }

    async fn load_uncached(
        &self,
        hash: &ContentHash,
        plan: &LoadPlan,
    ) -> Result<(Compiled, LoadSource), CacheError> {
        self.inner
            .cache
            .get(
                hash,
                async |record| recheck(hash, record, plan).await,
                || fetch_and_verify(hash, plan),
            )
            .await
    }

    /// The bundle's signature under the plan's current keys, or, when they
    /// reject it, under the keys listed again; evicted when it no longer
    /// holds. A plan without keys checks nothing here.
    async fn ensure_trusted(
        &self,
        hash: &ContentHash,
        compiled: &Compiled,
        plan: &LoadPlan,
    ) -> Result<(), CacheError> {
        let Some(trust) = &plan.trust else {
            return Ok(());
        };
        let current = trust.trust().await?;
        let trusted = match compiled.bundle.ensure_trusted(&current) {
            Err(BundleError::Untrusted(_)) => {
                let relisted = trust.relisted().await?;
                compiled.bundle.ensure_trusted(&relisted)
            }
            checked => checked,
        };
        if let Err(e) = trusted {
            self.inner.cache.evict(hash);
            return Err(e.into());
        }
        Ok(())
    }
}

/// The keys that admit `record`: the current ones, or, when they do not,
/// the keys listed again.
async fn admitting(
    trust: &dyn TrustSource,
    hash: &ContentHash,
    record: &bundles::SignatureRecord,
) -> Result<Arc<TrustBundle>, CacheError> {
    let current = trust.trust().await?;
    match bundles::verify_signature(hash, record, &current) {
        Ok(_) => Ok(current),
        Err(BundleError::Untrusted(_)) => {
            let relisted = trust.relisted().await?;
            bundles::verify_signature(hash, record, &relisted)?;
            Ok(relisted)
        }
        Err(e) => Err(e.into()),
    }
}

/// A disk-cached bundle record's signature under the plan's current keys
/// (any record passes a plan without keys: only this process writes the
/// disk cache, from bytes whose hash it checked).
async fn recheck(
    hash: &ContentHash,
    record: &bundles::SignatureRecord,
    plan: &LoadPlan,
) -> Result<(), CacheError> {
    match &plan.trust {
        Some(trust) => admitting(trust.as_ref(), hash, record).await.map(drop),
        None => Ok(()),
    }
}

/// Fetches the bundle and checks hash and signature before taking the
/// component and the manifest's world out of the archive (hashing and
/// unpacking on a blocking thread; the signature, which binds the requested
/// hash, is checked first so that a key added since the last listing can be
/// looked up).
async fn fetch_and_verify(hash: &ContentHash, plan: &LoadPlan) -> Result<Verified, CacheError> {
    let fetched = plan.bundles.fetch(hash).await?;
    let trust = match &plan.trust {
        Some(trust) => Some(admitting(trust.as_ref(), hash, &fetched.signature).await?),
        None => None,
    };
    let hash = hash.clone();
    tokio::task::spawn_blocking(move || {
        let extracted = bundles::verify_and_extract(&hash, &fetched, trust.as_deref())?;
        Ok(Verified {
            digest: ContentHash::of(&extracted.component),
            component: extracted.component,
            world: extracted.world,
            signature: fetched.signature,
        })
    })
    .await
    .map_err(|e| CacheError::Compile(format!("verify task failed: {e}")))?
}
