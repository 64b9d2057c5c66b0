//! Per-install token buckets (§3.1 step 4: 60 tokens, refilled 1/s, by
//! default). In-process: each edge replica enforces its own bucket, so a
//! fleet of N edges admits up to N times the rate; the control plane's
//! per-tenant quota shares narrow that in the fleet work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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
pub struct RateLimiter {
    settings: RateSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(settings: RateSettings) -> RateLimiter {
        RateLimiter {
            settings,
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `key`, or says after how many whole seconds (at
    /// least 1) one will be available.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let cap = f64::from(self.settings.capacity);
        let rate = self.settings.refill_per_sec;
        let mut buckets = self.buckets.lock();
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| b.tokens + rate * now.duration_since(b.at).as_secs_f64() < cap);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        let refilled = bucket.tokens + rate * now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = refilled.min(cap);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else if rate <= 0.0 {
            Err(3600)
        } else {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
            Err(wait.as_secs_f64().ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
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
