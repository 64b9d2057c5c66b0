//! The per-install rate of guest log output, shared by every execution on
//! this worker: two token buckets per install (lines and bytes), consulted
//! before a line is kept or written to the worker's own log. A guest that
//! logs in a loop, or many short executions of one install that each log
//! up to their own cap, cannot flood the worker's log or the debug stream.
//! Bounded: at most [`MAX_INSTALLS`] installs are tracked; idle ones (full
//! buckets) are forgotten first. Counting only; nothing here emits.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

/// Installs tracked at once.
pub(crate) const MAX_INSTALLS: usize = 4096;

/// How much one install may log, across its executions on one worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateLimits {
    /// Sustained lines per second, and how many may come at once.
    pub(crate) lines_per_sec: f64,
    pub(crate) line_burst: f64,
    /// Sustained message bytes per second, and how many may come at once.
    pub(crate) bytes_per_sec: f64,
    pub(crate) byte_burst: f64,
}

impl Default for RateLimits {
    /// 200 lines and 256 KiB per second with bursts of 1,000 lines and
    /// 1 MiB: far above what an extension logs to be debugged, far below
    /// what fills a disk (a flood of 8 KiB lines used to reach 39 MiB in a
    /// quarter of a second).
    fn default() -> Self {
        RateLimits {
            lines_per_sec: 200.0,
            line_burst: 1000.0,
            bytes_per_sec: 256.0 * 1024.0,
            byte_burst: 1024.0 * 1024.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Buckets {
    lines: f64,
    bytes: f64,
    at: Instant,
}

impl Buckets {
    fn full(limits: &RateLimits, now: Instant) -> Buckets {
        Buckets {
            lines: limits.line_burst,
            bytes: limits.byte_burst,
            at: now,
        }
    }

    fn refill(&mut self, limits: &RateLimits, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.lines = (self.lines + secs * limits.lines_per_sec).min(limits.line_burst);
        self.bytes = (self.bytes + secs * limits.bytes_per_sec).min(limits.byte_burst);
        self.at = now;
    }

    fn is_full(&self, limits: &RateLimits) -> bool {
        self.lines >= limits.line_burst && self.bytes >= limits.byte_burst
    }
}

/// Log budgets per install.
#[derive(Debug, Default)]
pub(crate) struct LogRates {
    limits: RateLimits,
    installs: Mutex<HashMap<String, Buckets>>,
}

impl LogRates {
    pub(crate) fn new(limits: RateLimits) -> LogRates {
        LogRates {
            limits,
            installs: Mutex::default(),
        }
    }

    /// Takes one line of `bytes` from `install`'s budget; false (nothing
    /// taken) when either bucket lacks room.
    pub(crate) fn allow(&self, install: &str, bytes: usize) -> bool {
        let now = Instant::now();
        let limits = &self.limits;
        let mut installs = self.installs.lock();
        if !installs.contains_key(install) && installs.len() >= MAX_INSTALLS {
            installs.retain(|_, b| {
                b.refill(limits, now);
                !b.is_full(limits)
            });
            if installs.len() >= MAX_INSTALLS {
                // Every tracked install is busy: forget one at random
                // rather than grow (it gets a fresh budget, never more).
                if let Some(key) = installs.keys().next().cloned() {
                    installs.remove(&key);
                }
            }
        }
        let buckets = installs
            .entry(install.to_owned())
            .or_insert_with(|| Buckets::full(limits, now));
        buckets.refill(limits, now);
        let cost = bytes as f64;
        if buckets.lines < 1.0 || buckets.bytes < cost {
            return false;
        }
        buckets.lines -= 1.0;
        buckets.bytes -= cost;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate_holds() {
        let rates = LogRates::new(RateLimits {
            lines_per_sec: 0.0,
            line_burst: 3.0,
            bytes_per_sec: 0.0,
            byte_burst: 100.0,
        });
        assert!(rates.allow("a", 10));
        assert!(rates.allow("a", 10));
        assert!(rates.allow("a", 10));
        assert!(!rates.allow("a", 10), "lines exhausted");
        assert!(rates.allow("b", 100), "another install has its own budget");
        assert!(!rates.allow("b", 1), "bytes exhausted");
    }

    #[test]
    fn tracked_installs_are_bounded() {
        let rates = LogRates::new(RateLimits::default());
        for i in 0..(MAX_INSTALLS + 10) {
            assert!(rates.allow(&format!("install-{i}"), 1));
        }
        assert!(rates.installs.lock().len() <= MAX_INSTALLS);
    }
}
