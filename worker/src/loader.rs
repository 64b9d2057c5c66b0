//! Making a bundle ready to instantiate: the compiled-component
//! [`cache`](crate::cache) first, else bytes from the [`BundleSource`]
//! verified against the [`TrustSource`] (on a blocking thread) and compiled.
//! Whatever the source (memory, disk, fresh), the bundle's signature must
//! still hold under the current trust keys before the component is handed
//! out: a revoked or expired key stops even a memory-cached component and
//! evicts it. A signature the current keys reject is checked once more
//! against keys listed again ([`TrustSource::relisted`]): a key added since
//! the last listing admits its bundle at once.
//!
//! A load that misses memory runs as its own task, one per bundle hash (a
//! flight), which callers join: a caller that stops waiting (a call
//! answered `COMPONENT_COMPILING`, a cancelled request) does not stop the
//! compile, so the next call finds the component ready. This is the only
//! place that combines sources, trust and the cache; it runs no guest and
//! knows nothing of requests.

use std::collections::HashMap;
use std::sync::Arc;

use annex_bundle::{ContentHash, TrustBundle};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::bundles::{self, BundleError, BundleSource, TrustSource};
use crate::cache::{CacheError, Compiled, ComponentCache, LoadSource, Verified};

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
    bundles: Arc<dyn BundleSource>,
    trust: Arc<dyn TrustSource>,
    /// Loads under way, by bundle hash, with where the result came from.
    flights: Mutex<HashMap<ContentHash, FlightResult>>,
}

/// A load a caller is waiting for (see [`Loader::begin`]).
pub(crate) enum Pending {
    /// Ready in memory.
    Ready {
        loader: Loader,
        hash: ContentHash,
        compiled: Arc<Compiled>,
    },
    /// Under way in its flight; `started` when this caller started it.
    Flight {
        loader: Loader,
        hash: ContentHash,
        result: FlightResult,
        started: bool,
    },
}

impl Pending {
    /// Waits for the load and re-checks the bundle's signature under the
    /// current trust keys.
    pub(crate) async fn wait(self) -> Result<(Arc<Compiled>, LoadSource), Arc<CacheError>> {
        match self {
            Pending::Ready {
                loader,
                hash,
                compiled,
            } => {
                loader.ensure_trusted(&hash, &compiled).await?;
                Ok((compiled, LoadSource::Memory))
            }
            Pending::Flight {
                loader,
                hash,
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
                let compiled = shared?;
                loader.ensure_trusted(&hash, &compiled).await?;
                // Whoever joined a flight someone else started got it from
                // memory, as far as they are concerned.
                let source = if started { source } else { LoadSource::Memory };
                Ok((compiled, source))
            }
        }
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
                bundles,
                trust,
                flights: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn cache(&self) -> &ComponentCache {
        &self.inner.cache
    }

    /// The component for `hash` and where it came from on this call.
    pub(crate) async fn load(
        &self,
        hash: &ContentHash,
    ) -> Result<(Arc<Compiled>, LoadSource), Arc<CacheError>> {
        self.begin(hash).wait().await
    }

    /// A memory hit, or the flight loading `hash` (joined, or started now).
    pub(crate) fn begin(&self, hash: &ContentHash) -> Pending {
        if let Some(Ok(compiled)) = self.inner.cache.get_memory(hash) {
            return Pending::Ready {
                loader: self.clone(),
                hash: hash.clone(),
                compiled: Arc::new(compiled),
            };
        }
        let mut flights = self.inner.flights.lock();
        if let Some(result) = flights.get(hash) {
            return Pending::Flight {
                loader: self.clone(),
                hash: hash.clone(),
                result: result.clone(),
                started: false,
            };
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(hash.clone(), rx.clone());
        drop(flights);
        let loader = self.clone();
        let key = hash.clone();
        tokio::spawn(async move {
            let result = loader.load_uncached(&key).await;
            let shared = result
                .map(|(c, s)| (Ok(Arc::new(c)), s))
                .unwrap_or_else(|e| (Err(Arc::new(e)), LoadSource::Compiled));
            // Done either way: later callers go through memory, or retry afresh.
            loader.inner.flights.lock().remove(&key);
            let _ = tx.send(Some(shared));
        });
        Pending::Flight {
            loader: self.clone(),
            hash: hash.clone(),
            result: rx,
            started: true,
        }
    }

    async fn load_uncached(
        &self,
        hash: &ContentHash,
    ) -> Result<(Compiled, LoadSource), CacheError> {
        self.inner
            .cache
            .get(
                hash,
                async |record| self.recheck(hash, record).await,
                || self.fetch_and_verify(hash),
            )
            .await
    }

    /// The bundle's signature under the current keys, or, when they reject
    /// it, under the keys listed again; evicted when it no longer holds.
    async fn ensure_trusted(
        &self,
        hash: &ContentHash,
        compiled: &Compiled,
    ) -> Result<(), Arc<CacheError>> {
        let bundle_error = |e| Arc::new(CacheError::Bundle(e));
        let trust = self.inner.trust.trust().await.map_err(bundle_error)?;
        let trusted = match compiled.bundle.ensure_trusted(&trust) {
            Err(BundleError::Untrusted(_)) => {
                let relisted = self.inner.trust.relisted().await.map_err(bundle_error)?;
                compiled.bundle.ensure_trusted(&relisted)
            }
            checked => checked,
        };
        if let Err(e) = trusted {
            self.inner.cache.evict(hash);
            return Err(bundle_error(e));
        }
        Ok(())
    }

    /// The keys that admit `record`: the current ones, or, when they do not,
    /// the keys listed again.
    async fn admitting(
        &self,
        hash: &ContentHash,
        record: &bundles::SignatureRecord,
    ) -> Result<Arc<TrustBundle>, CacheError> {
        let trust = self.inner.trust.trust().await?;
        match bundles::verify_signature(hash, record, &trust) {
            Ok(_) => Ok(trust),
            Err(BundleError::Untrusted(_)) => {
                let relisted = self.inner.trust.relisted().await?;
                bundles::verify_signature(hash, record, &relisted)?;
                Ok(relisted)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A disk-cached bundle record's signature under the current keys.
    async fn recheck(
        &self,
        hash: &ContentHash,
        record: &bundles::SignatureRecord,
    ) -> Result<(), CacheError> {
        self.admitting(hash, record).await.map(drop)
    }

    /// Fetches the bundle and checks hash and signature before taking the
    /// component and the manifest's world out of the archive (hashing and
    /// unpacking on a blocking thread; the signature, which binds the
    /// requested hash, is checked first so that a key added since the last
    /// listing can be looked up).
    async fn fetch_and_verify(&self, hash: &ContentHash) -> Result<Verified, CacheError> {
        let fetched = self.inner.bundles.fetch(hash).await?;
        let trust = self.admitting(hash, &fetched.signature).await?;
        let hash = hash.clone();
        tokio::task::spawn_blocking(move || {
            let extracted = bundles::verify_and_extract(&hash, &fetched, &trust)?;
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
}
