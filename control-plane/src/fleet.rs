//! Worker membership and the routing snapshot edges follow.
//!
//! Workers register and stream heartbeats to any replica; each heartbeat is a
//! row in `workers`, so every replica builds the same snapshot from Postgres.
//! A worker that stops heartbeating for [`WORKER_TTL`] leaves the snapshot; a
//! draining worker leaves it at once. Placement orders a content hash's
//! workers by rendezvous hashing, so repeated calls for one bundle land on the
//! worker that already compiled it.

use std::time::Duration;

use annex_proto::AnnexError;
use annex_proto::pb::{self, RoutingSnapshot, WorkerRoute};
use chrono::Utc;
use sha2::{Digest as _, Sha256};

use crate::ControlPlane;
use crate::store::WorkerRow;

/// How often workers are asked to heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// A worker unseen for this long is out of the snapshot.
pub const WORKER_TTL: Duration = Duration::from_secs(3);

impl ControlPlane {
    pub async fn worker_seen(&self, row: WorkerRow) -> Result<(), AnnexError> {
        if row.id.trim().is_empty() || row.address.trim().is_empty() {
            return Err(AnnexError::invalid("worker_id and address are required"));
        }
        self.store.upsert_worker(row).await?;
        Ok(())
    }

    /// Workers that may take traffic now: seen within the TTL and not draining.
    pub async fn live_workers(&self) -> Result<Vec<WorkerRow>, AnnexError> {
        let since = Utc::now() - chrono::Duration::from_std(WORKER_TTL).unwrap_or_default();
        let mut workers = self.store.list_workers(since).await?;
        workers.retain(|w| !w.draining);
        Ok(workers)
    }

    /// The routing snapshot; `version` changes whenever its content does.
    pub async fn routing_snapshot(&self) -> Result<RoutingSnapshot, AnnexError> {
        let workers = self.live_workers().await?;
        let quotas = self.quota_shares().await?;
        let routes: Vec<WorkerRoute> = workers
            .iter()
            .map(|w| WorkerRoute {
                worker_id: w.id.clone(),
                address: w.address.clone(),
                capacity: w.capacity,
                in_flight: w.in_flight,
            })
            .collect();
        let mut hasher = Sha256::new();
        for w in &workers {
            hasher.update(w.id.as_bytes());
            hasher.update([0]);
            hasher.update(w.address.as_bytes());
            hasher.update([0]);
        }
        crate::quota::hash_quotas(&mut hasher, &quotas);
        let digest = hasher.finalize();
        let mut version = [0u8; 8];
        version.copy_from_slice(&digest[..8]);
        Ok(RoutingSnapshot {
            version: u64::from_be_bytes(version),
            workers: routes,
            placements: Vec::new(),
            quotas,
        })
    }
}

/// Workers for `content_hash`, best first: rendezvous (highest random weight)
/// hashing, so each hash has a stable preferred worker and losing a worker
/// moves only its hashes.
pub fn rank_workers<'a>(content_hash: &str, workers: &'a [WorkerRow]) -> Vec<&'a WorkerRow> {
    let mut ranked: Vec<(&WorkerRow, [u8; 32])> = workers
        .iter()
        .map(|w| {
            let mut h = Sha256::new();
            h.update(content_hash.as_bytes());
            h.update([0]);
            h.update(w.id.as_bytes());
            (w, h.finalize().into())
        })
        .collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
    ranked.into_iter().map(|(w, _)| w).collect()
}

/// A fleet command for every connected worker.
pub fn prewarm(content_hash: &str) -> pb::FleetCommand {
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
