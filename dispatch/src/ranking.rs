//! The worker order for one execution: which workers of a routing table to
//! try for a content hash, best first. Pure: the rotation turn and the set
//! of workers marked down come from the caller ([`crate::Workers`] keeps
//! them), so every decision here is testable without a clock or a network.
//!
//! The order: the workers the control plane placed the hash on, those with
//! room before full ones (rotated when the hash has spilled onto several),
//! then every other worker in rotation so load spreads, and workers marked
//! down after everything else. A hash the table has no placement for yet (it
//! was installed after the table was sent) goes first to the worker the
//! control plane places it on, its [`rendezvous`] first, so the calls right
//! after an install reach the worker being prewarmed instead of compiling
//! the component on every worker in turn.

use std::collections::HashMap;

use annex_proto::pb;
use sha2::{Digest as _, Sha256};

/// A worker that can take executions, as the routing table lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTarget {
    pub id: String,
    /// `host:port`; a scheme some workers advertise is tolerated.
    pub address: String,
    /// Capacity and in-flight executions as of the table (0: unknown).
    pub capacity: u32,
    pub in_flight: u32,
}

impl WorkerTarget {
    /// Whether the table says this worker has a free slot.
    fn has_room(&self) -> bool {
        self.capacity == 0 || self.in_flight < self.capacity
    }
}

/// The workers and the placements of content hashes on them: the edge's
/// copy of a `RoutingSnapshot`, or the control plane's own view of one hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    pub workers: Vec<WorkerTarget>,
    /// Content hash → the ids of the workers it is placed on, in the
    /// control plane's (rendezvous) order.
    pub placements: HashMap<String, Vec<String>>,
}

impl RoutingTable {
    /// The table a routing snapshot describes; workers without an address
    /// cannot be reached and are left out.
    pub fn from_snapshot(workers: Vec<pb::WorkerRoute>, placements: Vec<pb::Placement>) -> Self {
        RoutingTable {
            workers: workers
                .into_iter()
                .filter(|w| !w.address.is_empty())
                .map(|w| WorkerTarget {
                    id: w.worker_id,
                    address: w.address,
                    capacity: w.capacity,
                    in_flight: w.in_flight,
                })
                .collect(),
            placements: placements
                .into_iter()
                .map(|p| (p.content_hash, p.worker_ids))
                .collect(),
        }
    }

    /// The ids of the workers `content_hash` is placed on (empty: none).
    pub fn placed(&self, content_hash: &str) -> &[String] {
        self.placements.get(content_hash).map_or(&[], Vec::as_slice)
    }
}

/// `workers` in rendezvous (highest random weight) order for
/// `content_hash`, preferred first: each hash has a stable preferred worker,
/// and losing a worker moves only that worker's hashes. The control plane
/// places hashes in this order.
pub fn rendezvous<'a, T>(
    content_hash: &str,
    workers: &'a [T],
    id: impl Fn(&T) -> &str,
) -> Vec<&'a T> {
    let mut ranked: Vec<(&T, [u8; 32])> = workers
        .iter()
        .map(|w| {
            let mut h = Sha256::new();
            h.update(content_hash.as_bytes());
            h.update([0]);
            h.update(id(w).as_bytes());
            (w, h.finalize().into())
        })
        .collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
    ranked.into_iter().map(|(w, _)| w).collect()
}

/// Workers to try for `content_hash`, best first (see the module comment).
/// `turn` rotates the order between calls; `down` holds the ids of workers
/// passed over for now.
pub(crate) fn rank(
    table: &RoutingTable,
    content_hash: &str,
    turn: usize,
    down: &[String],
) -> Vec<WorkerTarget> {
    let n = table.workers.len();
    if n == 0 {
        return Vec::new();
    }
    let placements = table.placed(content_hash);
    let mut placed: Vec<WorkerTarget> = if placements.is_empty() {
        rendezvous(content_hash, &table.workers, |w| &w.id)
            .into_iter()
            .take(1)
            .cloned()
            .collect()
    } else {
        placements
            .iter()
            .filter_map(|id| table.workers.iter().find(|w| &w.id == id).cloned())
            .collect()
    };
    if placed.len() > 1 {
        let k = turn % placed.len();
        placed.rotate_left(k);
    }
    // Stable sorts: each keeps the order within its groups.
    placed.sort_by_key(|w| !w.has_room());
    let mut out = placed;
    let start = turn % n;
    for i in 0..n {
        let w = &table.workers[(start + i) % n];
        if !out.iter().any(|o| o.id == w.id) {
            out.push(w.clone());
        }
    }
    out.sort_by_key(|w| down.contains(&w.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, capacity: u32, in_flight: u32) -> WorkerTarget {
        WorkerTarget {
            id: id.into(),
            address: format!("{id}:1"),
            capacity,
            in_flight,
        }
    }

    fn table(workers: &[WorkerTarget], placed: &[&str]) -> RoutingTable {
        RoutingTable {
            workers: workers.to_vec(),
            placements: [(
                "h".to_owned(),
                placed.iter().map(|s| (*s).to_owned()).collect(),
            )]
            .into(),
        }
    }

    fn ids(ranked: Vec<WorkerTarget>) -> Vec<String> {
        ranked.into_iter().map(|w| w.id).collect()
    }

    #[test]
    fn an_empty_table_has_no_candidates() {
        assert!(rank(&RoutingTable::default(), "h", 0, &[]).is_empty());
    }

    #[test]
    fn placed_workers_come_first_then_the_rest_in_rotation() {
        let t = table(
            &[worker("a", 0, 0), worker("b", 0, 0), worker("c", 0, 0)],
            &["c", "gone", "a"],
        );
        assert_eq!(ids(rank(&t, "h", 0, &[])), ["c", "a", "b"]);
        assert_eq!(ids(rank(&t, "h", 1, &[])), ["a", "c", "b"]);
    }

    #[test]
    fn a_hash_without_a_placement_goes_first_where_the_control_plane_places_it() {
        let workers = [worker("a", 0, 0), worker("b", 0, 0), worker("c", 0, 0)];
        let t = table(&workers, &[]);
        for hash in ["h1", "h2", "h3", "h4"] {
            let preferred = rendezvous(hash, &workers, |w| &w.id)[0].id.clone();
            for turn in 0..3 {
                let ranked = ids(rank(&t, hash, turn, &[]));
                assert_eq!(ranked[0], preferred, "{hash}, turn {turn}");
                // The others follow in rotation, each once.
                let mut sorted = ranked.clone();
                sorted.sort();
                assert_eq!(sorted, ["a", "b", "c"]);
            }
        }
        // Once placed, the placement decides.
        let placed = table(&workers, &["b"]);
        assert_eq!(ids(rank(&placed, "h", 0, &[]))[0], "b");
    }

    #[test]
    fn workers_marked_down_come_last() {
        let t = table(&[worker("a", 0, 0), worker("b", 0, 0)], &["a"]);
        assert_eq!(ids(rank(&t, "h", 0, &[])), ["a", "b"]);
        for turn in 0..3 {
            assert_eq!(ids(rank(&t, "h", turn, &["a".into()])), ["b", "a"]);
        }
    }

    #[test]
    fn snapshot_workers_without_an_address_are_left_out() {
        let t = RoutingTable::from_snapshot(
            vec![
                pb::WorkerRoute {
                    worker_id: "a".into(),
                    address: "a:1".into(),
                    capacity: 2,
                    in_flight: 1,
                },
                pb::WorkerRoute {
                    worker_id: "b".into(),
                    ..Default::default()
                },
            ],
            vec![pb::Placement {
                content_hash: "h".into(),
                worker_ids: vec!["a".into()],
            }],
        );
        assert_eq!(t.workers, [worker("a", 2, 1)]);
        assert_eq!(t.placed("h"), ["a"]);
        assert!(t.placed("other").is_empty());
    }
}
