//! Executions dispatched by the control plane itself: for internal gRPC
//! clients that hold no routing state, and for the cron scheduler. The edge
//! does the same dispatch from its own snapshot; this path is not on the
//! public hot path.
//!
//! Workers are ranked, called and retried by `annex_dispatch`, exactly as
//! the edge does: the hash's placed workers with room first, then the
//! rest, workers that just failed at the transport last; a second worker
//! only when the first never started a guest, or failed mid-call a call
//! with an idempotency key (as scheduled runs carry).
//!
//! [`Dispatcher`] owns what calling workers takes: the `annex_dispatch`
//! channels and health marks, made with this replica's TLS identity, and the
//! replica's quota gate. It reads placement from [`Fleet`] and never changes
//! it.

use std::sync::Arc;

use annex_dispatch::{
    ExecuteError, Installed, Invocation, RoutingTable, Trigger, WorkerTarget, WorkerTls, Workers,
};
use annex_proto::domain::TenantId;
use annex_proto::pb;
use annex_proto::{AnnexError, ErrorCode};

use crate::captures::Captures;
use crate::fleet::{Fleet, placed_workers};
use crate::installs::Installs;
use crate::quota::{DispatchQuotas, Quotas};
use crate::store::InstallView;
use crate::store::WorkerRow;

/// Largest Execute message either way: what a worker answers at most.
const MAX_EXECUTE_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// An execution request from an internal client.
#[derive(Debug, Clone, Default)]
pub(crate) struct DispatchRequest {
    pub(crate) tenant: String,
    pub(crate) extension: String,
    pub(crate) http: pb::HttpRequest,
    pub(crate) user: Option<pb::User>,
    pub(crate) request_id: String,
    pub(crate) idempotency_key: String,
    pub(crate) limits: Option<pb::Limits>,
    /// "internal" or "schedule".
    pub(crate) trigger: String,
    pub(crate) schedule_id: String,
}

/// Executions this replica sends to workers itself.
pub(crate) struct Dispatcher {
    installs: Arc<Installs>,
    fleet: Arc<Fleet>,
    quotas: Arc<Quotas>,
    /// This replica's share of the quotas, for executions it dispatches.
    gate: DispatchQuotas,
    /// Channels to workers, health marks and rotation.
    workers: Workers,
    /// Capture policies, sent with each execution.
    captures: Arc<Captures>,
}

impl Dispatcher {
    /// `worker_tls` is the identity presented to workers (the server's own).
    pub(crate) fn new(
        installs: Arc<Installs>,
        fleet: Arc<Fleet>,
        quotas: Arc<Quotas>,
        captures: Arc<Captures>,
        worker_tls: annex_ops::tls::Tls,
    ) -> Dispatcher {
        let workers = Workers::new(
            WorkerTls {
                material: worker_tls,
                server_name: None,
            },
            MAX_EXECUTE_MESSAGE_BYTES,
        );
        Dispatcher {
            installs,
            fleet,
            quotas,
            gate: DispatchQuotas::default(),
            workers,
            captures,
        }
    }

    pub(crate) async fn dispatch(
        &self,
        req: DispatchRequest,
    ) -> Result<pb::ExecuteResponse, AnnexError> {
        let tenant = TenantId::parse(&req.tenant)?;
        let view = self.installs.resolve(&tenant, &req.extension).await?;
        // Held until the worker answers: this replica's share of the quotas.
        let _quota = self
            .gate
            .permit(
                &self.quotas,
                &view.install.tenant_id,
                &view.install.id.to_string(),
            )
            .await?;
        let capture = self
            .captures
            .settings(
                &view.install.tenant_id,
                view.install.id,
                &view.install.config_version,
            )
            .await?;
        let execute = self.execute_request(&view, req, capture);
        let rows = self.fleet.live_workers().await?;
        let hash = view.version.bundle.content_hash.as_str();
        let workers = &self.workers;
        let candidates = workers.candidates(&routing_table(hash, &rows), hash);
        match workers.execute(&candidates, execute).await {
            Ok(executed) => Ok(executed.response),
            Err(ExecuteError::NoWorkers) => Err(AnnexError::new(
                ErrorCode::Unavailable,
                "no worker is available",
            )),
            Err(ExecuteError::Compiling { .. }) => Err(AnnexError::new(
                ErrorCode::ComponentCompiling,
                "the component is compiling; retry shortly",
            )),
            Err(ExecuteError::Timeout) => {
                tracing::warn!("the execution timed out");
                Err(AnnexError::new(
                    ErrorCode::Timeout,
                    "the execution timed out",
                ))
            }
            Err(ExecuteError::Idempotency { error, .. }) => Err(error),
            Err(ExecuteError::Refused(error)) => {
                tracing::warn!(%error, "no worker took the execution");
                Err(AnnexError::new(
                    ErrorCode::Unavailable,
                    "no worker could take the execution",
                ))
            }
            Err(ExecuteError::Failed(error)) => {
                tracing::warn!(%error, "execution failed on the worker");
                Err(AnnexError::new(
                    ErrorCode::Unavailable,
                    "the worker failed the execution",
                ))
            }
        }
    }

    /// The request a worker executes for `view`.
    fn execute_request(
        &self,
        view: &InstallView,
        req: DispatchRequest,
        capture: Option<pb::CaptureSettings>,
    ) -> pb::ExecuteRequest {
        let (grant, _) = self.installs.issue_grant(view);
        annex_dispatch::execute_request(
            Installed {
                tenant_id: view.install.tenant_id.clone(),
                extension_id: view.install.registry_id.to_string(),
                install_id: view.install.id.to_string(),
                version_id: view.install.version_id.to_string(),
                content_hash: view.version.bundle.content_hash.clone(),
                config: view.install.config.clone().into_iter().collect(),
                providers: view.install.granted_caps.clone(),
                secrets_version: view
                    .secrets
                    .as_ref()
                    .map(|s| s.version.clone())
                    .unwrap_or_default(),
                execution_grant: grant,
                egress_allowlist: view.install.egress_allowlist.clone(),
                capture,
            },
            Invocation {
                request_id: req.request_id,
                trigger: match req.trigger.as_str() {
                    "schedule" => Trigger::Schedule,
                    _ => Trigger::Internal,
                },
                schedule_id: req.schedule_id,
                http: req.http,
                user: req.user,
                limits: req.limits,
                idempotency_key: req.idempotency_key,
                traceparent: String::new(),
            },
        )
    }
}

/// The routing table for one content hash: the live workers and the hash's
/// placement, exactly what a routing snapshot would say about it (see
/// [`crate::fleet`]).
fn routing_table(content_hash: &str, workers: &[WorkerRow]) -> RoutingTable {
    let placed = placed_workers(content_hash, workers)
        .into_iter()
        .map(|w| w.id.clone())
        .collect();
    RoutingTable {
        workers: workers
            .iter()
            .map(|w| WorkerTarget {
                id: w.id.clone(),
                address: w.address.clone(),
                capacity: w.capacity,
                in_flight: w.in_flight,
            })
            .collect(),
        placements: [(content_hash.to_owned(), placed)].into(),
    }
}
