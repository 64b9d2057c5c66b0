//! Reports: one [`RunReport`] per measured run, wrapped with the date and the
//! machine in a [`Document`], and written as a human summary (stdout), JSON
//! (`--json`) and Markdown (`--markdown`). Compare, noisy-neighbour and
//! cold-start results are documents of their own kind built from run reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::cold_start::ColdStartReport;
use crate::compare::CompareReport;
use crate::engine::{LoadSpec, Mode, RunResult, StopReason};
use crate::scenario::NoisyReport;

/// Latency of successful requests, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Scenario or command name.
    pub name: String,
    pub target: String,
    pub mode: Mode,
    pub concurrency: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub max_requests: u64,
    pub timeout_s: f64,
    pub elapsed_s: f64,
    pub stopped_by: StopReason,
    /// Measured requests (successes and errors).
    pub requests: u64,
    pub ok: u64,
    pub errors_total: u64,
    /// Measured requests per second.
    pub rps: f64,
    pub latency: Latency,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub backlog: u64,
}

impl RunReport {
    pub fn new(name: &str, target: String, spec: &LoadSpec, r: &RunResult) -> RunReport {
        let requests = r.recorder.total();
        let elapsed_s = r.elapsed.as_secs_f64();
        RunReport {
            name: name.to_owned(),
            target,
            mode: spec.mode,
            concurrency: spec.concurrency,
            warmup_s: spec.warmup.as_secs_f64(),
            duration_s: spec.duration.as_secs_f64(),
            max_requests: spec.max_requests,
            timeout_s: spec.timeout.as_secs_f64(),
            elapsed_s,
            stopped_by: r.stopped_by,
            requests,
            ok: r.recorder.ok(),
            errors_total: r.recorder.error_count(),
            rps: if elapsed_s > 0.0 {
                requests as f64 / elapsed_s
            } else {
                0.0
            },
            latency: Latency::from_histogram(&r.recorder.latency),
            statuses: r
                .recorder
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            errors: r.recorder.errors.clone(),
            backlog: r.backlog,
        }
    }

    pub fn mode_line(&self) -> String {
        let mode = match self.mode {
            Mode::Closed => format!("closed loop, {} connections", self.concurrency),
            Mode::Open { rate } => format!(
                "open loop at {rate:.0} req/s, at most {} in flight (latency from intended send time)",
                self.concurrency
            ),
        };
        format!(
            "{mode}; warm-up {:.1} s; at most {:.1} s and {} requests",
            self.warmup_s, self.duration_s, self.max_requests
        )
    }

    pub fn text(&self, out: &mut String) {
        let _ = writeln!(out, "== {} ==", self.name);
        let _ = writeln!(out, "target    {}", self.target);
        let _ = writeln!(out, "mode      {}", self.mode_line());
        let stopped = match self.stopped_by {
            StopReason::Duration => "duration",
            StopReason::Requests => "request count",
        };
        let _ = writeln!(
            out,
            "result    {} requests in {:.2} s (stopped by {stopped}): {:.1} req/s, {} ok, {} errors",
            self.requests, self.elapsed_s, self.rps, self.ok, self.errors_total
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {}, {} samples)",
            human_us(l.p50_us),
            human_us(l.p90_us),
            human_us(l.p99_us),
            human_us(l.p999_us),
            human_us(l.max_us),
            human_us(l.mean_us),
            l.count
        );
        let _ = writeln!(out, "statuses  {}", counts(&self.statuses));
        let _ = writeln!(out, "errors    {}", counts(&self.errors));
        if self.backlog > 0 {
            let _ = writeln!(
                out,
                "backlog   {} scheduled requests never sent: the target did not keep up with the rate",
                self.backlog
            );
        }
    }

    /// One Markdown table row; see [`RUN_TABLE_HEADER`].
    pub fn markdown_row(&self) -> String {
        let l = &self.latency;
        format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            self.name,
            match self.mode {
                Mode::Closed => format!("closed c={}", self.concurrency),
                Mode::Open { rate } => format!("open {rate:.0}/s c={}", self.concurrency),
            },
            self.rps,
            human_us(l.p50_us),
            human_us(l.p90_us),
            human_us(l.p99_us),
            human_us(l.p999_us),
            human_us(l.max_us),
            self.requests,
            if self.errors.is_empty() {
                "0".to_owned()
            } else {
                counts(&self.errors)
            },
        )
    }
}

pub const RUN_TABLE_HEADER: &str = "| run | mode | req/s | p50 | p90 | p99 | p99.9 | max | requests | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|";

pub fn human_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a command produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Output {
    Runs { runs: Vec<RunReport> },
    Compare(Box<CompareReport>),
    NoisyNeighbour(Box<NoisyReport>),
    ColdStart(ColdStartReport),
}

/// A report with its context: when, where, with which harness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    pub tool: String,
    pub version: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub machine: Machine,
    pub output: Output,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    /// Tokio worker threads the harness itself used.
    pub harness_threads: usize,
}

impl Machine {
    pub fn this(harness_threads: usize) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            harness_threads,
        }
    }
}

impl Document {
    pub fn new(output: Output, harness_threads: usize) -> Document {
        Document {
            tool: "annex-loadtest".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            machine: Machine::this(harness_threads),
            output,
        }
    }

    fn context_line(&self) -> String {
        let m = &self.machine;
        format!(
            "{} · {} CPUs ({}) · {} GiB · harness threads {}",
            self.date, m.cpus, m.cpu_model, m.memory_gib, m.harness_threads
        )
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "annex-loadtest {} · {}",
            self.version,
            self.context_line()
        );
        match &self.output {
            Output::Runs { runs } => runs.iter().for_each(|r| r.text(&mut out)),
            Output::Compare(c) => c.text(&mut out),
            Output::NoisyNeighbour(n) => n.text(&mut out),
            Output::ColdStart(c) => c.text(&mut out),
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "_{}_\n", self.context_line());
        match &self.output {
            Output::Runs { runs } => {
                let _ = writeln!(out, "{RUN_TABLE_HEADER}");
                for r in runs {
                    let _ = writeln!(out, "{}", r.markdown_row());
                }
                let _ = writeln!(out);
                for r in runs {
                    let _ = writeln!(out, "- {}: {} — {}", r.name, r.target, r.mode_line());
                }
            }
            Output::Compare(c) => c.markdown(&mut out),
            Output::NoisyNeighbour(n) => n.markdown(&mut out),
            Output::ColdStart(c) => c.markdown(&mut out),
        }
        out
    }

    /// Prints the summary and writes the requested files.
    pub fn emit(&self, json: Option<&Path>, markdown: Option<&Path>) -> anyhow::Result<()> {
        print!("{}", self.text());
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(self).context("encoding the JSON report")?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = markdown {
            std::fs::write(path, self.markdown())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}
