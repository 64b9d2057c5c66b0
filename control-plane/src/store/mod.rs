//! All persistent state of the control plane, split by area: one trait per
//! area ([`RegistryStore`], [`BlobStore`], [`TrustStore`], [`InstallStore`],
//! [`KvStore`], [`ScheduleStore`], [`FleetStore`], [`QuotaStore`],
//! [`ApiKeyStore`], [`ExecutionLogStore`], [`DebugLogStore`],
//! [`IdempotencyStore`], [`RolloutStore`], [`CaptureStore`],
//! [`HealthStore`]), each in its own
//! file with the rows it reads and writes, and [`Store`], the umbrella the
//! control plane holds as `Arc<dyn Store>`.
//!
//! Two implementations with the same file per area: [`PgStore`] (`pg/`,
//! Postgres via deadpool-postgres, the system of record) and [`MemoryStore`]
//! (`memory/`, unit tests and `annex dev` without Postgres). Both run through
//! the one conformance suite in `tests/store_suite/`.
//!
//! This module is the only place in Annex that holds SQL text (with
//! `migrations/`). It knows nothing of gRPC; callers pass validated values.

use async_trait::async_trait;

mod apikeys;
mod blobs;
mod captures;
mod executions;
mod fleet;
mod idempotency;
mod installs;
mod kv;
mod logs;
mod memory;
mod pg;
mod quota;
mod registry;
mod rollouts;
mod schedules;
mod trust;

pub use apikeys::{ApiKeyRow, ApiKeyStore};
pub use blobs::{
    BlobEntry, BlobRead, BlobStore, BlobStoreSpec, FsBlobStore, READ_CHUNK, S3BlobStore,
    S3Settings, open_blob_store,
};
pub use captures::{CaptureAccessRow, CapturePolicyRow, CaptureRow, CaptureStore};
pub use executions::{ExecutionLogStore, ExecutionRow};
pub use fleet::{FleetStore, WorkerRow};
pub use idempotency::{ClaimOutcome, IdempotencyClaim, IdempotencyScope, IdempotencyStore};
pub use installs::{InstallRow, InstallStatus, InstallStore, InstallView, NewInstall, SecretsRow};
pub use kv::{KvStore, StoragePut, StorageQuota, StorageRow, StorageSchema, StorageScope};
pub use logs::{DebugEvent, DebugFilter, DebugLogStore};
pub use memory::MemoryStore;
pub use pg::{PgStore, PgStoreConfig};
pub use quota::{QuotaLimits, QuotaRow, QuotaStore, UsageRow};
pub use registry::{
    BundleRow, EndpointRow, ExtensionRow, ExtensionSelector, NewVersion, RegistryStore, UiRow,
    VersionRow, VersionSpec,
};
pub use rollouts::{
    NewRollout, ROLLOUT_BUCKETS, RolloutChange, RolloutEvent, RolloutPolicy, RolloutRow,
    RolloutState, RolloutStep, RolloutStore, RolloutVariant, VersionStats, is_failure, p99,
};
pub use schedules::{ScheduleFields, ScheduleRemap, ScheduleRow, ScheduleRun, ScheduleStore};
pub use trust::{KeyRow, TrustStore};

pub(crate) use blobs::remove_older as blobs_remove_older;
pub(crate) use quota::merge_usage;
pub(crate) use registry::{resolve_wildcard, slug};

/// What a store operation can fail with; callers branch on these.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// `(registry, version)` exists already; versions are immutable.
    #[error("version {version} already exists")]
    VersionExists { version: String },
    /// A unique key other than a version exists already (e.g. a key id).
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The row an update or delete targets does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The database cannot be reached or is overloaded; safe to retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database refused a value itself (SQLSTATE class 22, data
    /// exception: e.g. a NUL character in text or JSON, a number out of
    /// range). Retrying the same rows cannot help.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// Anything else; the message is for the log.
    #[error("store failure: {0}")]
    Internal(String),
    /// A storage compare-and-swap found another revision.
    #[error("revision mismatch")]
    RevisionMismatch,
    /// A storage quota would be exceeded; the message says which.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The blob store (filesystem, object store) failed or cannot be
    /// reached; the message is for the log. Safe to retry.
    #[error("blob store failure: {0}")]
    BlobStore(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The store as a whole, for readiness.
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// Ok when the store can serve requests (for `/ready`).
    async fn ping(&self) -> StoreResult<()>;
}

/// Every area of the store: what the control plane holds as `Arc<dyn Store>`.
/// Implemented for any type that implements all the area traits; callers
/// holding a concrete store type import the area traits they call.
pub trait Store:
    RegistryStore
    + BlobStore
    + TrustStore
    + InstallStore
    + KvStore
    + ScheduleStore
    + FleetStore
    + QuotaStore
    + ApiKeyStore
    + ExecutionLogStore
    + DebugLogStore
    + IdempotencyStore
    + RolloutStore
    + CaptureStore
    + HealthStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: RegistryStore
        + BlobStore
        + TrustStore
        + InstallStore
        + KvStore
        + ScheduleStore
        + FleetStore
        + QuotaStore
        + ApiKeyStore
        + ExecutionLogStore
        + DebugLogStore
        + IdempotencyStore
        + RolloutStore
        + CaptureStore
        + HealthStore
        + Send
        + Sync
        + 'static
{
}
