//! `annex.v1.Dispatch`: executions for internal clients, the routing
//! snapshot stream for edges, audit rows and API-key checks from edges.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use annex_ops::Role;
use annex_ops::tls::require;
use annex_proto::pb::{self, dispatch_server::Dispatch};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::Closing;
use crate::apikeys::{ApiKeys, Audit};
use crate::dispatch::{DispatchRequest, Dispatcher};
use crate::fleet::Fleet;
use crate::installs::Installs;
use crate::quota::{Quotas, WATCHER_REFRESH};

/// How often a watching edge's snapshot is rebuilt (sent only when its
/// version changed): a quota change reaches every edge within this.
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) struct DispatchService {
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) quotas: Arc<Quotas>,
    /// Install invalidations for the routes stream.
    pub(crate) installs: Arc<Installs>,
    pub(crate) api_keys: Arc<ApiKeys>,
    pub(crate) audit: Arc<Audit>,
    pub(crate) closing: Closing,
}

/// Removes a routes stream's quota participant row when the stream is dropped.
struct WatcherGuard {
    quotas: Arc<Quotas>,
    key: String,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        let quotas = self.quotas.clone();
        let key = std::mem::take(&mut self.key);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { quotas.watcher_gone(&key).await });
        }
    }
}

type RouteStream = Pin<Box<dyn Stream<Item = Result<pb::RoutingUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Dispatch for DispatchService {
    async fn execute(
        &self,
        req: Request<pb::DispatchExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        require(&req, &[Role::Operator, Role::Edge, Role::ControlPlane])?;
        let r = req.into_inner();
        let resp = self
            .dispatcher
            .dispatch(DispatchRequest {
                tenant: r.tenant_id,
                extension: r.extension,
                http: r.http.unwrap_or_default(),
                user: r.user,
                request_id: r.request_id,
                idempotency_key: r.idempotency_key,
                limits: r.limits,
                trigger: "internal".into(),
                schedule_id: String::new(),
            })
            .await?;
        Ok(Response::new(resp))
    }

    type WatchRoutesStream = RouteStream;

    async fn watch_routes(
        &self,
        req: Request<pb::WatchRoutesRequest>,
    ) -> Result<Response<RouteStream>, Status> {
        let peer = require(&req, &[Role::Edge, Role::Operator, Role::ControlPlane])?;
        let edge = req.into_inner().edge_id;
        tracing::info!(edge = %edge, "edge watching routes");
        let (fleet, quotas) = (self.fleet.clone(), self.quotas.clone());
        let mut invalidations = self.installs.invalidations();
        let closed = self.closing.closed();
        // Each edge stream is one quota participant (edge ids need not be
        // unique); other roles watch without enforcing, so they do not count.
        let watcher = (peer.role == Role::Edge).then(|| WatcherGuard {
            quotas: quotas.clone(),
            key: format!("edge/{edge}/{}", uuid::Uuid::new_v4().simple()),
        });
        let stream = async_stream::stream! {
            tokio::pin!(closed);
            let watcher = watcher;
            let mut last_version = None;
            let mut last_seen: Option<std::time::Instant> = None;
            let mut tick = tokio::time::interval(SNAPSHOT_INTERVAL);
            loop {
                tokio::select! {
                    // Shutting down: end the stream; the edge keeps its
                    // snapshot and reconnects to a replica.
                    () = &mut closed => break,
                    _ = tick.tick() => {
                        if let Some(watcher) = &watcher
                            && last_seen.is_none_or(|at| at.elapsed() >= WATCHER_REFRESH)
                        {
                            match quotas.watcher_seen(&watcher.key).await {
                                Ok(()) => last_seen = Some(std::time::Instant::now()),
                                Err(e) => tracing::warn!(error = %e, "recording a route watcher"),
                            }
                        }
                        match fleet.routing_snapshot(&quotas).await {
                            Ok(snapshot) if last_version != Some(snapshot.version) => {
                                last_version = Some(snapshot.version);
                                yield Ok(pb::RoutingUpdate { update: Some(pb::routing_update::Update::Snapshot(snapshot)) });
                            }
                            Ok(_) => {}
                            // Keep the stream; the edge keeps its last snapshot.
                            Err(e) => tracing::warn!(error = %e, "building a routing snapshot"),
                        }
                    }
                    inv = invalidations.recv() => match inv {
                        Ok(inv) => yield Ok(pb::RoutingUpdate { update: Some(pb::routing_update::Update::Invalidation(inv)) }),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn record_executions(
        &self,
        req: Request<pb::ExecutionRecords>,
    ) -> Result<Response<pb::Empty>, Status> {
        require(&req, &[Role::Edge, Role::ControlPlane])?;
        self.audit
            .record_executions(req.into_inner().records)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn authenticate_api_key(
        &self,
        req: Request<pb::AuthenticateApiKeyRequest>,
    ) -> Result<Response<pb::ApiKeyPrincipal>, Status> {
        require(&req, &[Role::Edge])?;
        let key = self.api_keys.authenticate(&req.into_inner().secret).await?;
        Ok(Response::new(pb::ApiKeyPrincipal {
            key_id: key.id.to_string(),
            tenant_id: key.tenant_id,
            permissions: key.permissions,
        }))
    }
}
