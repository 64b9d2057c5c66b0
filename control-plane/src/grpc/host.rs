//! `annex.v1.HostServices`: called by workers for running guests (worker
//! role, every call carrying an execution grant); `WatchLogs` by edges and
//! operators.

use std::pin::Pin;

use annex_ops::Role;
use annex_ops::tls::require;
use annex_proto::pb::{self, host_services_server::HostServices};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::{scheduler, status};
use crate::ControlPlane;
use crate::host::UiProxyCall;

const WORKERS: &[Role] = &[Role::Worker];
const WATCHERS: &[Role] = &[Role::Edge, Role::Operator];

#[derive(Debug, Clone)]
pub struct HostService(pub ControlPlane);

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogEvent, Status>> + Send>>;

#[tonic::async_trait]
impl HostServices for HostService {
    async fn storage_get(
        &self,
        req: Request<pb::StorageGetRequest>,
    ) -> Result<Response<pb::StorageGetResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let record = self
            .0
            .storage_get(&r.grant, &r.namespace, &r.key)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StorageGetResponse {
            record: Some(super::storage::record_pb(&record)),
        }))
    }

    async fn storage_put(
        &self,
        req: Request<pb::StoragePutRequest>,
    ) -> Result<Response<pb::StorageRecord>, Status> {
        require(&req, WORKERS)?;
        let mut r = req.into_inner();
        let grant = std::mem::take(&mut r.grant);
        let record = self
            .0
            .storage_put(&grant, super::storage::put_from_pb(r))
            .await
            .map_err(status)?;
        Ok(Response::new(super::storage::record_pb(&record)))
    }

    async fn storage_delete(
        &self,
        req: Request<pb::StorageDeleteRequest>,
    ) -> Result<Response<pb::StorageDeleteResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let deleted = self
            .0
            .storage_delete(&r.grant, &r.namespace, &r.key, r.if_revision)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StorageDeleteResponse { deleted }))
    }

    async fn storage_list(
        &self,
        req: Request<pb::StorageListRequest>,
    ) -> Result<Response<pb::StorageListResponse>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let (records, next) = self
            .0
            .storage_list(&r.grant, super::storage::list_from_pb(&r))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StorageListResponse {
            records: records.iter().map(super::storage::record_pb).collect(),
            next_cursor: next.unwrap_or_default(),
        }))
    }

    async fn get_secrets(
        &self,
        req: Request<pb::GetSecretsRequest>,
    ) -> Result<Response<pb::GetSecretsResponse>, Status> {
        require(&req, WORKERS)?;
        let (values, version) = self
            .0
            .grant_secrets(&req.into_inner().grant)
            .await
            .map_err(status)?;
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
        let rows = self
            .0
            .list_schedules(&req.into_inner().grant)
            .await
            .map_err(status)?;
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
        let row = self
            .0
            .get_schedule(&r.grant, &r.schedule_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetScheduleResponse {
            schedule: row.as_ref().map(scheduler::info_pb),
        }))
    }

    async fn create_schedule(
        &self,
        req: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::ScheduleMutationResult>, Status> {
        require(&req, WORKERS)?;
        let mut r = req.into_inner();
        let grant = std::mem::take(&mut r.grant);
        let result = self
            .0
            .create_schedule(&grant, scheduler::create_from_pb(r))
            .await
            .map_err(status)?;
        Ok(Response::new(scheduler::mutation_pb(result.map(Some))))
    }

    async fn update_schedule(
        &self,
        req: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::ScheduleMutationResult>, Status> {
        require(&req, WORKERS)?;
        let mut r = req.into_inner();
        let (grant, id) = (
            std::mem::take(&mut r.grant),
            std::mem::take(&mut r.schedule_id),
        );
        let result = self
            .0
            .update_schedule(&grant, &id, scheduler::changes_from_pb(r))
            .await
            .map_err(status)?;
        Ok(Response::new(scheduler::mutation_pb(result.map(|()| None))))
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::ScheduleMutationResult>, Status> {
        require(&req, WORKERS)?;
        let r = req.into_inner();
        let result = self
            .0
            .delete_schedule(&r.grant, &r.schedule_id)
            .await
            .map_err(status)?;
        Ok(Response::new(scheduler::mutation_pb(result.map(|()| None))))
    }

    async fn get_endpoints(
        &self,
        req: Request<pb::GetEndpointsRequest>,
    ) -> Result<Response<pb::GetEndpointsResponse>, Status> {
        require(&req, WORKERS)?;
        let endpoints = self
            .0
            .schedule_endpoints(&req.into_inner().grant)
            .await
            .map_err(status)?;
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
        let resp = self
            .0
            .call_host_api(&r.grant, &r.api, &r.body_json)
            .await
            .map_err(status)?;
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
        let call = UiProxyCall {
            route: r.route,
            payload: r.payload,
            request_id: r.request_id,
            user_id: r.user_id,
            user_email: r.user_email,
        };
        let resp = self.0.call_ui_proxy(&r.grant, call).await.map_err(status)?;
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
        self.0.publish_logs(req.into_inner().events);
        Ok(Response::new(pb::Empty {}))
    }

    type WatchLogsStream = LogStream;

    async fn watch_logs(
        &self,
        req: Request<pb::WatchLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        require(&req, WATCHERS)?;
        let filter = req.into_inner();
        if filter.tenant_id.trim().is_empty() || filter.extension_id.trim().is_empty() {
            return Err(status(annex_proto::AnnexError::invalid(
                "tenant_id and extension_id are required",
            )));
        }
        let mut rx = self.0.logs.subscribe();
        let closed = self.0.closed();
        let stream = async_stream::stream! {
            tokio::pin!(closed);
            loop {
                let received = tokio::select! {
                    r = rx.recv() => r,
                    // Shutting down: end the stream so the server can finish.
                    () = &mut closed => break,
                };
                match received {
                    Ok(event) => {
                        let matches = event.tenant_id == filter.tenant_id
                            && event.extension_id == filter.extension_id
                            && (filter.install_id.is_empty() || event.install_id == filter.install_id)
                            && (filter.request_id.is_empty() || event.request_id == filter.request_id);
                        if matches {
                            yield Ok(event);
                        }
                    }
                    // A slow watcher loses the oldest events, not the stream.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
