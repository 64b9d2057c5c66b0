//! The Annex control plane: the registry of extensions and their signed
//! bundles, the trust bundle of publisher keys, per-tenant installs with
//! grants, config and sealed secrets, host services for running guests,
//! placement and quotas for the fleet, served over mTLS gRPC with per-role
//! access. It is the only process that talks to Postgres ([`store`]).
//!
//! [`run`] takes validated [`Settings`] and the process's TLS identity and
//! bound [`Listeners`]; it builds each domain type once and gives every gRPC
//! service only the ones it calls. The modules, one concern each:
//!
//! - `config`: the binary's flags and the [`Settings`] and [`Limits`] built from them.
//! - `server`: [`run`]; wires the domain types, the gRPC services, health,
//!   reflection, the admin listener and the background loops.
//! - `grpc`: decodes protobuf, checks the caller's role, verifies execution
//!   grants, calls the domain types and encodes; no domain logic.
//! - `registry`: publishing signed bundles as immutable versions, reading them, bundle bytes.
//! - `blobs`: the upload spool, the orphan collector of the blob store and `migrate-blobs`.
//! - `trust`: publisher keys and the signature verdict.
//! - `installs`: install lifecycle, config, sealed secrets, resolve, grant issuing, invalidations.
//! - `grant`: the execution-grant format, its signer and the verified grant value.
//! - `seal`: sealing install secrets under the key-encryption key.
//! - `captures`: capture policies, recorded executions with sealed secrets, their audited reads.
//! - `host`: host services for guests: secrets, host-app and ui-proxy relays.
//! - `logs`: guest logs for the debug stream, kept in the store and followed from any replica.
//! - `storage`: the KV host API scoped to a grant's install.
//! - `idempotency`: idempotency records of keyed executions (claim, renew,
//!   complete, release), scoped to a grant's install, and their expiry.
//! - `rollouts`: gradual rollouts: start, promote, abort, the routes edges
//!   split by, and the evaluator that steps, promotes and rolls back.
//! - `scheduler`: the scheduler host API, its limits, cron and input rules, and the runner.
//! - `fleet`: worker membership, routing snapshot, rendezvous placement, worker commands.
//! - `quota`: fleet-wide quotas and their shares, usage windows, the replica's dispatch gate.
//! - `dispatch`: executions the control plane sends to workers itself.
//! - `apikeys`: edge API keys and the execution audit rows edges ship.
//! - `egress`: install egress entries (`host[:port]`, `*.suffix`, `private:`) and the platform allowlist.
//! - `metrics`: the `annex_control_plane_*` counters.
//! - [`store`]: the `Store` traits (one per area), their Postgres and in-memory
//!   implementations, all SQL.

#![warn(unreachable_pub)]

mod active_installs;
mod apikeys;
mod blobs;
mod captures;
mod config;
mod dispatch;
mod egress;
mod fleet;
mod grant;
mod grpc;
mod host;
mod idempotency;
mod installs;
mod logs;
mod metrics;
mod quota;
mod registry;
mod rollouts;
mod scheduler;
mod seal;
mod server;
mod storage;
pub mod store;
mod trust;

use annex_proto::{AnnexError, ErrorCode};

pub use apikeys::api_key_id;
pub use blobs::BlobLimits;
pub use blobs::migrate::{MigrateReport, migrate_blobs};
pub use config::{Config, Limits, MigrateBlobs, S3Args, Settings};
pub use host::HostAppConfig;
pub use scheduler::SchedulerLimits;
pub use seal::{SealError, Sealer};
pub use server::{Listeners, run};

/// Maps a store failure to what the client sees; internal detail is logged
/// here, once, and never sent.
impl From<store::StoreError> for AnnexError {
    fn from(err: store::StoreError) -> Self {
        use store::StoreError as E;
        match err {
            E::VersionExists { version } => AnnexError::new(
                ErrorCode::ExtensionVersionAlreadyExists,
                format!(
                    "Version \"{version}\" already exists for this extension. Publish a new version and try again."
                ),
            ),
            E::AlreadyExists(what) => {
                AnnexError::new(ErrorCode::InvalidArgument, format!("{what} already exists"))
            }
            E::NotFound(what) => AnnexError::new(ErrorCode::NotFound, format!("{what} not found")),
            E::Unavailable(detail) => {
                tracing::warn!(error = %detail, "store unavailable");
                AnnexError::new(
                    ErrorCode::Unavailable,
                    "the registry database is unavailable; retry shortly",
                )
            }
            E::RevisionMismatch => {
                AnnexError::new(ErrorCode::RevisionMismatch, "revision mismatch")
            }
            E::QuotaExceeded(what) => AnnexError::new(ErrorCode::QuotaExceeded, what),
            E::InvalidData(detail) => {
                tracing::warn!(error = %detail, "the database refused a value");
                AnnexError::invalid("a value cannot be stored (the database refused it)")
            }
            E::Internal(detail) => {
                tracing::error!(error = %detail, "store failure");
                AnnexError::internal()
            }
            E::BlobStore(detail) => {
                tracing::warn!(error = %detail, "blob store failure");
                AnnexError::new(
                    ErrorCode::Unavailable,
                    "the bundle blob store failed or is unreachable; retry shortly",
                )
            }
        }
    }
}
