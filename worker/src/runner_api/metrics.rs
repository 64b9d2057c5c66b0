//! Prometheus metrics of the runner API (`annex_worker_runner_api_*`, no
//! tenant or extension labels): calls by route and result, and bundle
//! downloads from Alga's bundle store. Executions themselves are counted
//! by the worker's own metrics like any other.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    route: &'static str,
    result: &'static str,
}

/// The runner API's metric handles.
#[derive(Clone, Default)]
pub(crate) struct ApiMetrics {
    calls: Family<CallLabel, Counter>,
    pub(crate) downloads: Counter,
}

impl ApiMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> ApiMetrics {
        let m = ApiMetrics::default();
        registry.register(
            "annex_worker_runner_api_calls",
            "Runner API calls by route (execute, warmup) and result (answered, replayed, refused, unauthorized)",
            m.calls.clone(),
        );
        registry.register(
            "annex_worker_runner_api_bundle_downloads",
            "Bundles downloaded from Alga's bundle store",
            m.downloads.clone(),
        );
        m
    }

    pub(crate) fn call(&self, route: &'static str, result: &'static str) {
        self.calls.get_or_create(&CallLabel { route, result }).inc();
    }
}
