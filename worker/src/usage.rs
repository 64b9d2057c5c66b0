//! Per-(tenant, extension) usage per minute, reported to the control plane
//! in heartbeats for quota accounting. Bounded: at most [`MAX_KEYS`]
//! (tenant, extension, minute) entries are kept between two drains; beyond
//! that new keys are dropped and counted.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use annex_proto::pb;
use parking_lot::Mutex;

/// Entries kept between two heartbeats.
pub(crate) const MAX_KEYS: usize = 10_000;

#[derive(Debug, Default)]
struct Ledger {
    entries: HashMap<(String, String, i64), pb::ExecutionUsage>,
    dropped: u64,
}

/// What one execution used.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Used {
    pub wall_us: u64,
    /// Thread CPU time of the guest's polls.
    pub cpu_us: u64,
    pub peak_memory_bytes: u64,
    pub egress_bytes: u64,
    pub fuel: u64,
}

#[derive(Debug, Default)]
pub(crate) struct UsageLedger(Mutex<Ledger>);

impl UsageLedger {
    pub(crate) fn record(&self, tenant: &str, extension: &str, used: Used) {
        let window = minute_start_ms();
        let mut l = self.0.lock();
        let key = (tenant.to_string(), extension.to_string(), window);
        if !l.entries.contains_key(&key) && l.entries.len() >= MAX_KEYS {
            l.dropped += 1;
            return;
        }
        let e = l.entries.entry(key).or_insert_with(|| pb::ExecutionUsage {
            tenant_id: tenant.to_string(),
            registry_id: extension.to_string(),
            window_start_ms: window,
            ..Default::default()
        });
        e.invocations += 1;
        e.cpu_us += used.cpu_us;
        e.memory_byte_ms += used.peak_memory_bytes.saturating_mul(used.wall_us) / 1000;
        e.egress_bytes += used.egress_bytes;
        e.fuel += used.fuel;
    }

    /// Takes everything recorded so far.
    pub(crate) fn drain(&self) -> Vec<pb::ExecutionUsage> {
        let mut l = self.0.lock();
        if l.dropped > 0 {
            tracing::warn!(
                dropped = l.dropped,
                "usage ledger was full; some executions were not accounted"
            );
            l.dropped = 0;
        }
        l.entries.drain().map(|(_, v)| v).collect()
    }
}

fn minute_start_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    ms - ms.rem_euclid(60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_up_per_tenant_and_extension() {
        let ledger = UsageLedger::default();
        let used = Used {
            wall_us: 2_000,
            cpu_us: 1_500,
            peak_memory_bytes: 1_000_000,
            egress_bytes: 10,
            fuel: 0,
        };
        ledger.record("t", "e", used);
        ledger.record("t", "e", used);
        ledger.record("t2", "e", used);
        let mut all = ledger.drain();
        all.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].invocations, 2);
        assert_eq!(all[0].egress_bytes, 20);
        assert_eq!(all[0].cpu_us, 3_000);
        assert_eq!(all[0].memory_byte_ms, 4_000_000);
        assert!(ledger.drain().is_empty());
    }
}
