//! The edge's Prometheus metrics (`annex_edge_*`). Labels are route and
//! outcome only: never a tenant, extension or install.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    /// `ext`, `proxy`, `ui`, `debug`.
    pub route: &'static str,
    /// The HTTP status class: `2xx`, `4xx`, `5xx`.
    pub class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ArmLabels {
    /// `stable`, `canary-1` … `canary-3`: the version's place in its rollout.
    pub arm: &'static str,
    /// `ok` or `failed` (5xx, trap, timeout, out of memory).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ArmLabel {
    pub arm: &'static str,
}

/// Calls of installs with an active rollout, per version of the split
/// (labelled by its place in the rollout, never by tenant or extension).
#[derive(Debug, Clone)]
pub(crate) struct RolloutMetrics {
    pub calls: Family<ArmLabels, Counter>,
    pub duration: Family<ArmLabel, Histogram>,
}

impl Default for RolloutMetrics {
    fn default() -> Self {
        RolloutMetrics {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 18))
            }),
        }
    }
}

impl RolloutMetrics {
    pub(crate) fn record(&self, arm: &'static str, failed: bool, took: std::time::Duration) {
        let outcome = if failed { "failed" } else { "ok" };
        self.calls.get_or_create(&ArmLabels { arm, outcome }).inc();
        self.duration
            .get_or_create(&ArmLabel { arm })
            .observe(took.as_secs_f64());
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// Calls split by a rollout, per arm.
    pub rollout: RolloutMetrics,
    pub requests: Family<RouteLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram>,
    pub worker_retries: Counter,
    pub audit_full: Counter,
    pub audit_failures: Counter,
    pub ui_cache_fills: Counter,
    /// Requests refused over the tenant's or install's quota share.
    pub quota_refusals: Counter,
    /// Audit rows the control plane refused on their own, dropped.
    pub audit_dropped: Counter,
    /// Bytes held by the install cache (answers and refusals).
    pub install_cache_bytes: Gauge,
    /// Bytes held by the API-key cache (answers and refusals).
    pub api_key_cache_bytes: Gauge,
    /// Lookups refused because one client asked about too many unknown names.
    pub lookup_refusals: Counter,
    /// Guest answers refused at the edge (too many or too large headers).
    pub guest_answers_refused: Counter,
    /// Open client connections on the public listener.
    pub connections: Gauge,
    /// Connections closed at once because the listener was at its cap.
    pub connections_refused: Counter,
    /// Open debug streams.
    pub debug_streams: Gauge,
    /// Debug streams refused over a tenant's or user's cap.
    pub debug_stream_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            rollout: RolloutMetrics::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 18))
            }),
            worker_retries: Counter::default(),
            audit_full: Counter::default(),
            audit_failures: Counter::default(),
            ui_cache_fills: Counter::default(),
            quota_refusals: Counter::default(),
            audit_dropped: Counter::default(),
            install_cache_bytes: Gauge::default(),
            api_key_cache_bytes: Gauge::default(),
            lookup_refusals: Counter::default(),
            guest_answers_refused: Counter::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            debug_streams: Gauge::default(),
            debug_stream_refusals: Counter::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "annex_edge_rollout_calls",
            "Calls of installs in a rollout, by arm (stable, canary-N) and outcome",
            self.rollout.calls.clone(),
        );
        r.register(
            "annex_edge_rollout_call_duration_seconds",
            "Latency of calls of installs in a rollout, by arm",
            self.rollout.duration.clone(),
        );
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
        r.register(
            "annex_edge_audit_rows_dropped",
            "Audit rows the control plane refused on their own (after splitting their batch), dropped",
            self.audit_dropped.clone(),
        );
        r.register(
            "annex_edge_install_cache_bytes",
            "Bytes held by the install-resolution cache",
            self.install_cache_bytes.clone(),
        );
        r.register(
            "annex_edge_api_key_cache_bytes",
            "Bytes held by the API-key cache",
            self.api_key_cache_bytes.clone(),
        );
        r.register(
            "annex_edge_lookup_refusals",
            "Install or API-key lookups refused because one client asked about too many unknown names",
            self.lookup_refusals.clone(),
        );
        r.register(
            "annex_edge_guest_answers_refused",
            "Guest answers refused with 502 at the edge (headers over the caps)",
            self.guest_answers_refused.clone(),
        );
        r.register(
            "annex_edge_connections",
            "Open client connections on the public listener",
            self.connections.clone(),
        );
        r.register(
            "annex_edge_connections_refused",
            "Client connections closed at once because the listener was at its cap",
            self.connections_refused.clone(),
        );
        r.register(
            "annex_edge_debug_streams",
            "Open debug streams",
            self.debug_streams.clone(),
        );
        r.register(
            "annex_edge_debug_stream_refusals",
            "Debug streams refused with 429 over a tenant's or user's cap",
            self.debug_stream_refusals.clone(),
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
