//! `annex.v1.Fleet`: worker registration and the heartbeat stream (worker
//! role only). Usage in heartbeats goes to the quota windows. Commands
//! (prewarm, trust changes) flow back on the stream: those for every worker
//! and those addressed to this one (a hash newly placed on it). The stream
//! ends when the control plane shuts down; the worker reconnects to a
//! replica.

use std::pin::Pin;
use std::sync::Arc;

use annex_ops::Role;
use annex_ops::tls::require;
use annex_proto::pb::{self, fleet_server::Fleet};
use chrono::Utc;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::Closing;
use crate::fleet::HEARTBEAT_INTERVAL;
use crate::quota::Quotas;
use crate::store::WorkerRow;

pub(crate) struct FleetService {
    pub(crate) fleet: Arc<crate::fleet::Fleet>,
    /// Usage in heartbeats goes to the quota windows.
    pub(crate) quotas: Arc<Quotas>,
    pub(crate) closing: Closing,
}

type CommandStream = Pin<Box<dyn Stream<Item = Result<pb::FleetCommand, Status>> + Send>>;

fn row(
    worker_id: String,
    address: String,
    capacity: u32,
    hb: Option<&pb::WorkerHeartbeat>,
) -> WorkerRow {
    WorkerRow {
        id: worker_id,
        address,
        capacity,
        in_flight: hb.map(|h| h.in_flight).unwrap_or_default(),
        draining: hb.is_some_and(|h| h.draining),
        cached_hashes: hb.map(|h| h.cached_hashes.clone()).unwrap_or_default(),
        last_seen: Utc::now(),
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn register(
        &self,
        req: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        require(&req, &[Role::Worker])?;
        let r = req.into_inner();
        tracing::info!(worker = %r.worker_id, address = %r.address, capacity = r.capacity, "worker registered");
        self.fleet
            .worker_seen(row(r.worker_id, r.address, r.capacity, None))
            .await?;
        Ok(Response::new(pb::RegisterWorkerResponse {
            heartbeat_interval_ms: u32::try_from(HEARTBEAT_INTERVAL.as_millis()).unwrap_or(500),
        }))
    }

    type HeartbeatStream = CommandStream;

    async fn heartbeat(
        &self,
        req: Request<Streaming<pb::WorkerHeartbeat>>,
    ) -> Result<Response<CommandStream>, Status> {
        require(&req, &[Role::Worker])?;
        let mut inbound = req.into_inner();
        let (fleet, quotas) = (self.fleet.clone(), self.quotas.clone());
        let mut commands = fleet.commands();
        let mut addressed = fleet.addressed_commands();
        let closed = self.closing.closed();
        let stream = async_stream::stream! {
            tokio::pin!(closed);
            // The worker's address comes from its registration row, read once.
            let mut address: Option<String> = None;
            let mut worker_id: Option<String> = None;
            loop {
                tokio::select! {
                    () = &mut closed => break,
                    hb = inbound.message() => match hb {
                        Ok(Some(hb)) => {
                            if worker_id.is_none() {
                                worker_id = Some(hb.worker_id.clone());
                                // Its hashes are prewarmed again on this stream.
                                fleet.forget_placements_of(&hb.worker_id);
                            }
                            if address.is_none() {
                                address = fleet.registered_address(&hb.worker_id).await;
                            }
                            let Some(address) = address.clone() else {
                                yield Err(Status::failed_precondition("register before heartbeating"));
                                break;
                            };
                            if let Err(e) = fleet.worker_seen(row(hb.worker_id.clone(), address, hb.capacity, Some(&hb))).await {
                                yield Err(e.into());
                                break;
                            }
                            // Already drained on the worker: a failed write loses
                            // these figures rather than counting them twice.
                            if !hb.usage.is_empty()
                                && let Err(e) = quotas.record_usage(&hb.worker_id, hb.usage).await
                            {
                                tracing::warn!(worker = %hb.worker_id, error = %e, "recording usage");
                            }
                        }
                        Ok(None) | Err(_) => break,
                    },
                    cmd = commands.recv() => match cmd {
                        Ok(cmd) => yield Ok(cmd),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    // Addressed commands wait (buffered) until the first
                    // heartbeat names this worker.
                    cmd = addressed.recv(), if worker_id.is_some() => match cmd {
                        Ok((to, cmd)) if worker_id.as_deref() == Some(to.as_str()) => yield Ok(cmd),
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
