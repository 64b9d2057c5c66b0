//! `annex.v1.HostServices`: called by workers for running guests (worker
//! role, every call carrying an execution grant); `WatchLogs` by edges and
//! operators. The grant's signature and expiry are checked here, before
//! anything else the call carries; the domain types get a
//! [`VerifiedGrant`], never the token.

use std::pin::Pin;
use std::sync::Arc;

use annex_ops::Role;
use annex_ops::tls::require;
use annex_proto::AnnexError;
use annex_proto::pb::{self, host_services_server::HostServices};
use chrono::Utc;
use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use super::{Closing, scheduler, storage};
use crate::grant::{GrantSigner, VerifiedGrant};
use crate::host::{Host, UiProxyCall};
use crate::idempotency::{ClaimRequest, Found, Idempotency, KeptResponse};
use crate::logs::{DebugLogs, parse_id};
use crate::scheduler::Scheduler;
use crate::storage::Storage;
use crate::store::DebugFilter;

const WORKERS: &[Role] = &[Role::Worker];
const WATCHERS: &[Role] = &[Role::Edge, Role::Operator];

pub(crate) struct HostService {
    pub(crate) grants: Arc<GrantSigner>,
    pub(crate) storage: Arc<Storage>,
    pub(crate) idempotency: Arc<Idempotency>,
    pub(crate) host: Arc<Host>,
    pub(crate) logs: Arc<DebugLogs>,
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) captures: Arc<crate::captures::Captures>,
    pub(crate) closing: Closing,
}

impl HostService {
    /// The call's execution grant, if its signature holds and it has not
    /// expired.
    fn verified(&self, token: &str) -> Result<VerifiedGrant, AnnexError> {
        Ok(self.grants.verify(token, Utc::now())?)
    }

    /// The grant of a call that finishes an idempotency claim: its
    /// signature must hold, but it may have expired during the call (the
    /// claim token proves the caller holds the record).
    fn verified_for_claim(&self, token: &str) -> Result<VerifiedGrant, AnnexError> {
        Ok(self
            .grants
            .verify_expired_within(token, Utc::now(), CLAIM_GRANT_GRACE)?)
    }
}

/// How long after its grant expired a claim may still be renewed,
/// completed or released: longer than any execution may take.
const CLAIM_GRANT_GRACE: chrono::Duration = chrono::Duration::minutes(15);

fn lease(ms: u32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(ms))
}

fn kept_pb(r: KeptResponse) -> pb::IdempotentResponse {
    pb::IdempotentResponse {
        status: r.status,
        headers: r.headers.into_iter().collect(),
        body: r.body,
        not_kept: r.not_kept,
    }
}

fn kept_from_pb(r: Option<pb::IdempotentResponse>) -> Result<KeptResponse, AnnexError> {
    let r = r.ok_or_else(|| AnnexError::invalid("response is required"))?;
    Ok(KeptResponse {
        status: r.status,
        headers: r.headers.into_iter().collect(),
        body: r.body,
        not_kept: r.not_kept,
    })
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogEvent, Status>> + Send>>;

#[tonic::async_trait]
impl HostServices for HostService {
    async fn storage_get(
        &self,
        req: Request<pb::StorageGetRequest>,
    ) -> Result<Response<pb::StorageGetResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let record = self.storage.get(&grant, &r.namespace, &r.key).await?;
        Ok(Response::new(pb::StorageGetResponse {
            record: Some(storage::record_pb(&record)),
        }))
    }

    async fn storage_put(
        &self,
        req: Request<pb::StoragePutRequest>,
    ) -> Result<Response<pb::StorageRecord>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let record = self.storage.put(&grant, storage::put_from_pb(r)).await?;
        Ok(Response::new(storage::record_pb(&record)))
    }

    async fn storage_bulk_put(
        &self,
        req: Request<pb::StorageBulkPutRequest>,
    ) -> Result<Response<pb::StorageBulkPutResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let records = self
            .storage
            .bulk_put(&grant, storage::bulk_from_pb(r))
            .await?;
        Ok(Response::new(pb::StorageBulkPutResponse {
            records: records.iter().map(storage::record_pb).collect(),
        }))
    }

    async fn storage_delete(
        &self,
        req: Request<pb::StorageDeleteRequest>,
    ) -> Result<Response<pb::StorageDeleteResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let deleted = self
            .storage
            .delete(&grant, &r.namespace, &r.key, r.if_revision)
            .await?;
        Ok(Response::new(pb::StorageDeleteResponse { deleted }))
    }

    async fn storage_list(
        &self,
        req: Request<pb::StorageListRequest>,
    ) -> Result<Response<pb::StorageListResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let (records, next) = self.storage.list(&grant, storage::list_from_pb(&r)).await?;
        Ok(Response::new(pb::StorageListResponse {
            records: records.iter().map(storage::record_pb).collect(),
            next_cursor: next.unwrap_or_default(),
        }))
    }

    async fn record_capture(
        &self,
        req: Request<pb::RecordCaptureRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        require(&req, WORKERS)?;
        let mut capture = req.into_inner();
        let grant = self.verified(&std::mem::take(&mut capture.grant))?;
        self.captures.record(&grant, capture).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_secrets(
        &self,
        req: Request<pb::GetSecretsRequest>,
    ) -> Result<Response<pb::GetSecretsResponse>, Status> {
        require(&req, WORKERS)?;
        let grant = self.verified(&req.into_inner().grant)?;
        let (values, version) = self.host.secrets(&grant).await?;
        Ok(Response::new(pb::GetSecretsResponse {
            values: values.into_iter().collect(),
            version,
        }))
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        require(&req, WORKERS)?;
        let grant = self.verified(&req.into_inner().grant)?;
        let rows = self.scheduler.list_schedules(&grant).await?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: rows.iter().map(scheduler::info_pb).collect(),
        }))
    }

    async fn get_schedule(
        &self,
        req: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::GetScheduleResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let row = self.scheduler.get_schedule(&grant, &r.schedule_id).await?;
        Ok(Response::new(pb::GetScheduleResponse {
            schedule: row.as_ref().map(scheduler::info_pb),
        }))
    }

    async fn create_schedule(
        &self,
        req: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::ScheduleMutationResult>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let result = self
            .scheduler
            .create_schedule(&grant, scheduler::create_from_pb(r))
            .await?;
        Ok(Response::new(scheduler::mutation_pb(result.map(Some))))
    }

    async fn update_schedule(
        &self,
        req: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::ScheduleMutationResult>, Status> {
        require(&req, WORKERS)?;
        let mut r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let id = std::mem::take(&mut r.schedule_id);
        let result = self
            .scheduler
            .update_schedule(&grant, &id, scheduler::changes_from_pb(r))
            .await?;
        Ok(Response::new(scheduler::mutation_pb(result.map(|()| None))))
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::ScheduleMutationResult>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let result = self
            .scheduler
            .delete_schedule(&grant, &r.schedule_id)
            .await?;
        Ok(Response::new(scheduler::mutation_pb(result.map(|()| None))))
    }

    async fn get_endpoints(
        &self,
        req: Request<pb::GetEndpointsRequest>,
    ) -> Result<Response<pb::GetEndpointsResponse>, Status> {
        require(&req, WORKERS)?;
        let grant = self.verified(&req.into_inner().grant)?;
        let endpoints = self.scheduler.endpoints(&grant).await?;
        Ok(Response::new(pb::GetEndpointsResponse {
            endpoints: endpoints.into_iter().map(scheduler::endpoint_pb).collect(),
        }))
    }

    async fn call_host_api(
        &self,
        req: Request<pb::HostApiRequest>,
    ) -> Result<Response<pb::HostApiResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let resp = self
            .host
            .call_host_api(&grant, &r.api, &r.body_json)
            .await?;
        Ok(Response::new(pb::HostApiResponse {
            status: u32::from(resp.status),
            body: resp.body,
        }))
    }

    async fn call_ui_proxy(
        &self,
        req: Request<pb::UiProxyRequest>,
    ) -> Result<Response<pb::HostApiResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let call = UiProxyCall {
            route: r.route,
            payload: r.payload,
            request_id: r.request_id,
            user_id: r.user_id,
            user_email: r.user_email,
        };
        let resp = self.host.call_ui_proxy(&grant, call).await?;
        Ok(Response::new(pb::HostApiResponse {
            status: u32::from(resp.status),
            body: resp.body,
        }))
    }

    async fn publish_logs(
        &self,
        req: Request<pb::LogBatch>,
    ) -> Result<Response<pb::Empty>, Status> {
        require(&req, WORKERS)?;
        self.logs.publish(req.into_inner().events).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn idempotency_claim(
        &self,
        req: Request<pb::IdempotencyClaimRequest>,
    ) -> Result<Response<pb::IdempotencyClaimResponse>, Status> {
        use pb::idempotency_claim_response::State;
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified(&r.grant)?;
        let claimed = self
            .idempotency
            .claim(
                &grant,
                ClaimRequest {
                    key: r.key,
                    request_hash: r.request_hash,
                    token: r.claim_token,
                    lease: lease(r.lease_ms),
                },
            )
            .await?;
        let mut out = pb::IdempotencyClaimResponse::default();
        match claimed {
            Found::Claimed => out.set_state(State::Claimed),
            Found::InProgress { lease_expires_at } => {
                out.set_state(State::InProgress);
                out.lease_expires_at = super::ts(lease_expires_at);
            }
            Found::Completed(response) => {
                out.set_state(State::Completed);
                out.response = Some(kept_pb(response));
            }
            Found::Conflict => out.set_state(State::Conflict),
        }
        Ok(Response::new(out))
    }

    async fn idempotency_renew(
        &self,
        req: Request<pb::IdempotencyLeaseRequest>,
    ) -> Result<Response<pb::IdempotencyOwnership>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified_for_claim(&r.grant)?;
        let owned = self
            .idempotency
            .renew(&grant, &r.key, &r.claim_token, lease(r.lease_ms))
            .await?;
        Ok(Response::new(pb::IdempotencyOwnership { owned }))
    }

    async fn idempotency_complete(
        &self,
        req: Request<pb::IdempotencyCompleteRequest>,
    ) -> Result<Response<pb::IdempotencyOwnership>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified_for_claim(&r.grant)?;
        let response = kept_from_pb(r.response)?;
        let owned = self
            .idempotency
            .complete(&grant, &r.key, &r.claim_token, response)
            .await?;
        Ok(Response::new(pb::IdempotencyOwnership { owned }))
    }

    async fn idempotency_release(
        &self,
        req: Request<pb::IdempotencyLeaseRequest>,
    ) -> Result<Response<pb::IdempotencyOwnership>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let grant = self.verified_for_claim(&r.grant)?;
        let owned = self
            .idempotency
            .release(&grant, &r.key, &r.claim_token)
            .await?;
        Ok(Response::new(pb::IdempotencyOwnership { owned }))
    }

    type WatchLogsStream = LogStream;

    async fn watch_logs(
        &self,
        req: Request<pb::WatchLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        require(&req, WATCHERS)?;
        let r = req.into_inner();
        let filter = log_filter(r.tenant_id, r.extension_id, r.install_id, r.request_id)?;
        let after = parse_id(&r.after_id)?;
        let stream = self
            .logs
            .clone()
            .follow(filter, r.tail, after, self.closing.closed())
            .await
            .map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_logs(
        &self,
        req: Request<pb::ListLogsRequest>,
    ) -> Result<Response<pb::LogPage>, Status> {
        require(&req, WATCHERS)?;
        let r = req.into_inner();
        let filter = log_filter(r.tenant_id, r.extension_id, r.install_id, r.request_id)?;
        let after = parse_id(&r.after_id)?;
        let (events, last) = self.logs.page(&filter, after, r.limit).await?;
        Ok(Response::new(pb::LogPage {
            events,
            last_id: last.to_string(),
        }))
    }
}

/// A watcher's filter: the tenant and the extension are required; an empty
/// install or request id means any.
fn log_filter(
    tenant_id: String,
    extension_id: String,
    install_id: String,
    request_id: String,
) -> Result<DebugFilter, AnnexError> {
    if tenant_id.trim().is_empty() || extension_id.trim().is_empty() {
        return Err(AnnexError::invalid(
            "tenant_id and extension_id are required",
        ));
    }
    let any = |s: String| (!s.is_empty()).then_some(s);
    Ok(DebugFilter {
        tenant_id,
        extension_id,
        install_id: any(install_id),
        request_id: any(request_id),
    })
}
