//! Execution quota enforcement shared by the edge and the control plane's
//! `Dispatch.Execute`: a token bucket ([`TokenBucket`]) and the per-tenant
//! and per-install gate ([`QuotaGate`]) over the shares the control plane
//! computes (this process's part of each fleet-wide limit).
//!
//! A gate holds one slot per quota: an in-flight counter and a token bucket
//! (burst of one second's share). [`QuotaGate::apply`] swaps in new shares
//! without losing the in-flight counts or bucket levels of quotas that stay,
//! so a change applies to the next request without a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

/// A token bucket; capacity and refill rate are passed on each take, so one
/// bucket follows changing limits.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(capacity: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: capacity,
            at: now,
        }
    }

    /// The level at `now` (refilled, capped), without taking.
    pub fn level(&self, capacity: f64, refill_per_sec: f64, now: Instant) -> f64 {
        (self.tokens + refill_per_sec * now.saturating_duration_since(self.at).as_secs_f64())
            .min(capacity)
    }

    /// Takes one token, or says after how many whole seconds (at least 1)
    /// one will be available.
    pub fn take(&mut self, capacity: f64, refill_per_sec: f64, now: Instant) -> Result<(), u64> {
        self.tokens = self.level(capacity, refill_per_sec, now);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if refill_per_sec <= 0.0 {
            Err(3600)
        } else {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / refill_per_sec);
            Err(wait.as_secs_f64().ceil().max(1.0) as u64)
        }
    }
}

/// This process's share of one quota; 0 = unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaShare {
    pub tenant_id: String,
    /// `None`: the tenant's quota over all of its installs.
    pub install_id: Option<String>,
    pub max_concurrency: u32,
    pub requests_per_second: u32,
}

/// Why a request was refused, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// Seconds, at least 1.
    pub retry_after: u64,
    /// Which limit refused it.
    pub limit: QuotaLimitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimitKind {
    Concurrency,
    Rate,
}

/// Retry-After for a refusal by concurrency: executions are short, so soon.
const CONCURRENCY_RETRY_AFTER: u64 = 1;

type Key = (String, Option<String>);

#[derive(Debug)]
struct Slot {
    limits: Mutex<(u32, u32)>,
    in_flight: AtomicU32,
    bucket: Mutex<TokenBucket>,
}

impl Slot {
    fn new(share: &QuotaShare, now: Instant) -> Slot {
        Slot {
            limits: Mutex::new((share.max_concurrency, share.requests_per_second)),
            in_flight: AtomicU32::new(0),
            bucket: Mutex::new(TokenBucket::full(f64::from(share.requests_per_second), now)),
        }
    }

    /// Counts one more in flight unless that passes the limit.
    fn enter(&self) -> bool {
        let max = self.limits.lock().0;
        let prev = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if max != 0 && prev >= max {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn take(&self, now: Instant) -> Result<(), u64> {
        let rps = self.limits.lock().1;
        if rps == 0 {
            return Ok(());
        }
        let rate = f64::from(rps);
        self.bucket.lock().take(rate, rate, now)
    }
}

/// The per-tenant and per-install limits of one process.
#[derive(Debug, Default)]
pub struct QuotaGate {
    slots: RwLock<HashMap<Key, Arc<Slot>>>,
}

/// Held while an admitted execution runs; dropping it releases its
/// concurrency slots.
#[derive(Debug)]
#[must_use = "the execution's concurrency slots are released when the permit drops"]
pub struct QuotaPermit {
    slots: Vec<Arc<Slot>>,
}

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        for slot in &self.slots {
            slot.leave();
        }
    }
}

impl QuotaGate {
    pub fn new() -> QuotaGate {
        QuotaGate::default()
    }

    /// Replaces the shares. Quotas that stay keep their in-flight count and
    /// bucket level (clamped to a lower new rate); removed ones stop
    /// limiting at once (permits still held release harmlessly).
    pub fn apply(&self, shares: impl IntoIterator<Item = QuotaShare>) {
        let now = Instant::now();
        let mut slots = self.slots.write();
        let mut next = HashMap::new();
        for share in shares {
            let key = (share.tenant_id.clone(), share.install_id.clone());
            let slot = match slots.remove(&key) {
                Some(slot) => {
                    let rate = f64::from(share.requests_per_second);
                    {
                        let mut bucket = slot.bucket.lock();
                        let (_, old_rps) = *slot.limits.lock();
                        // From unlimited: a full bucket, as for a new quota.
                        let level = if old_rps == 0 {
                            rate
                        } else {
                            bucket.level(f64::from(old_rps), f64::from(old_rps), now)
                        };
                        *bucket = TokenBucket {
                            tokens: level.min(rate),
                            at: now,
                        };
                    }
                    *slot.limits.lock() = (share.max_concurrency, share.requests_per_second);
                    slot
                }
                None => Arc::new(Slot::new(&share, now)),
            };
            next.insert(key, slot);
        }
        *slots = next;
    }

    /// Whether any quota is set (the edge skips the gate otherwise).
    pub fn is_empty(&self) -> bool {
        self.slots.read().is_empty()
    }

    /// Admits one execution of `install_id` for `tenant_id` under the
    /// tenant's quota and the install's, or refuses it.
    pub fn acquire(&self, tenant_id: &str, install_id: &str) -> Result<QuotaPermit, QuotaRefusal> {
        self.acquire_at(tenant_id, install_id, Instant::now())
    }

    fn acquire_at(
        &self,
        tenant_id: &str,
        install_id: &str,
        now: Instant,
    ) -> Result<QuotaPermit, QuotaRefusal> {
        let candidates: Vec<Arc<Slot>> = {
            let slots = self.slots.read();
            if slots.is_empty() {
                return Ok(QuotaPermit { slots: Vec::new() });
            }
            [
                (tenant_id.to_owned(), Some(install_id.to_owned())),
                (tenant_id.to_owned(), None),
            ]
            .iter()
            .filter_map(|k| slots.get(k).cloned())
            .collect()
        };
        let mut permit = QuotaPermit {
            slots: Vec::with_capacity(candidates.len()),
        };
        for slot in &candidates {
            if !slot.enter() {
                return Err(QuotaRefusal {
                    retry_after: CONCURRENCY_RETRY_AFTER,
                    limit: QuotaLimitKind::Concurrency,
                });
            }
            permit.slots.push(slot.clone());
        }
        for slot in &candidates {
            if let Err(retry_after) = slot.take(now) {
                return Err(QuotaRefusal {
                    retry_after,
                    limit: QuotaLimitKind::Rate,
                });
            }
        }
        Ok(permit)
    }

    /// Executions in flight under the tenant's quota (0 when it has none).
    pub fn in_flight(&self, tenant_id: &str, install_id: Option<&str>) -> u32 {
        self.slots
            .read()
            .get(&(tenant_id.to_owned(), install_id.map(str::to_owned)))
            .map_or(0, |s| s.in_flight.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(tenant: &str, install: Option<&str>, conc: u32, rps: u32) -> QuotaShare {
        QuotaShare {
            tenant_id: tenant.into(),
            install_id: install.map(Into::into),
            max_concurrency: conc,
            requests_per_second: rps,
        }
    }

    #[test]
    fn concurrency_is_held_until_the_permit_drops_and_other_tenants_pass() {
        let gate = QuotaGate::new();
        gate.apply([share("t1", None, 2, 0)]);
        let a = gate.acquire("t1", "i1").expect("first");
        let b = gate.acquire("t1", "i2").expect("second");
        let refused = gate.acquire("t1", "i1").expect_err("third is over");
        assert_eq!(refused.limit, QuotaLimitKind::Concurrency);
        assert_eq!(refused.retry_after, 1);
        // Another tenant has no quota and is never limited.
        let _others: Vec<_> = (0..10)
            .map(|_| gate.acquire("t2", "i9").expect("t2"))
            .collect();
        drop(a);
        let c = gate.acquire("t1", "i1").expect("a slot was released");
        assert_eq!(gate.in_flight("t1", None), 2);
        drop((b, c));
        assert_eq!(gate.in_flight("t1", None), 0);
    }

    #[test]
    fn install_quota_applies_within_the_tenant_quota() {
        let gate = QuotaGate::new();
        gate.apply([share("t", None, 3, 0), share("t", Some("i1"), 1, 0)]);
        let _one = gate.acquire("t", "i1").expect("i1 first");
        assert!(gate.acquire("t", "i1").is_err(), "i1 is limited to 1");
        // The refused call did not keep a tenant slot.
        let _two = gate.acquire("t", "i2").expect("i2");
        let _three = gate.acquire("t", "i2").expect("i2 again");
        assert!(gate.acquire("t", "i2").is_err(), "tenant limited to 3");
        assert_eq!(gate.in_flight("t", None), 3);
        assert_eq!(gate.in_flight("t", Some("i1")), 1);
    }

    #[test]
    fn rate_refuses_with_retry_after_and_refills() {
        let gate = QuotaGate::new();
        gate.apply([share("t", None, 0, 2)]);
        let t0 = Instant::now();
        drop(gate.acquire_at("t", "i", t0).expect("1"));
        drop(gate.acquire_at("t", "i", t0).expect("2"));
        let refused = gate.acquire_at("t", "i", t0).expect_err("bucket empty");
        assert_eq!(refused.limit, QuotaLimitKind::Rate);
        assert_eq!(refused.retry_after, 1);
        // A refusal by rate does not leak a concurrency count.
        assert_eq!(gate.in_flight("t", None), 0);
        drop(
            gate.acquire_at("t", "i", t0 + Duration::from_millis(600))
                .expect("refilled"),
        );
    }

    #[test]
    fn new_shares_apply_at_once_and_keep_in_flight_counts() {
        let gate = QuotaGate::new();
        gate.apply([share("t", None, 1, 0)]);
        let held = gate.acquire("t", "i").expect("first");
        assert!(gate.acquire("t", "i").is_err());
        // Raised: one more fits beside the one still running.
        gate.apply([share("t", None, 2, 0)]);
        let second = gate.acquire("t", "i").expect("raised");
        assert!(gate.acquire("t", "i").is_err());
        // Lowered below what runs: nothing new until both finish.
        gate.apply([share("t", None, 1, 0)]);
        drop(held);
        assert!(gate.acquire("t", "i").is_err(), "one still runs at limit 1");
        drop(second);
        let _ok = gate.acquire("t", "i").expect("room again");
        // Removed: unlimited.
        gate.apply([]);
        assert!(gate.is_empty());
        let _many: Vec<_> = (0..5)
            .map(|_| gate.acquire("t", "i").expect("free"))
            .collect();
    }

    #[test]
    fn bucket_reports_whole_seconds() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(1.0, t0);
        assert_eq!(b.take(1.0, 0.5, t0), Ok(()));
        assert_eq!(b.take(1.0, 0.5, t0), Err(2));
        assert_eq!(b.take(1.0, 0.0, t0), Err(3600));
    }
}
