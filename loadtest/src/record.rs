//! Per-worker recording: an HDR histogram of successful latencies (in
//! nanoseconds, three significant digits), success counts by status and
//! error counts by kind. Each load worker owns one [`Recorder`], so the hot
//! path takes no lock; the engine merges them when the run ends.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::target::Sample;

/// One nanosecond to one hour: any latency the harness can observe (requests
/// time out long before the top).
const HIGHEST_NS: u64 = 3_600_000_000_000;
/// 1 µs lowest discernible value keeps each histogram near 130 KiB (64
/// workers, 8 MiB) while three significant digits still resolve 1 µs at 1 ms.
const LOWEST_NS: u64 = 1_000;

#[derive(Debug, Clone)]
pub struct Recorder {
    pub latency: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            // The bounds are constants that hdrhistogram accepts.
            latency: Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, 3)
                .expect("valid histogram bounds"),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, latency: Duration, sample: Sample) {
        match sample {
            Sample::Ok { status } => {
                let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                self.latency
                    .saturating_record(ns.clamp(LOWEST_NS, HIGHEST_NS));
                *self.statuses.entry(status).or_default() += 1;
            }
            Sample::Error(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides; `add` fails only on a range mismatch.
        let _ = self.latency.add(&other.latency);
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }

    pub fn ok(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn total(&self) -> u64 {
        self.ok() + self.error_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_latencies() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.record(Duration::from_micros(100), Sample::Ok { status: 200 });
        b.record(Duration::from_micros(300), Sample::Ok { status: 200 });
        b.record(Duration::from_micros(1), Sample::Error("status 503".into()));
        a.merge(&b);
        assert_eq!(a.ok(), 2);
        assert_eq!(a.error_count(), 1);
        assert_eq!(a.latency.len(), 2);
        assert!(a.latency.max() >= 299_000);
        assert_eq!(a.errors.get("status 503"), Some(&1));
    }
}
