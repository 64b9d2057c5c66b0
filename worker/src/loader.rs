//! Making a content hash ready to instantiate: the compiled-component
//! [`cache`](crate::cache) first, else bytes from the [`BundleSource`]
//! verified against the [`TrustSource`] (on a blocking thread) and compiled.
//! Whatever the source (memory, disk, fresh), the bundle's signature must
//! still hold under the current trust keys before the component is handed
//! out: a revoked or expired key stops even a memory-cached component and
//! evicts it. A signature the current keys reject is checked once more
//! against keys listed again ([`TrustSource::relisted`]): a key added since
//! the last listing admits its bundle at once. This is the only place that
//! combines sources, trust and the cache; it runs no guest and knows nothing
//! of requests.

use std::sync::Arc;

use annex_bundle::{ContentHash, TrustBundle};

use crate::bundles::{self, BundleError, BundleSource, TrustSource};
use crate::cache::{CacheError, Compiled, ComponentCache, LoadSource, Verified};

/// Loads verified, compiled components.
pub(crate) struct Loader {
    cache: ComponentCache,
    bundles: Arc<dyn BundleSource>,
    trust: Arc<dyn TrustSource>,
}

impl Loader {
    pub(crate) fn new(
        cache: ComponentCache,
        bundles: Arc<dyn BundleSource>,
        trust: Arc<dyn TrustSource>,
    ) -> Loader {
        Loader {
            cache,
            bundles,
            trust,
        }
    }

    pub(crate) fn cache(&self) -> &ComponentCache {
        &self.cache
    }

    /// The component for `hash` and where it came from on this call.
    pub(crate) async fn load(
        &self,
        hash: &ContentHash,
    ) -> Result<(Arc<Compiled>, LoadSource), CacheError> {
        let (compiled, source) = self
            .cache
            .get(
                hash,
                async |record| self.recheck(hash, record).await,
                || self.fetch_and_verify(hash),
            )
            .await?;
        let trust = self.trust.trust().await?;
        let trusted = match compiled.ensure_trusted(&trust) {
            Err(BundleError::Untrusted(_)) => {
                let relisted = self.trust.relisted().await?;
                compiled.ensure_trusted(&relisted)
            }
            checked => checked,
        };
        if let Err(e) = trusted {
            self.cache.evict(hash);
            return Err(e.into());
        }
        Ok((compiled, source))
    }

    /// The keys that admit `record`: the current ones, or, when they do not,
    /// the keys listed again.
    async fn admitting(
        &self,
        hash: &ContentHash,
        record: &bundles::SignatureRecord,
    ) -> Result<Arc<TrustBundle>, CacheError> {
        let trust = self.trust.trust().await?;
        match bundles::verify_signature(hash, record, &trust) {
            Ok(_) => Ok(trust),
            Err(BundleError::Untrusted(_)) => {
                let relisted = self.trust.relisted().await?;
                bundles::verify_signature(hash, record, &relisted)?;
                Ok(relisted)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A disk-cached artifact's signature record under the current keys.
    async fn recheck(
        &self,
        hash: &ContentHash,
        record: &bundles::SignatureRecord,
    ) -> Result<(), CacheError> {
        self.admitting(hash, record).await.map(drop)
    }

    /// Fetches the bundle and checks hash and signature before taking the
    /// component out of the archive (hashing and unpacking on a blocking
    /// thread; the signature, which binds the requested hash, is checked
    /// first so that a key added since the last listing can be looked up).
    async fn fetch_and_verify(&self, hash: &ContentHash) -> Result<Verified, CacheError> {
        let fetched = self.bundles.fetch(hash).await?;
        let trust = self.admitting(hash, &fetched.signature).await?;
        let hash = hash.clone();
        tokio::task::spawn_blocking(move || {
            let component = bundles::verify_and_extract(&hash, &fetched, &trust)?;
            Ok(Verified {
                component,
                signature: fetched.signature,
            })
        })
        .await
        .map_err(|e| CacheError::Compile(format!("verify task failed: {e}")))?
    }
}
