//! Worker membership and the routing snapshot edges follow.
//!
//! Workers register and stream heartbeats to any replica; each heartbeat is a
//! row in `workers`, so every replica builds the same snapshot from Postgres.
//! A worker that stops heartbeating for [`WORKER_TTL`] leaves the snapshot; a
//! draining worker leaves it at once.
//!
//! Placement: every content hash an active install runs is placed on the
//! live workers in rendezvous order ([`rank_workers`]), one worker while it
//! has room, and the next ranked ones added while the placed ones are busy
//! ([`placed_workers`]: in-flight at or above 80 % of capacity). Repeated
//! calls for one bundle therefore land on the worker that already compiled
//! it. A worker a hash is newly placed on gets a `Prewarm` command on its
//! heartbeat stream from the replica it is connected to.
//!
//! [`Fleet`] owns this replica's memory of what it placed and the command
//! broadcasts to the workers connected to it. It does not call workers (that
//! is [`Dispatcher`](crate::dispatch::Dispatcher)) and holds no quota state.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use annex_proto::AnnexError;
use annex_proto::pb::{self, RoutingSnapshot, WorkerRoute};
use chrono::Utc;
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use crate::quota::Quotas;
use crate::store::{Store, WorkerRow};

/// How often workers are asked to heartbeat.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// A worker unseen for this long is out of the snapshot.
const WORKER_TTL: Duration = Duration::from_secs(3);
/// A placed worker with this share of its capacity in use (numerator,
/// denominator) is busy: the hash spills onto the next ranked worker.
const SPILL_AT: (u64, u64) = (4, 5);
/// Commands wait for slow heartbeat streams in broadcasts of this many.
const COMMAND_BUFFER: usize = 1024;

/// A command for one worker: (worker id, command).
type Addressed = (String, pb::FleetCommand);

/// Worker membership, placement and the commands sent to workers.
pub(crate) struct Fleet {
    store: Arc<dyn Store>,
    /// (content hash, worker id) pairs of the last placement this replica
    /// computed, to prewarm only what is newly placed.
    placed: Mutex<HashSet<(String, String)>>,
    /// Commands for every connected worker.
    commands: tokio::sync::broadcast::Sender<pb::FleetCommand>,
    /// Commands for one worker, e.g. prewarm a hash newly placed on it.
    addressed: tokio::sync::broadcast::Sender<Addressed>,
}

impl Fleet {
    pub(crate) fn new(store: Arc<dyn Store>) -> Fleet {
        let (commands, _) = tokio::sync::broadcast::channel(COMMAND_BUFFER);
        let (addressed, _) = tokio::sync::broadcast::channel(COMMAND_BUFFER);
        Fleet {
            store,
            placed: Mutex::default(),
            commands,
            addressed,
        }
    }

    /// Commands for every worker connected to this replica, from now on.
    pub(crate) fn commands(&self) -> tokio::sync::broadcast::Receiver<pb::FleetCommand> {
        self.commands.subscribe()
    }

    /// Commands addressed to single workers, from now on (each stream keeps
    /// those for its own worker).
    pub(crate) fn addressed_commands(&self) -> tokio::sync::broadcast::Receiver<Addressed> {
        self.addressed.subscribe()
    }

    pub(crate) async fn worker_seen(&self, row: WorkerRow) -> Result<(), AnnexError> {
        if row.id.trim().is_empty() || row.address.trim().is_empty() {
            return Err(AnnexError::invalid("worker_id and address are required"));
        }
        self.store.upsert_worker(row).await?;
        Ok(())
    }

    /// The address `worker_id` registered with, if it did.
    pub(crate) async fn registered_address(&self, worker_id: &str) -> Option<String> {
        self.store
            .list_workers(chrono::DateTime::<Utc>::UNIX_EPOCH)
            .await
            .ok()
            .and_then(|ws| ws.into_iter().find(|w| w.id == worker_id))
            .map(|w| w.address)
    }

    /// Workers that may take traffic now: seen within the TTL and not draining.
    pub(crate) async fn live_workers(&self) -> Result<Vec<WorkerRow>, AnnexError> {
        let since = Utc::now() - chrono::Duration::from_std(WORKER_TTL).unwrap_or_default();
        let mut workers = self.store.list_workers(since).await?;
        workers.retain(|w| !w.draining);
        Ok(workers)
    }

    /// The routing snapshot, with `quotas`' shares; `version` changes
    /// whenever its content does.
    pub(crate) async fn routing_snapshot(
        &self,
        quotas: &Quotas,
    ) -> Result<RoutingSnapshot, AnnexError> {
        let workers = self.live_workers().await?;
        let quotas = quotas.shares().await?;
        let routes: Vec<WorkerRoute> = workers
            .iter()
            .map(|w| WorkerRoute {
                worker_id: w.id.clone(),
                address: w.address.clone(),
                capacity: w.capacity,
                in_flight: w.in_flight,
            })
            .collect();
        let placements = self.placements(&workers).await?;
        let mut hasher = Sha256::new();
        for w in &workers {
            hasher.update(w.id.as_bytes());
            hasher.update([0]);
            hasher.update(w.address.as_bytes());
            hasher.update([0]);
        }
        hasher.update([1]);
        for p in &placements {
            hasher.update(p.content_hash.as_bytes());
            for id in &p.worker_ids {
                hasher.update([0]);
                hasher.update(id.as_bytes());
            }
            hasher.update([1]);
        }
        crate::quota::hash_quotas(&mut hasher, &quotas);
        let rollouts: Vec<pb::RolloutMark> = self
            .store
            .active_rollouts()
            .await?
            .into_iter()
            .map(|r| pb::RolloutMark {
                tenant_id: r.tenant_id,
                install_id: r.install_id.to_string(),
                rollout_id: r.id.to_string(),
                revision: r.revision,
            })
            .collect();
        hasher.update([2]);
        for m in &rollouts {
            hasher.update(m.install_id.as_bytes());
            hasher.update([0]);
            hasher.update(m.rollout_id.as_bytes());
            hasher.update(m.revision.to_be_bytes());
        }
        let digest = hasher.finalize();
        let mut version = [0u8; 8];
        version.copy_from_slice(&digest[..8]);
        Ok(RoutingSnapshot {
            version: u64::from_be_bytes(version),
            workers: routes,
            placements,
            quotas,
            rollouts,
        })
    }

    /// Places every active bundle on the live workers now (see
    /// [`Self::placements`]).
    pub(crate) async fn place(&self) -> Result<(), AnnexError> {
        let workers = self.live_workers().await?;
        self.placements(&workers).await.map(|_| ())
    }

    /// Where each content hash of an active install runs (see the module
    /// docs), and a `Prewarm` for every worker a hash is newly placed on.
    async fn placements(&self, workers: &[WorkerRow]) -> Result<Vec<pb::Placement>, AnnexError> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let hashes = self.store.active_content_hashes().await?;
        let placements: Vec<pb::Placement> = hashes
            .into_iter()
            .map(|hash| pb::Placement {
                worker_ids: placed_workers(&hash, workers)
                    .into_iter()
                    .map(|w| w.id.clone())
                    .collect(),
                content_hash: hash,
            })
            .collect();
        let now: HashSet<(String, String)> = placements
            .iter()
            .flat_map(|p| {
                p.worker_ids
                    .iter()
                    .map(|w| (p.content_hash.clone(), w.clone()))
            })
            .collect();
        let fresh: Vec<(String, String)> = {
            let mut placed = self.placed.lock();
            let fresh = now.difference(&placed).cloned().collect();
            *placed = now;
            fresh
        };
        for (hash, worker) in fresh {
            tracing::debug!(%hash, %worker, "placed; prewarming");
            // Only workers connected to this replica receive it.
            let _ = self.addressed.send((worker, prewarm(&hash)));
        }
        Ok(placements)
    }

    /// Forgets where `worker_id` was placed, so the next placement round
    /// prewarms all its hashes again: called when a worker's heartbeat
    /// stream opens on this replica (a restarted worker has an empty memory
    /// cache, and commands sent before its stream opened were lost).
    pub(crate) fn forget_placements_of(&self, worker_id: &str) {
        self.placed.lock().retain(|(_, w)| w != worker_id);
    }
}

/// How often each replica recomputes placements on its own (edges watching
/// it trigger the same computation with every snapshot).
const PLACEMENT_INTERVAL: Duration = Duration::from_millis(500);

/// Recomputes placements every [`PLACEMENT_INTERVAL`] until `shutdown`, so
/// the workers connected to this replica get `Prewarm` for newly placed
/// hashes even when no edge follows this replica.
pub(crate) async fn placement_loop(
    fleet: Arc<Fleet>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(PLACEMENT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = fleet.place().await {
            tracing::debug!(error = %e, "computing placements");
        }
    }
}

/// The workers `content_hash` is placed on, preferred first: the rendezvous
/// order cut after the first worker that is not busy (all of them when every
/// worker is busy).
pub(crate) fn placed_workers<'a>(
    content_hash: &str,
    workers: &'a [WorkerRow],
) -> Vec<&'a WorkerRow> {
    let mut placed = Vec::new();
    for w in rank_workers(content_hash, workers) {
        placed.push(w);
        if !busy(w) {
            break;
        }
    }
    placed
}

/// Whether `w` has at least [`SPILL_AT`] of its capacity in use.
fn busy(w: &WorkerRow) -> bool {
    u64::from(w.in_flight) * SPILL_AT.1 >= u64::from(w.capacity) * SPILL_AT.0
}

/// Workers for `content_hash`, best first: rendezvous (highest random weight)
/// hashing, so each hash has a stable preferred worker and losing a worker
/// moves only its hashes. The edge ranks an unplaced hash the same way
/// ([`annex_dispatch::rendezvous`]).
pub(crate) fn rank_workers<'a>(content_hash: &str, workers: &'a [WorkerRow]) -> Vec<&'a WorkerRow> {
    annex_dispatch::rendezvous(content_hash, workers, |w| &w.id)
}

/// A prewarm fleet command for `content_hash`.
fn prewarm(content_hash: &str) -> pb::FleetCommand {
    pb::FleetCommand {
        command: Some(pb::fleet_command::Command::PrewarmContentHash(
            content_hash.to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str) -> WorkerRow {
        WorkerRow {
            id: id.into(),
            address: format!("{id}:1"),
            capacity: 1,
            in_flight: 0,
            draining: false,
            cached_hashes: Vec::new(),
            last_seen: Utc::now(),
        }
    }

    fn loaded(id: &str, in_flight: u32) -> WorkerRow {
        WorkerRow {
            capacity: 10,
            in_flight,
            ..worker(id)
        }
    }

    #[test]
    fn a_hash_is_placed_on_one_worker_and_spills_while_the_placed_ones_are_busy() {
        let idle: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|id| loaded(id, 0))
            .collect();
        let order: Vec<String> = rank_workers("h", &idle)
            .iter()
            .map(|w| w.id.clone())
            .collect();
        let ids = |ws: Vec<&WorkerRow>| ws.into_iter().map(|w| w.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(placed_workers("h", &idle)), order[..1]);
        // The preferred worker at 80 %: the next ranked one joins.
        let busy_first: Vec<_> = idle
            .iter()
            .map(|w| loaded(&w.id, if w.id == order[0] { 8 } else { 0 }))
            .collect();
        assert_eq!(ids(placed_workers("h", &busy_first)), order[..2]);
        // Just under the threshold: still one worker.
        let almost: Vec<_> = idle
            .iter()
            .map(|w| loaded(&w.id, if w.id == order[0] { 7 } else { 0 }))
            .collect();
        assert_eq!(ids(placed_workers("h", &almost)), order[..1]);
        // Everyone busy: every worker, in rendezvous order.
        let all_busy: Vec<_> = idle.iter().map(|w| loaded(&w.id, 10)).collect();
        assert_eq!(ids(placed_workers("h", &all_busy)), order);
    }

    #[test]
    fn rendezvous_is_stable_and_moves_only_the_lost_workers_hashes() {
        let all: Vec<_> = ["a", "b", "c"].into_iter().map(worker).collect();
        let hashes: Vec<String> = (0..200).map(|i| format!("sha256:{i:064}")).collect();
        let first: Vec<String> = hashes
            .iter()
            .map(|h| rank_workers(h, &all)[0].id.clone())
            .collect();
        // Every worker gets some hashes.
        for id in ["a", "b", "c"] {
            assert!(first.iter().any(|w| w == id));
        }
        let without_b: Vec<_> = all.iter().filter(|w| w.id != "b").cloned().collect();
        for (h, before) in hashes.iter().zip(&first) {
            let after = &rank_workers(h, &without_b)[0].id;
            if before != "b" {
                assert_eq!(after, before, "a hash not on the lost worker moved");
            }
        }
    }
}
