//! The edge's Prometheus metrics (`annex_edge_*`). Labels are route and
//! outcome only: never a tenant, extension or install.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    /// `ext`, `proxy`, `ui`, `debug`.
    pub route: &'static str,
    /// The HTTP status class: `2xx`, `4xx`, `5xx`.
    pub class: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub requests: Family<RouteLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram>,
    pub worker_retries: Counter,
    pub audit_full: Counter,
    pub audit_failures: Counter,
    pub ui_cache_fills: Counter,
    /// Requests refused over the tenant's or install's quota share.
    pub quota_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 18))
            }),
            worker_retries: Counter::default(),
            audit_full: Counter::default(),
            audit_failures: Counter::default(),
            ui_cache_fills: Counter::default(),
            quota_refusals: Counter::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "annex_edge_requests",
            "Requests answered, by route and status class",
            self.requests.clone(),
        );
        r.register(
            "annex_edge_request_duration_seconds",
            "Time to answer a request, by route and status class",
            self.duration.clone(),
        );
        r.register(
            "annex_edge_worker_retries",
            "Executions retried on another worker after the first was unavailable",
            self.worker_retries.clone(),
        );
        r.register(
            "annex_edge_audit_buffer_full",
            "Requests refused with 503 because the audit buffer was full",
            self.audit_full.clone(),
        );
        r.register(
            "annex_edge_audit_write_failures",
            "RecordExecutions calls that failed",
            self.audit_failures.clone(),
        );
        r.register(
            "annex_edge_ui_cache_fills",
            "Bundles fetched and unpacked into the UI cache",
            self.ui_cache_fills.clone(),
        );
        r.register(
            "annex_edge_quota_refusals",
            "Requests refused with 429 over this edge's share of a tenant or install quota",
            self.quota_refusals.clone(),
        );
    }

    pub(crate) fn observe(&self, route: &'static str, status: u16, seconds: f64) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = RouteLabels { route, class };
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }
}
