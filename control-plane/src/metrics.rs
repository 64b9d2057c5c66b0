//! Control-plane metrics (Prometheus names `annex_control_plane_*`; never a
//! tenant or extension label): the counters the domain types bump, registered
//! once with the admin listener's registry. Nothing here reads them back.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    /// `ok` or the error code's name.
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    /// `blob` (an unreferenced blob) or `staging` (a leftover upload).
    kind: String,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    publishes: Family<ResultLabel, Counter>,
    install_changes: Family<OpLabel, Counter>,
    rollout_changes: Family<OpLabel, Counter>,
    blobs_collected: Family<KindLabel, Counter>,
}

impl Metrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "annex_control_plane_publishes",
            "Bundle publishes by result",
            self.publishes.clone(),
        );
        registry.register(
            "annex_control_plane_install_changes",
            "Install changes by operation",
            self.install_changes.clone(),
        );
        registry.register(
            "annex_control_plane_rollout_changes",
            "Rollout changes by action (start, step, promote, rollback, abort)",
            self.rollout_changes.clone(),
        );
        registry.register(
            "annex_control_plane_blobs_collected",
            "Orphaned blobs and staging leftovers the collector deleted",
            self.blobs_collected.clone(),
        );
    }

    pub(crate) fn blobs_collected(&self, blobs: u64, staging: u64) {
        for (kind, n) in [("blob", blobs), ("staging", staging)] {
            self.blobs_collected
                .get_or_create(&KindLabel {
                    kind: kind.to_owned(),
                })
                .inc_by(n);
        }
    }

    pub(crate) fn publish(&self, result: Result<(), annex_proto::ErrorCode>) {
        let result = match result {
            Ok(()) => "ok".to_owned(),
            Err(code) => code.as_str().to_owned(),
        };
        self.publishes.get_or_create(&ResultLabel { result }).inc();
    }

    pub(crate) fn rollout_change(&self, action: &str) {
        self.rollout_changes
            .get_or_create(&OpLabel {
                op: action.to_owned(),
            })
            .inc();
    }

    pub(crate) fn install_change(&self, op: &str) {
        self.install_changes
            .get_or_create(&OpLabel { op: op.to_owned() })
            .inc();
    }
}
