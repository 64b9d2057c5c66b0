//! The routing snapshot the control plane pushes over `Dispatch.WatchRoutes`
//! (workers, placements and quota shares), the worker choice for one execution, and the
//! mTLS channels to workers.
//!
//! Worker choice: the workers the control plane placed the content hash on
//! come first (those with room before busy ones; rotated when the hash has
//! spilled onto several), then every other worker, rotated. A worker a call
//! could not reach (connection refused or reset, draining) is marked down
//! locally for [`DOWN_FOR`] and tried only after every other worker, so
//! traffic leaves a dead worker at once rather than after the control
//! plane's heartbeat TTL.
//!
//! The edge keeps the last snapshot when the stream breaks, so a short
//! control-plane outage does not stop traffic; a snapshot without any
//! worker (a restarted control plane before the first heartbeats) does not
//! replace known workers either. Install invalidations on the
//! same stream go to the [`InstallCache`]; after a gap every cached install
//! must be resolved again (invalidations may have been missed), the old
//! answers kept only as a fallback while the control plane cannot answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// How long a worker that failed a call at the transport level is passed
/// over (passive health check).
pub const DOWN_FOR: Duration = Duration::from_secs(5);

/// A worker that can take executions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTarget {
    pub id: String,
    pub address: String,
    /// Capacity and in-flight executions as of the snapshot (0: unknown).
    pub capacity: u32,
    pub in_flight: u32,
}

impl WorkerTarget {
    /// Whether the snapshot says this worker has a free slot.
    fn has_room(&self) -> bool {
        self.capacity == 0 || self.in_flight < self.capacity
    }
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
    /// Worker id → until when it is passed over.
    down: Mutex<HashMap<String, Instant>>,
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
            down: Mutex::default(),
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
                    capacity: w.capacity,
                    in_flight: w.in_flight,
                })
                .collect(),
            placements: s
                .placements
                .into_iter()
                .map(|p| (p.content_hash, p.worker_ids))
                .collect(),
        };
        if snapshot.workers.is_empty() && !self.snapshot.read().workers.is_empty() {
            // Static stability: a control plane that just restarted has seen
            // no heartbeats yet. An empty list never replaces known workers;
            // dead ones are passed over by the passive health check.
            tracing::warn!(
                version = snapshot.version,
                "routing snapshot without workers; keeping the last workers"
            );
            self.received.store(true, Ordering::SeqCst);
            return;
        }
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

    /// Workers to try for `content_hash`, best first: the placed workers
    /// (with room first, in the control plane's order, rotated when there
    /// are several), then every other worker rotated so load spreads, and
    /// workers marked down last.
    pub fn candidates(&self, content_hash: &str) -> Vec<WorkerTarget> {
        let snap = self.snapshot.read().clone();
        let n = snap.workers.len();
        if n == 0 {
            return Vec::new();
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let down = self.down_now();
        let mut placed: Vec<WorkerTarget> = snap
            .placements
            .get(content_hash)
            .into_iter()
            .flatten()
            .filter_map(|id| snap.workers.iter().find(|w| &w.id == id).cloned())
            .collect();
        if placed.len() > 1 {
            let k = turn % placed.len();
            placed.rotate_left(k);
        }
        // Stable: keeps the order within each group.
        placed.sort_by_key(|w| !w.has_room());
        let mut out = placed;
        let start = turn % n;
        for i in 0..n {
            let w = &snap.workers[(start + i) % n];
            if !out.iter().any(|o| o.id == w.id) {
                out.push(w.clone());
            }
        }
        out.sort_by_key(|w| down.contains(&w.id));
        out
    }

    /// Passes over `worker_id` for [`DOWN_FOR`]: a call to it failed before
    /// reaching a guest (connection refused or reset, draining).
    pub fn mark_down(&self, worker_id: &str) {
        let mut down = self.down.lock();
        if !down.contains_key(worker_id) {
            tracing::info!(worker = worker_id, "worker unreachable; passing it over");
        }
        down.insert(worker_id.to_owned(), Instant::now() + DOWN_FOR);
    }

    /// Worker ids currently marked down (expired marks are dropped).
    fn down_now(&self) -> Vec<String> {
        let now = Instant::now();
        let mut down = self.down.lock();
        down.retain(|_, until| *until > now);
        down.keys().cloned().collect()
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
            installs.expire_all();
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
    fn placed_workers_come_first_then_the_rest() {
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
            let mut ids: Vec<String> = r.candidates("h").into_iter().map(|w| w.id).collect();
            assert_eq!(ids.len(), 3);
            assert_eq!(ids[2], "b", "the unplaced worker comes last");
            // Two placed workers: the hash spilled, so they take turns.
            ids.truncate(2);
            ids.sort();
            assert_eq!(ids, ["a", "c"]);
        }
        // Unplaced hashes rotate across every worker.
        let firsts: std::collections::HashSet<String> = (0..3)
            .map(|_| r.candidates("other")[0].id.clone())
            .collect();
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn a_spilled_hash_rotates_among_its_placed_workers_with_room_first() {
        let r = routes();
        let load = |id: &str, in_flight: u32| pb::WorkerRoute {
            capacity: 4,
            in_flight,
            ..worker(id)
        };
        r.apply(pb::RoutingSnapshot {
            version: 1,
            workers: vec![load("a", 4), load("b", 1), load("c", 0), load("d", 0)],
            placements: vec![pb::Placement {
                content_hash: "h".into(),
                worker_ids: vec!["a".into(), "b".into(), "c".into()],
            }],
            quotas: vec![],
        });
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..6 {
            let ids: Vec<String> = r.candidates("h").into_iter().map(|w| w.id).collect();
            // The full worker comes after the placed ones with room, the
            // unplaced one last.
            assert_eq!(ids[2], "a", "{ids:?}");
            assert_eq!(ids[3], "d", "{ids:?}");
            firsts.insert(ids[0].clone());
        }
        assert_eq!(firsts.len(), 2, "b and c share the spilled hash");
    }

    #[test]
    fn a_snapshot_without_workers_keeps_the_known_ones() {
        let r = routes();
        r.apply(pb::RoutingSnapshot {
            version: 1,
            workers: vec![worker("a")],
            ..Default::default()
        });
        r.apply(pb::RoutingSnapshot {
            version: 2,
            ..Default::default()
        });
        assert_eq!(r.candidates("h")[0].id, "a");
        r.apply(pb::RoutingSnapshot {
            version: 3,
            workers: vec![worker("b")],
            ..Default::default()
        });
        let ids: Vec<String> = r.candidates("h").into_iter().map(|w| w.id).collect();
        assert_eq!(ids, ["b"]);
    }

    #[test]
    fn a_worker_marked_down_is_tried_last() {
        let r = routes();
        r.apply(pb::RoutingSnapshot {
            version: 1,
            workers: vec![worker("a"), worker("b")],
            placements: vec![pb::Placement {
                content_hash: "h".into(),
                worker_ids: vec!["a".into()],
            }],
            quotas: vec![],
        });
        assert_eq!(r.candidates("h")[0].id, "a");
        r.mark_down("a");
        for _ in 0..3 {
            let ids: Vec<String> = r.candidates("h").into_iter().map(|w| w.id).collect();
            assert_eq!(ids, ["b", "a"]);
        }
    }
}
