//! The routing snapshot the control plane pushes over `Dispatch.WatchRoutes`
//! (workers, placements and quota shares), and the watch that follows it.
//! The worker order for one execution, the passive health check and the
//! channels to workers are `annex_dispatch`'s, shared with the control
//! plane's own dispatch.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annex_dispatch::{ExecuteError, Executed, RoutingTable, WorkerTarget, WorkerTls, Workers};
use annex_ops::backoff::Backoff;
use annex_ops::quota::QuotaGate;
use annex_proto::pb;
use annex_proto::pb::dispatch_client::DispatchClient;
use parking_lot::RwLock;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::installs::InstallCache;

/// Largest Execute message either way: a 10 MiB body plus headers, with room.
pub(crate) const MAX_EXECUTE_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
struct Snapshot {
    version: u64,
    table: RoutingTable,
}

pub(crate) struct Routes {
    snapshot: RwLock<Arc<Snapshot>>,
    /// This edge's shares of the fleet-wide quotas, from the same snapshot.
    pub quotas: QuotaGate,
    received: AtomicBool,
    /// Channels, health marks and rotation for sending to workers.
    pub workers: Workers,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("version", &self.snapshot.read().version)
            .finish_non_exhaustive()
    }
}

impl Routes {
    /// Workers registered in `in_process` are reached through their
    /// services (same process), the rest over mTLS with `tls`.
    pub(crate) fn new(tls: WorkerTls, in_process: annex_ops::in_process::Endpoints) -> Routes {
        Routes {
            snapshot: RwLock::default(),
            quotas: QuotaGate::new(),
            received: AtomicBool::new(false),
            workers: Workers::new(tls, MAX_EXECUTE_MESSAGE_BYTES)
                .with_in_process(in_process, annex_ops::Role::Edge),
        }
    }

    /// Whether a snapshot has arrived since start.
    pub(crate) fn has_snapshot(&self) -> bool {
        self.received.load(Ordering::SeqCst)
    }

    pub(crate) fn apply(&self, mut s: pb::RoutingSnapshot) {
        self.quotas
            .apply(crate::quota::shares(std::mem::take(&mut s.quotas)));
        let snapshot = Snapshot {
            version: s.version,
            table: RoutingTable::from_snapshot(s.workers, s.placements),
        };
        if snapshot.table.workers.is_empty() && !self.snapshot.read().table.workers.is_empty() {
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
            workers = snapshot.table.workers.len(),
            "routing snapshot"
        );
        self.workers.retain(&snapshot.table);
        *self.snapshot.write() = Arc::new(snapshot);
        self.received.store(true, Ordering::SeqCst);
    }

    /// Workers to try for `content_hash`, best first: the placed workers
    /// (with room first, in the control plane's order, rotated when there
    /// are several), then every other worker rotated so load spreads, and
    /// workers marked down last.
    pub(crate) fn candidates(&self, content_hash: &str) -> Vec<WorkerTarget> {
        let snap = self.snapshot.read().clone();
        self.workers.candidates(&snap.table, content_hash)
    }

    /// Sends `req` to the best worker for its content hash, retrying once
    /// on the next only when the first never started a guest.
    pub(crate) async fn execute(&self, req: pb::ExecuteRequest) -> Result<Executed, ExecuteError> {
        let hash = req
            .context
            .as_ref()
            .map(|c| c.content_hash.as_str())
            .unwrap_or_default();
        let candidates = self.candidates(hash);
        self.workers.execute(&candidates, req).await
    }
}

/// The active rollouts of the last snapshot, by install id: (tenant,
/// rollout id, revision). A rollout's change made through another replica
/// reaches this edge as a changed mark, not as an invalidation.
#[derive(Debug, Default)]
struct RolloutMarks(HashMap<String, (String, String, i64)>);

impl RolloutMarks {
    /// Takes the snapshot's marks; returns (tenant, install) of every
    /// install whose rollout started, changed or ended since the last one.
    fn changes(&mut self, now: Vec<pb::RolloutMark>) -> Vec<(String, String)> {
        let now: HashMap<String, (String, String, i64)> = now
            .into_iter()
            .map(|m| (m.install_id, (m.tenant_id, m.rollout_id, m.revision)))
            .collect();
        let mut changed: Vec<(String, String)> = now
            .iter()
            .filter(|(install, mark)| self.0.get(*install) != Some(*mark))
            .map(|(install, (tenant, _, _))| (tenant.clone(), install.clone()))
            .collect();
        changed.extend(
            self.0
                .iter()
                .filter(|(install, _)| !now.contains_key(*install))
                .map(|(install, (tenant, _, _))| (tenant.clone(), install.clone())),
        );
        self.0 = now;
        changed
    }
}

/// Delays between attempts to reopen the routing stream.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// Follows `Dispatch.WatchRoutes` until `stop` flips, reconnecting with
/// backoff (started over once a stream has delivered an update).
pub(crate) async fn watch(
    client: DispatchClient<Channel>,
    edge_id: String,
    routes: Arc<Routes>,
    installs: InstallCache,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut delays = RECONNECT.delays();
    let mut marks = RolloutMarks::default();
    loop {
        let attempt = async {
            let mut delivered = false;
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
                let update = update?;
                if !delivered {
                    delivered = true;
                    delays = RECONNECT.delays();
                }
                match update.update {
                    Some(pb::routing_update::Update::Snapshot(mut s)) => {
                        for (tenant, install) in marks.changes(std::mem::take(&mut s.rollouts)) {
                            tracing::debug!(tenant = %tenant, install = %install, "rollout changed");
                            installs.invalidate(&tenant, &install, "");
                        }
                        routes.apply(s);
                    }
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
            () = tokio::time::sleep(delays.next_delay()) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_marks_name_the_installs_whose_rollout_moved() {
        let mark = |install: &str, revision| pb::RolloutMark {
            tenant_id: "t".into(),
            install_id: install.into(),
            rollout_id: format!("r-{install}"),
            revision,
        };
        let mut marks = RolloutMarks::default();
        let mut first = marks.changes(vec![mark("a", 1), mark("b", 1)]);
        first.sort();
        assert_eq!(first, [("t".into(), "a".into()), ("t".into(), "b".into())]);
        assert!(marks.changes(vec![mark("a", 1), mark("b", 1)]).is_empty());
        // a stepped, b ended.
        let mut next = marks.changes(vec![mark("a", 2)]);
        next.sort();
        assert_eq!(next, [("t".into(), "a".into()), ("t".into(), "b".into())]);
    }

    fn routes() -> Routes {
        let ca = annex_ops::devcerts::DevCa::generate().expect("ca");
        let material = ca.issue(annex_ops::Role::Edge, "edge").expect("cert");
        Routes::new(
            WorkerTls {
                material: annex_ops::tls::Tls::new(material).expect("tls"),
                server_name: None,
            },
            annex_ops::in_process::Endpoints::default(),
        )
    }

    fn worker(id: &str) -> pb::WorkerRoute {
        pb::WorkerRoute {
            worker_id: id.into(),
            address: format!("{id}:1"),
            ..Default::default()
        }
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
            rollouts: vec![],
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
        // A hash the snapshot has not placed yet goes first where the
        // control plane will place it, every time; the rest follow.
        let firsts: std::collections::HashSet<String> = (0..3)
            .map(|_| r.candidates("other")[0].id.clone())
            .collect();
        let workers = ["a", "b", "c"];
        let preferred = annex_dispatch::rendezvous("other", &workers, |w| w)[0];
        assert_eq!(firsts, [preferred.to_string()].into());
        assert_eq!(r.candidates("other").len(), 3);
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
            rollouts: vec![],
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
            rollouts: vec![],
        });
        assert_eq!(r.candidates("h")[0].id, "a");
        r.workers.mark_down("a");
        for _ in 0..3 {
            let ids: Vec<String> = r.candidates("h").into_iter().map(|w| w.id).collect();
            assert_eq!(ids, ["b", "a"]);
        }
    }

    #[tokio::test]
    async fn a_refused_connection_never_started_and_marks_the_worker_down() {
        annex_ops::tls::install_crypto_provider();
        let routes = routes();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let target = WorkerTarget {
            id: "gone".into(),
            address: addr.to_string(),
            capacity: 0,
            in_flight: 0,
        };
        let status = routes
            .workers
            .client(&target)
            .expect("client")
            .execute(pb::ExecuteRequest::default())
            .await
            .expect_err("nothing listens");
        assert!(annex_proto::error::never_started(&status), "{status:?}");

        routes.apply(pb::RoutingSnapshot {
            version: 1,
            workers: vec![pb::WorkerRoute {
                worker_id: "gone".into(),
                address: addr.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let err = routes
            .execute(pb::ExecuteRequest {
                limits: Some(pb::Limits {
                    timeout_ms: 5_000,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, ExecuteError::Refused(_)), "{err:?}");
        assert_eq!(routes.candidates("")[0].id, "gone", "still the only worker");
    }
}
