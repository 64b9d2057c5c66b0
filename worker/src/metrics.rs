//! Prometheus metrics of the worker (`annex_worker_*`, base units, no
//! tenant or extension labels). It records plain values (an [`Outcome`], a
//! load source's name, seconds) and knows nothing of how executions run.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::outcome::Outcome;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// The worker's metric handles.
#[derive(Clone)]
pub struct Metrics {
    executions: Family<OutcomeLabel, Counter>,
    duration: Family<OutcomeLabel, Histogram>,
    component_loads: Family<SourceLabel, Counter>,
    in_flight: Gauge,
    log_batches_dropped: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::unregistered();
        registry.register(
            "annex_worker_executions",
            "Executions by outcome (ok, trap, timeout, oom, rejected)",
            m.executions.clone(),
        );
        registry.register(
            "annex_worker_execution_duration_seconds",
            "Wall time of executions, admission wait and component load included",
            m.duration.clone(),
        );
        registry.register(
            "annex_worker_component_loads",
            "Components made ready, by source (memory, disk, compiled)",
            m.component_loads.clone(),
        );
        registry.register(
            "annex_worker_in_flight",
            "Executions holding an execution slot",
            m.in_flight.clone(),
        );
        registry.register(
            "annex_worker_log_batches_dropped",
            "Executions' log batches not delivered to the control plane (queue full, publish failed or timed out)",
            m.log_batches_dropped.clone(),
        );
        m
    }

    /// Metrics that are recorded but not exported (tests, embedding).
    pub fn unregistered() -> Metrics {
        Metrics {
            executions: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 100 µs .. ~105 s.
                Histogram::new(exponential_buckets(0.0001, 2.0, 21))
            }),
            component_loads: Family::default(),
            in_flight: Gauge::default(),
            log_batches_dropped: Counter::default(),
        }
    }

    /// Counts one execution and its wall time.
    pub(crate) fn record(&self, outcome: Outcome, seconds: f64) {
        let label = OutcomeLabel {
            outcome: outcome.as_str(),
        };
        self.executions.get_or_create(&label).inc();
        self.duration.get_or_create(&label).observe(seconds);
    }

    /// Counts a component made ready; `source` is `memory`, `disk` or
    /// `compiled`.
    pub(crate) fn component_loaded(&self, source: &'static str) {
        self.component_loads
            .get_or_create(&SourceLabel { source })
            .inc();
    }

    /// The counter of log batches the shipper dropped.
    pub(crate) fn log_batches_dropped(&self) -> Counter {
        self.log_batches_dropped.clone()
    }

    /// Counts an execution holding a slot until the guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }
}

/// One execution counted in `annex_worker_in_flight`; uncounted on drop.
pub(crate) struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_exported_without_tenant_labels() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.record(Outcome::Ok, 0.002);
        m.record(Outcome::Timeout, 1.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("annex_worker_executions_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("annex_worker_executions_total{outcome=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("annex_worker_execution_duration_seconds_bucket"),
            "{text}"
        );
        assert!(!text.contains("tenant"));
    }
}
