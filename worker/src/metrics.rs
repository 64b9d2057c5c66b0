//! Prometheus metrics of the worker (`annex_worker_*`, base units, no
//! tenant or extension labels).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::execute::Outcome;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

/// The worker's metric handles.
#[derive(Clone)]
pub struct Metrics {
    pub executions: Family<OutcomeLabel, Counter>,
    pub duration: Family<OutcomeLabel, Histogram>,
    pub component_loads: Family<SourceLabel, Counter>,
    pub in_flight: Gauge,
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
        }
    }

    pub fn record(&self, outcome: Outcome, seconds: f64) {
        let label = OutcomeLabel {
            outcome: outcome.as_str(),
        };
        self.executions.get_or_create(&label).inc();
        self.duration.get_or_create(&label).observe(seconds);
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
