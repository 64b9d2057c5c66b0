//! A/B comparison in one session: the two targets run alternately (A, B, A,
//! B, …) in short slices with the same load settings, so drift on a shared
//! machine (another build, thermal limits, a noisy neighbour) lands on both
//! sides. The figures are per-side medians over slices and the ratio B/A.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::engine::{self, LoadSpec, Mode};
use crate::record::Recorder;
use crate::report::{Latency, human_us};
use crate::target::Target;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SliceFigures {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Side {
    pub label: String,
    pub target: String,
    pub slices: Vec<SliceFigures>,
    pub median_rps: f64,
    pub median_p50_us: f64,
    pub median_p99_us: f64,
    pub errors_total: u64,
    /// All slices' samples together.
    pub overall: Latency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratios {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    pub mode: Mode,
    pub concurrency: usize,
    pub warmup_s: f64,
    pub slice_s: f64,
    pub rounds: usize,
    pub a: Side,
    pub b: Side,
    /// B divided by A, of the medians.
    pub ratio_b_over_a: Ratios,
}

/// Runs `rounds` rounds of one A slice then one B slice. `spec.duration` is
/// the slice length; each slice warms up for `spec.warmup` first.
pub async fn compare(a: &Target, b: &Target, spec: &LoadSpec, rounds: usize) -> CompareReport {
    let mut sides = [
        Accumulator::new("A", a.describe()),
        Accumulator::new("B", b.describe()),
    ];
    for _ in 0..rounds.max(1) {
        for (side, target) in sides.iter_mut().zip([a, b]) {
            let r = engine::run(target, spec).await;
            let latency = Latency::from_histogram(&r.recorder.latency);
            let requests = r.recorder.total();
            side.slices.push(SliceFigures {
                rps: requests as f64 / r.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
                p50_us: latency.p50_us,
                p99_us: latency.p99_us,
                requests,
                errors: r.recorder.error_count(),
            });
            side.all.merge(&r.recorder);
        }
    }
    let [a, b] = sides.map(Accumulator::finish);
    let ratio = |b: f64, a: f64| if a > 0.0 { b / a } else { f64::NAN };
    CompareReport {
        mode: spec.mode,
        concurrency: spec.concurrency,
        warmup_s: spec.warmup.as_secs_f64(),
        slice_s: spec.duration.as_secs_f64(),
        rounds: rounds.max(1),
        ratio_b_over_a: Ratios {
            rps: ratio(b.median_rps, a.median_rps),
            p50: ratio(b.median_p50_us, a.median_p50_us),
            p99: ratio(b.median_p99_us, a.median_p99_us),
        },
        a,
        b,
    }
}

struct Accumulator {
    label: &'static str,
    target: String,
    slices: Vec<SliceFigures>,
    all: Recorder,
}

impl Accumulator {
    fn new(label: &'static str, target: String) -> Accumulator {
        Accumulator {
            label,
            target,
            slices: Vec::new(),
            all: Recorder::new(),
        }
    }

    fn finish(self) -> Side {
        let pick = |f: fn(&SliceFigures) -> f64| median(self.slices.iter().map(f).collect());
        Side {
            label: self.label.to_owned(),
            median_rps: pick(|s| s.rps),
            median_p50_us: pick(|s| s.p50_us),
            median_p99_us: pick(|s| s.p99_us),
            errors_total: self.all.error_count(),
            overall: Latency::from_histogram(&self.all.latency),
            target: self.target,
            slices: self.slices,
        }
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl CompareReport {
    fn settings(&self) -> String {
        let mode = match self.mode {
            Mode::Closed => format!("closed loop, {} connections", self.concurrency),
            Mode::Open { rate } => format!(
                "open loop at {rate:.0} req/s, {} in flight",
                self.concurrency
            ),
        };
        format!(
            "{mode}; {} rounds of A then B, {:.1} s slices after {:.1} s warm-up each",
            self.rounds, self.slice_s, self.warmup_s
        )
    }

    pub fn text(&self, out: &mut String) {
        let _ = writeln!(out, "== compare ==\nsettings  {}", self.settings());
        for s in [&self.a, &self.b] {
            let _ = writeln!(
                out,
                "{}  {}\n   median {:.1} req/s  p50 {}  p99 {}  ({} errors; all slices: p99.9 {}, max {})",
                s.label,
                s.target,
                s.median_rps,
                human_us(s.median_p50_us),
                human_us(s.median_p99_us),
                s.errors_total,
                human_us(s.overall.p999_us),
                human_us(s.overall.max_us)
            );
        }
        let r = &self.ratio_b_over_a;
        let _ = writeln!(
            out,
            "ratio B/A  req/s {:.3}  p50 {:.3}  p99 {:.3}",
            r.rps, r.p50, r.p99
        );
    }

    pub fn markdown(&self, out: &mut String) {
        let _ = writeln!(out, "{}\n", self.settings());
        let _ = writeln!(
            out,
            "| side | target | median req/s | median p50 | median p99 | errors |\n|---|---|---:|---:|---:|---:|"
        );
        for s in [&self.a, &self.b] {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {} |",
                s.label,
                s.target,
                s.median_rps,
                human_us(s.median_p50_us),
                human_us(s.median_p99_us),
                s.errors_total
            );
        }
        let r = &self.ratio_b_over_a;
        let _ = writeln!(
            out,
            "| B/A | | {:.3} | {:.3} | {:.3} | |",
            r.rps, r.p50, r.p99
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(super::median(vec![]), 0.0);
    }
}
