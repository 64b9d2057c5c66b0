//! Per-install token buckets (Alga's: 60 tokens, refilled 1/s, by default;
//! docs/design/alga-compatibility.md, "Gateway"). In-process: each edge replica enforces its own bucket, so a
//! fleet of N edges admits up to N times the rate. Fleet-wide quotas set
//! through the control plane are enforced by [`crate::quota`].

use std::collections::HashMap;
use std::time::Instant;

use annex_ops::quota::TokenBucket;
use parking_lot::Mutex;

/// Buckets kept before idle, full ones are dropped.
const PRUNE_AT: usize = 50_000;

#[derive(Debug, Clone, Copy)]
pub struct RateSettings {
    pub capacity: u32,
    pub refill_per_sec: f64,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings {
            capacity: 60,
            refill_per_sec: 1.0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    settings: RateSettings,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl RateLimiter {
    pub(crate) fn new(settings: RateSettings) -> RateLimiter {
        RateLimiter {
            settings,
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `key`, or says after how many whole seconds (at
    /// least 1) one will be available.
    pub(crate) fn take(&self, key: &str) -> Result<(), u64> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let cap = f64::from(self.settings.capacity);
        let rate = self.settings.refill_per_sec;
        let mut buckets = self.buckets.lock();
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| b.level(cap, rate, now) < cap);
        }
        buckets
            .entry(key.to_owned())
            .or_insert_with(|| TokenBucket::full(cap, now))
            .take(cap, rate, now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_empties_refills_and_reports_retry_after() {
        let rl = RateLimiter::new(RateSettings {
            capacity: 3,
            refill_per_sec: 0.5,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.take_at("a", t0), Ok(()));
        }
        assert_eq!(rl.take_at("a", t0), Err(2));
        // Another install has its own bucket.
        assert_eq!(rl.take_at("b", t0), Ok(()));
        assert_eq!(rl.take_at("a", t0 + Duration::from_millis(1500)), Err(1));
        assert_eq!(rl.take_at("a", t0 + Duration::from_secs(2)), Ok(()));
        // Refill never exceeds capacity.
        let later = t0 + Duration::from_secs(1000);
        for _ in 0..3 {
            assert_eq!(rl.take_at("a", later), Ok(()));
        }
        assert!(rl.take_at("a", later).is_err());
    }
}
