//! Executions dispatched by the control plane itself: for internal gRPC
//! clients that hold no routing state, and for the cron scheduler. The edge
//! does the same dispatch from its own snapshot; this path is not on the
//! public hot path.
//!
//! Workers are tried in the edge's order: the hash's placed workers, then
//! the rest in rendezvous order.
//!
//! Retry rule (ARCHITECTURE.md, "Invariants"): a call that failed before the
//! worker started the guest (connect refused, draining, overload) is retried
//! once on the next placed worker; a call that reached the guest is never
//! retried.
//!
//! [`Dispatcher`] owns what calling workers takes: the channels to them, this
//! replica's TLS identity for them and the replica's quota gate. It reads
//! placement from [`Fleet`] and never changes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use annex_proto::domain::TenantId;
use annex_proto::pb;
use annex_proto::{AnnexError, ErrorCode};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::fleet::{Fleet, placed_workers, rank_workers};
use crate::installs::Installs;
use crate::quota::{DispatchQuotas, Quotas};
use crate::store::InstallView;
use crate::store::WorkerRow;

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
    /// Identity for calling workers: the server's own.
    worker_tls: annex_ops::tls::TlsMaterial,
    /// One lazily connected channel per worker address.
    worker_channels: Mutex<HashMap<String, Channel>>,
}

impl Dispatcher {
    pub(crate) fn new(
        installs: Arc<Installs>,
        fleet: Arc<Fleet>,
        quotas: Arc<Quotas>,
        worker_tls: annex_ops::tls::TlsMaterial,
    ) -> Dispatcher {
        Dispatcher {
            installs,
            fleet,
            quotas,
            gate: DispatchQuotas::default(),
            worker_tls,
            worker_channels: Mutex::default(),
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
        let execute = self.execute_request(&view, req);
        let workers = self.fleet.live_workers().await?;
        let hash = execute
            .context
            .as_ref()
            .map(|c| c.content_hash.clone())
            .unwrap_or_default();
        let ranked = candidates(&hash, &workers);
        if ranked.is_empty() {
            return Err(AnnexError::new(
                ErrorCode::Unavailable,
                "no worker is available",
            ));
        }
        let mut last = None;
        for worker in ranked.into_iter().take(2) {
            let channel = self.worker_channel(&worker.address)?;
            let mut client = pb::worker_client::WorkerClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024);
            let request = annex_ops::trace_context::request(execute.clone());
            match client.execute(request).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) if before_guest(&status) => {
                    tracing::warn!(worker = %worker.id, error = %status.message(), "worker refused an execution; trying the next");
                    last = Some(status);
                }
                Err(status) => {
                    tracing::warn!(worker = %worker.id, error = %status.message(), "execution failed on the worker");
                    return Err(AnnexError::new(
                        ErrorCode::Unavailable,
                        "the worker failed the execution",
                    ));
                }
            }
        }
        let message = last.map(|s| s.message().to_owned()).unwrap_or_default();
        tracing::warn!(error = %message, "no worker took the execution");
        Err(AnnexError::new(
            ErrorCode::Unavailable,
            "no worker could take the execution",
        ))
    }

    /// The request a worker executes for `view`.
    fn execute_request(&self, view: &InstallView, req: DispatchRequest) -> pb::ExecuteRequest {
        let (grant, _) = self.installs.issue_grant(view);
        let request_id = if req.request_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.request_id
        };
        pb::ExecuteRequest {
            context: Some(pb::ExecContext {
                request_id,
                tenant_id: view.install.tenant_id.clone(),
                extension_id: view.install.registry_id.to_string(),
                install_id: view.install.id.to_string(),
                version_id: view.install.version_id.to_string(),
                content_hash: view.version.bundle.content_hash.clone(),
                config: view.install.config.clone().into_iter().collect(),
                trigger: if req.trigger.is_empty() {
                    "internal".into()
                } else {
                    req.trigger
                },
                schedule_id: req.schedule_id,
            }),
            http: Some(req.http),
            limits: req.limits,
            providers: view.install.granted_caps.clone(),
            secrets_version: view
                .secrets
                .as_ref()
                .map(|s| s.version.clone())
                .unwrap_or_default(),
            user: req.user,
            idempotency_key: req.idempotency_key,
            execution_grant: grant,
            egress_allowlist: view.install.egress_allowlist.clone(),
            traceparent: String::new(),
        }
    }

    /// A cached mTLS channel to a worker (connected lazily).
    fn worker_channel(&self, address: &str) -> Result<Channel, AnnexError> {
        if let Some(ch) = self.worker_channels.lock().get(address) {
            return Ok(ch.clone());
        }
        let tls = &self.worker_tls;
        let endpoint = Endpoint::from_shared(format!("https://{address}"))
            .and_then(|e| e.tls_config(tls.client_config(host_of(address))))
            .map_err(|e| {
                tracing::error!(address, error = %e, "bad worker address");
                AnnexError::internal()
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        self.worker_channels
            .lock()
            .insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Workers to try for `content_hash`, best first: the placed ones (the
/// edge's placement, see [`crate::fleet`]), rotated when the hash has spilled
/// onto more than one, then the rest in rendezvous order.
fn candidates<'a>(content_hash: &str, workers: &'a [WorkerRow]) -> Vec<&'a WorkerRow> {
    let mut out = placed_workers(content_hash, workers);
    if out.len() > 1 {
        let start = (uuid::Uuid::new_v4().as_u128() % out.len() as u128) as usize;
        out.rotate_left(start);
    }
    for w in rank_workers(content_hash, workers) {
        if !out.iter().any(|o| o.id == w.id) {
            out.push(w);
        }
    }
    out
}

/// The host part of `host:port`, for the TLS server name.
fn host_of(address: &str) -> &str {
    match address.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => address,
    }
}

/// Whether a failed call never reached the guest, so retrying elsewhere is
/// safe (see [`annex_proto::error::never_started`]).
fn before_guest(status: &tonic::Status) -> bool {
    annex_proto::error::never_started(status)
}
