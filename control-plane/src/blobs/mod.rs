//! Bundle bytes around the blob store: the spool uploads stream into
//! ([`spool`]), the orphan collector, and `migrate-blobs` ([`migrate`]).
//!
//! The collector runs on every replica (deletes are idempotent, so replicas
//! need no leader). Each pass deletes the blobs that no bundle row
//! references and that were committed longer than the grace period ago (a
//! publish commits its blob before it writes the row, so a younger blob may
//! be about to be referenced), then the store's staging leftovers and the
//! spool files older than the grace period.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::metrics::Metrics;
use crate::store::{BlobStore, Store, StoreResult};

pub(crate) mod migrate;
pub(crate) mod spool;

/// How bundle bytes are handled around the blob store.
#[derive(Debug, Clone)]
pub struct BlobLimits {
    /// Where uploads are spooled while they stream in; unset: the system's
    /// temporary directory.
    pub spool_dir: Option<PathBuf>,
    /// Unreferenced blobs and staging leftovers younger than this are kept.
    /// Longer than any publish takes (default 1 h).
    pub orphan_grace: Duration,
    /// How often the collector runs (default 10 min).
    pub collect_every: Duration,
}

impl Default for BlobLimits {
    fn default() -> Self {
        BlobLimits {
            spool_dir: None,
            orphan_grace: Duration::from_secs(3600),
            collect_every: Duration::from_secs(600),
        }
    }
}

impl BlobLimits {
    pub(crate) fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// What one collector pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Collected {
    pub(crate) blobs: u64,
    pub(crate) staging: u64,
}

/// The orphan collector.
pub(crate) struct Collector {
    blobs: Arc<dyn BlobStore>,
    store: Arc<dyn Store>,
    limits: BlobLimits,
    metrics: Arc<Metrics>,
}

impl Collector {
    pub(crate) fn new(
        blobs: Arc<dyn BlobStore>,
        store: Arc<dyn Store>,
        limits: BlobLimits,
        metrics: Arc<Metrics>,
    ) -> Collector {
        Collector {
            blobs,
            store,
            limits,
            metrics,
        }
    }

    /// One pass.
    pub(crate) async fn collect(&self) -> StoreResult<Collected> {
        let grace =
            chrono::TimeDelta::from_std(self.limits.orphan_grace).unwrap_or(chrono::TimeDelta::MAX);
        let before = Utc::now()
            .checked_sub_signed(grace)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let mut collected = Collected::default();
        for blob in self.blobs.list_blobs().await? {
            if blob.modified >= before
                || self
                    .store
                    .version_by_content_hash(&blob.content_hash)
                    .await?
                    .is_some()
            {
                continue;
            }
            if self.blobs.delete_blob(&blob.content_hash).await? {
                tracing::info!(content_hash = %blob.content_hash, size = blob.size, "orphaned blob deleted");
                collected.blobs += 1;
            }
        }
        collected.staging += self.blobs.collect_staging(before).await?;
        let spool = self.limits.spool_dir();
        collected.staging += tokio::task::spawn_blocking(move || {
            crate::store::blobs_remove_older(&spool, before, |name| {
                name.starts_with(spool::SPOOL_PREFIX)
            })
        })
        .await
        .map_err(|e| crate::store::StoreError::Internal(format!("spool sweep: {e}")))??;
        self.metrics
            .blobs_collected(collected.blobs, collected.staging);
        Ok(collected)
    }

    /// Runs a pass every `collect_every` until `stop`.
    pub(crate) async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.limits.collect_every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.collect().await {
                Ok(c) if c.blobs + c.staging > 0 => tracing::info!(
                    blobs = c.blobs, staging = c.staging, store = %self.blobs.describe(),
                    "orphan collection"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "orphan collection failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
