//! Making a content hash ready to instantiate: the compiled-component
//! [`cache`](crate::cache) first, else bytes from a [`BundleSource`]
//! verified against a [`TrustSource`] (on a blocking thread) and compiled.
//! Whatever the source (memory, disk, fresh), the bundle's signature must
//! still hold under the current trust keys before the component is handed
//! out: a revoked or expired key stops even a memory-cached component and
//! evicts it. A signature the current keys reject is checked once more
//! against keys listed again ([`TrustSource::relisted`]): a key added since
//! the last listing admits its bundle at once. This is the only place that
//! combines sources, trust and the cache; it runs no guest and knows nothing
//! of requests.
//!
//! A load follows a [`LoadPlan`]: the worker's own (its bundle source and
//! trust keys), or one a caller brings (the runner API's bundle store).
//! A plan without trust keys checks the content hash only; the compiled
//! cache is shared, and a plan with trust keys re-verifies whatever it
//! finds there, so a component loaded without a signature never reaches a
//! caller that requires one.

use std::sync::Arc;

use annex_bundle::{ContentHash, TrustBundle};

use crate::bundles::{self, BundleError, BundleSource, TrustSource};
use crate::cache::{CacheError, Compiled, ComponentCache, LoadSource, Verified};

/// Where one load takes bundle bytes and trust keys from.
#[derive(Clone)]
pub(crate) struct LoadPlan {
    pub(crate) bundles: Arc<dyn BundleSource>,
    /// `None`: the content hash is the only check (no signature).
    pub(crate) trust: Option<Arc<dyn TrustSource>>,
}

/// Loads verified, compiled components.
pub(crate) struct Loader {
    cache: ComponentCache,
    own: LoadPlan,
}

impl Loader {
    pub(crate) fn new(
        cache: ComponentCache,
        bundles: Arc<dyn BundleSource>,
        trust: Arc<dyn TrustSource>,
    ) -> Loader {
        Loader {
            cache,
            own: LoadPlan {
                bundles,
                trust: Some(trust),
            },
        }
    }

    pub(crate) fn cache(&self) -> &ComponentCache {
        &self.cache
    }

    /// The component for `hash` from the worker's own sources, and where it
    /// came from on this call.
    pub(crate) async fn load(
        &self,
        hash: &ContentHash,
    ) -> Result<(Arc<Compiled>, LoadSource), CacheError> {
        self.load_with(hash, &self.own).await
    }

    /// The component for `hash`, fetched and trusted as `plan` says.
    pub(crate) async fn load_with(
        &self,
        hash: &ContentHash,
        plan: &LoadPlan,
    ) -> Result<(Arc<Compiled>, LoadSource), CacheError> {
        let (compiled, source) = self
            .cache
            .get(
                hash,
                async |record| recheck(hash, record, plan).await,
                || fetch_and_verify(hash, plan),
            )
            .await?;
        if let Some(trust) = &plan.trust {
            let current = trust.trust().await?;
            let trusted = match compiled.ensure_trusted(&current) {
                Err(BundleError::Untrusted(_)) => {
                    let relisted = trust.relisted().await?;
                    compiled.ensure_trusted(&relisted)
                }
                checked => checked,
            };
            if let Err(e) = trusted {
                self.cache.evict(hash);
                return Err(e.into());
            }
        }
        Ok((compiled, source))
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

/// A disk-cached artifact's signature record under the plan's current keys
/// (any artifact passes a plan without keys: only this process writes the
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
/// component out of the archive (hashing and unpacking on a blocking
/// thread; the signature, which binds the requested hash, is checked first
/// so that a key added since the last listing can be looked up).
async fn fetch_and_verify(hash: &ContentHash, plan: &LoadPlan) -> Result<Verified, CacheError> {
    let fetched = plan.bundles.fetch(hash).await?;
    let trust = match &plan.trust {
        Some(trust) => Some(admitting(trust.as_ref(), hash, &fetched.signature).await?),
        None => None,
    };
    let hash = hash.clone();
    tokio::task::spawn_blocking(move || {
        let component = bundles::verify_and_extract(&hash, &fetched, trust.as_deref())?;
        Ok(Verified {
            component,
            signature: fetched.signature,
        })
    })
    .await
    .map_err(|e| CacheError::Compile(format!("verify task failed: {e}")))?
}
