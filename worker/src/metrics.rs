//! Prometheus metrics of the worker (`annex_worker_*`, base units, no
//! tenant or extension labels). It records plain values (an [`Outcome`], a
//! load source's name, seconds) and knows nothing of how executions run.
//! The compile queue's figures are [`CompileMetrics`], kept by the queue.

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

/// The compiler tier of a component's code (`winch`, `cranelift`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TierLabel {
    pub(crate) tier: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// What happened to a call that carries an idempotency key
/// (docs/design/idempotency.md); `waited` is counted besides the call's
/// final outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdempotentOutcome {
    /// The call held the record and ran.
    Claimed,
    /// An earlier call's answer was replayed; no guest ran.
    Replayed,
    /// The call found the record held by another call and waited.
    Waited,
    /// The key was used with another request.
    Conflict,
    /// The other call still held the record when this one's time was up.
    InProgress,
    /// The records could not be reached; the call was refused.
    Unavailable,
    /// A running call's lease could not be kept; its guest was stopped.
    LeaseLost,
}

impl IdempotentOutcome {
    fn as_str(self) -> &'static str {
        match self {
            IdempotentOutcome::Claimed => "claimed",
            IdempotentOutcome::Replayed => "replayed",
            IdempotentOutcome::Waited => "waited",
            IdempotentOutcome::Conflict => "conflict",
            IdempotentOutcome::InProgress => "in_progress",
            IdempotentOutcome::Unavailable => "unavailable",
            IdempotentOutcome::LeaseLost => "lease_lost",
        }
    }
}

/// The worker's metric handles.
#[derive(Clone)]
pub struct Metrics {
    executions: Family<OutcomeLabel, Counter>,
    duration: Family<OutcomeLabel, Histogram>,
    component_loads: Family<SourceLabel, Counter>,
    in_flight: Gauge,
    log_batches_dropped: Counter,
    captures_dropped: Counter,
    idempotent: Family<OutcomeLabel, Counter>,
    tiers: Family<TierLabel, Counter>,
    pub(crate) compile: CompileMetrics,
}

/// The compile queue (`cache::queue`): what waits, what runs, how long a
/// compile takes, and how many calls were answered `COMPONENT_COMPILING`.
#[derive(Clone)]
pub(crate) struct CompileMetrics {
    pub(crate) queued: Gauge,
    pub(crate) in_flight: Gauge,
    pub(crate) seconds: Histogram,
    pub(crate) refusals: Counter,
    /// Compiles that produced a component, by tier.
    pub(crate) compiles: Family<TierLabel, Counter>,
}

impl Default for CompileMetrics {
    fn default() -> Self {
        CompileMetrics {
            queued: Gauge::default(),
            in_flight: Gauge::default(),
            // 10 ms .. ~160 s: a small Rust guest to a large JavaScript one
            // on a busy machine.
            seconds: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            refusals: Counter::default(),
            compiles: Family::default(),
        }
    }
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
        registry.register(
            "annex_worker_captures_dropped",
            "Captured executions not delivered to the control plane (queue full, refused or timed out)",
            m.captures_dropped.clone(),
        );
        registry.register(
            "annex_worker_idempotent_calls",
            "Calls with an idempotency key by outcome (claimed, replayed, waited, conflict, in_progress, unavailable, lease_lost)",
            m.idempotent.clone(),
        );
        registry.register(
            "annex_worker_compile_queue_depth",
            "Components waiting to be compiled",
            m.compile.queued.clone(),
        );
        registry.register(
            "annex_worker_compiles_in_flight",
            "Components being compiled",
            m.compile.in_flight.clone(),
        );
        registry.register(
            "annex_worker_compile_duration_seconds",
            "Time one component compile took, queue wait excluded",
            m.compile.seconds.clone(),
        );
        registry.register(
            "annex_worker_compiles",
            "Components compiled, by compiler tier (winch: the fast first tier; cranelift: the final one)",
            m.compile.compiles.clone(),
        );
        registry.register(
            "annex_worker_executions_by_tier",
            "Guest runs by the compiler tier of the code that served them",
            m.tiers.clone(),
        );
        registry.register(
            "annex_worker_compiling_refusals",
            "Calls answered COMPONENT_COMPILING because their component was still being prepared",
            m.compile.refusals.clone(),
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
            captures_dropped: Counter::default(),
            idempotent: Family::default(),
            tiers: Family::default(),
            compile: CompileMetrics::default(),
        }
    }

    /// Counts one outcome of a keyed call.
    pub(crate) fn idempotent(&self, outcome: IdempotentOutcome) {
        self.idempotent
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
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

    /// Counts a guest run served by code of `tier`.
    pub(crate) fn served_by(&self, tier: &'static str) {
        self.tiers.get_or_create(&TierLabel { tier }).inc();
    }

    /// Guest runs served by code of `tier` so far.
    pub(crate) fn served(&self, tier: &'static str) -> u64 {
        self.tiers.get_or_create(&TierLabel { tier }).get()
    }

    /// The counter of log batches the shipper dropped.
    pub(crate) fn log_batches_dropped(&self) -> Counter {
        self.log_batches_dropped.clone()
    }

    pub(crate) fn captures_dropped(&self) -> Counter {
        self.captures_dropped.clone()
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

    #[test]
    fn idempotent_outcomes_are_exported_without_tenant_labels() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.idempotent(IdempotentOutcome::Replayed);
        m.idempotent(IdempotentOutcome::Replayed);
        m.idempotent(IdempotentOutcome::Conflict);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "annex_worker_idempotent_calls_total{outcome=\"replayed\"} 2",
            "annex_worker_idempotent_calls_total{outcome=\"conflict\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        assert!(!text.contains("tenant"));
    }

    #[test]
    fn the_compile_queue_is_exported() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.compile.queued.set(3);
        m.compile.seconds.observe(5.5);
        m.compile.refusals.inc();
        m.compile
            .compiles
            .get_or_create(&TierLabel { tier: "winch" })
            .inc();
        m.served_by("cranelift");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "annex_worker_compile_queue_depth 3",
            "annex_worker_compiles_in_flight 0",
            "annex_worker_compile_duration_seconds_count 1",
            "annex_worker_compiling_refusals_total 1",
            "annex_worker_compiles_total{tier=\"winch\"} 1",
            "annex_worker_executions_by_tier_total{tier=\"cranelift\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
