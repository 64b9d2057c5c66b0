//! The routing snapshot the control plane pushes over `Dispatch.WatchRoutes`
//! (workers, placements and quota shares), the worker choice for one execution, and the
//! mTLS channels to workers.
//!
//! The edge keeps the last snapshot when the stream breaks, so a short
//! control-plane outage does not stop traffic. Install invalidations on the
//! same stream go to the [`InstallCache`]; after a gap the whole cache is
//! dropped because invalidations may have been missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use annex_ops::quota::QuotaGate;
use annex_ops::tls::TlsMaterial;
use annex_proto::pb;
use annex_proto::pb::dispatch_client::DispatchClient;
use annex_proto::pb::worker_client::WorkerClient;
use parking_lot::{Mutex, RwLock};
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, Endpoint};

use crate::installs::InstallCache;

/// Largest Execute message either way: a 10 MiB body plus headers, with room.
pub const MAX_EXECUTE_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A worker that can take executions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTarget {
    pub id: String,
    pub address: String,
}

#[derive(Debug, Default)]
struct Snapshot {
    version: u64,
    workers: Vec<WorkerTarget>,
    placements: HashMap<String, Vec<String>>,
}

/// How the edge reaches workers.
#[derive(Clone)]
pub struct WorkerTls {
    pub material: TlsMaterial,
    /// Name checked against worker certificates; `None`: the host of the address.
    pub server_name: Option<String>,
}

pub struct Routes {
    snapshot: RwLock<Arc<Snapshot>>,
    /// This edge's shares of the fleet-wide quotas, from the same snapshot.
    pub quotas: QuotaGate,
    received: AtomicBool,
    next: AtomicUsize,
    channels: Mutex<HashMap<String, Channel>>,
    tls: WorkerTls,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("version", &self.snapshot.read().version)
            .finish_non_exhaustive()
    }
}

impl Routes {
    pub fn new(tls: WorkerTls) -> Routes {
        Routes {
            snapshot: RwLock::default(),
            quotas: QuotaGate::new(),
            received: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            channels: Mutex::default(),
            tls,
        }
    }

    /// Whether a snapshot has arrived since start.
    pub fn has_snapshot(&self) -> bool {
        self.received.load(Ordering::SeqCst)
    }

    pub fn apply(&self, mut s: pb::RoutingSnapshot) {
        self.quotas
            .apply(crate::quota::shares(std::mem::take(&mut s.quotas)));
        let snapshot = Snapshot {
            version: s.version,
            workers: s
                .workers
                .into_iter()
                .filter(|w| !w.address.is_empty())
                .map(|w| WorkerTarget {
                    id: w.worker_id,
                    address: w.address,
                })
                .collect(),
            placements: s
                .placements
                .into_iter()
                .map(|p| (p.content_hash, p.worker_ids))
                .collect(),
        };
        tracing::debug!(
            version = snapshot.version,
            workers = snapshot.workers.len(),
            "routing snapshot"
        );
        let live: Vec<String> = snapshot.workers.iter().map(|w| w.address.clone()).collect();
        self.channels.lock().retain(|addr, _| live.contains(addr));
        *self.snapshot.write() = Arc::new(snapshot);
        self.received.store(true, Ordering::SeqCst);
    }

    /// Workers to try for `content_hash`, best first: the placed workers in
    /// the control plane's preference order, then every other worker, the
    /// unplaced ones rotated so load spreads.
    pub fn candidates(&self, content_hash: &str) -> Vec<WorkerTarget> {
        let snap = self.snapshot.read().clone();
        let n = snap.workers.len();
        if n == 0 {
            return Vec::new();
        }
        let mut out: Vec<WorkerTarget> = snap
            .placements
            .get(content_hash)
            .into_iter()
            .flatten()
            .filter_map(|id| snap.workers.iter().find(|w| &w.id == id).cloned())
            .collect();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            let w = &snap.workers[(start + i) % n];
            if !out.iter().any(|o| o.id == w.id) {
                out.push(w.clone());
            }
        }
        out
    }

    /// A `Worker` client for `target` over mTLS (channels are reused).
    pub fn client(
        &self,
        target: &WorkerTarget,
    ) -> Result<WorkerClient<Channel>, tonic::transport::Error> {
        let mut channels = self.channels.lock();
        let channel = match channels.get(&target.address) {
            Some(c) => c.clone(),
            None => {
                let authority = authority(&target.address);
                let host = authority
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_matches(['[', ']']))
                    .unwrap_or(authority);
                let name = self.tls.server_name.as_deref().unwrap_or(host);
                let c = Endpoint::from_shared(format!("https://{authority}"))?
                    .tls_config(self.tls.material.client_config(name))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(20))
                    .connect_lazy();
                channels.insert(target.address.clone(), c.clone());
                c
            }
        };
        Ok(WorkerClient::new(channel)
            .max_decoding_message_size(MAX_EXECUTE_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_EXECUTE_MESSAGE_BYTES))
    }
}

/// `host:port` of a worker address. The protocol says `host:port`; a
/// scheme some workers advertise is tolerated and ignored (always mTLS).
fn authority(address: &str) -> &str {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    rest.trim_end_matches('/')
}

/// Follows `Dispatch.WatchRoutes` until `stop` flips, reconnecting with
/// backoff.
pub async fn watch(
    client: DispatchClient<Channel>,
    edge_id: String,
    routes: Arc<Routes>,
    installs: InstallCache,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut stream = client
                .clone()
                .watch_routes(pb::WatchRoutesRequest {
                    edge_id: edge_id.clone(),
                })
                .await?
                .into_inner();
            // Invalidations may have been missed while disconnected.
            installs.clear();
            while let Some(update) = stream.next().await {
                match update?.update {
                    Some(pb::routing_update::Update::Snapshot(s)) => routes.apply(s),
                    Some(pb::routing_update::Update::Invalidation(i)) => {
                        tracing::debug!(tenant = %i.tenant_id, install = %i.install_id, "install invalidated");
                        installs.invalidate(&i.tenant_id, &i.install_id, &i.registry_id);
                    }
                    None => {}
                }
            }
            Ok::<(), tonic::Status>(())
        };
        tokio::select! {
            result = attempt => match result {
                Ok(()) => tracing::info!("routing stream ended; reconnecting"),
                Err(s) => tracing::warn!(code = ?s.code(), message = s.message(), "routing stream failed; reconnecting"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        let ca = annex_ops::devcerts::DevCa::generate().expect("ca");
        let material = ca.issue(annex_ops::Role::Edge, "edge").expect("cert");
        Routes::new(WorkerTls {
            material,
            server_name: None,
        })
    }

    fn worker(id: &str) -> pb::WorkerRoute {
        pb::WorkerRoute {
            worker_id: id.into(),
            address: format!("{id}:1"),
            ..Default::default()
        }
    }

    #[test]
    fn worker_addresses_may_carry_a_scheme() {
        assert_eq!(authority("127.0.0.1:7444"), "127.0.0.1:7444");
        assert_eq!(authority("https://w1:7444/"), "w1:7444");
        assert_eq!(authority("http://[::1]:7444"), "[::1]:7444");
    }

    #[test]
    fn placed_workers_come_first_in_order_then_the_rest() {
        let r = routes();
        assert!(r.candidates("h").is_empty());
        r.apply(pb::RoutingSnapshot {
            version: 1,
            workers: vec![worker("a"), worker("b"), worker("c")],
            placements: vec![pb::Placement {
                content_hash: "h".into(),
                worker_ids: vec!["c".into(), "gone".into(), "a".into()],
            }],
            quotas: vec![],
        });
        for _ in 0..3 {
            let ids: Vec<String> = r.candidates("h").into_iter().map(|w| w.id).collect();
            assert_eq!(&ids[..2], &["c".to_owned(), "a".to_owned()]);
            assert_eq!(ids.len(), 3);
        }
        // Unplaced hashes rotate across every worker.
        let firsts: std::collections::HashSet<String> = (0..3)
            .map(|_| r.candidates("other")[0].id.clone())
            .collect();
        assert_eq!(firsts.len(), 3);
    }
}
