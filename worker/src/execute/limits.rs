//! Per-request limits: the platform's defaults and ceilings
//! ([`Limits`], part of the worker's settings) and what one request gets
//! ([`Budget`]) from the limits it sent. A request's zero means "not set"
//! (Alga's gateway leaves fields unset rather than sending zero budgets).
//! Pure values; nothing here runs or waits.

use std::time::Duration;

use annex_proto::pb;

/// Platform defaults and ceilings for per-request limits.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Used when a request sends `timeout_ms = 0` (Alga's gateway sends
    /// 30,000; a missing value is never an immediate trap here).
    pub(crate) default_timeout: Duration,
    /// Requests asking for more get this.
    pub(crate) max_timeout: Duration,
    /// Used when a request sends `memory_mb = 0` (Alga's default, 256 MiB).
    pub(crate) default_memory_mb: u32,
    /// Requests asking for more get this; never above the pool's
    /// `max_memory_size`.
    pub(crate) max_memory_mb: u32,
    /// Used when a request sends `max_response_bytes = 0`. 8 MiB: above
    /// Alga's effective ~1.5 MiB request bodies, far below worker memory.
    pub(crate) default_max_response_bytes: u64,
    /// Requests asking for more get this: 32 MiB keeps every answer well
    /// inside the 64 MiB gRPC message limit of the worker and its callers.
    pub(crate) max_response_bytes: u64,
    /// How long a request may wait in the admission queue at most (it also
    /// never waits longer than its own timeout).
    pub(crate) max_queue_wait: Duration,
    /// Threads of the guest runtime: one per core by default, so guests
    /// can use every core while gRPC I/O stays on its own runtime.
    pub(crate) guest_threads: usize,
    /// How long the idempotency record of a running keyed call is held
    /// without a renewal (renewed every third of it while the call runs):
    /// how long a repeat waits after a worker died mid-call.
    pub(crate) idempotency_lease: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            default_memory_mb: 256,
            max_memory_mb: 1024,
            default_max_response_bytes: 8 * 1024 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
            max_queue_wait: Duration::from_secs(10),
            guest_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            idempotency_lease: Duration::from_secs(10),
        }
    }
}

/// What one execution may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Wall time of the guest call.
    pub(crate) timeout: Duration,
    pub(crate) memory_bytes: usize,
    pub(crate) max_response_bytes: u64,
    /// Fuel, when the request sent a budget (only used on a metering engine).
    pub(crate) fuel: Option<u64>,
}

impl Limits {
    /// The budget for a request that sent `requested`.
    pub(crate) fn budget(&self, requested: &pb::Limits) -> Budget {
        let timeout = match requested.timeout_ms {
            0 => self.default_timeout,
            ms => Duration::from_millis(u64::from(ms)).min(self.max_timeout),
        };
        let memory_mb = match requested.memory_mb {
            0 => self.default_memory_mb,
            mb => mb.min(self.max_memory_mb),
        };
        let max_response_bytes = match requested.max_response_bytes {
            0 => self.default_max_response_bytes,
            n => n,
        }
        .min(self.max_response_bytes);
        Budget {
            timeout,
            memory_bytes: usize::try_from(u64::from(memory_mb) * 1024 * 1024).unwrap_or(usize::MAX),
            max_response_bytes,
            fuel: requested.fuel,
        }
    }

    /// How long a request with `budget` may wait for an execution slot.
    pub(crate) fn queue_wait(&self, budget: &Budget) -> Duration {
        budget.timeout.min(self.max_queue_wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_limits_get_platform_defaults() {
        let limits = Limits::default();
        let budget = limits.budget(&pb::Limits::default());
        assert_eq!(budget.timeout, limits.default_timeout);
        assert_eq!(budget.memory_bytes, 256 * 1024 * 1024);
        assert_eq!(budget.max_response_bytes, limits.default_max_response_bytes);
        assert_eq!(budget.fuel, None);
    }

    #[test]
    fn requests_are_capped_at_the_ceilings() {
        let limits = Limits::default();
        let budget = limits.budget(&pb::Limits {
            timeout_ms: u32::MAX,
            memory_mb: u32::MAX,
            max_response_bytes: u64::MAX,
            ..Default::default()
        });
        assert_eq!(budget.timeout, limits.max_timeout);
        assert_eq!(budget.memory_bytes, 1024 * 1024 * 1024);
        assert_eq!(budget.max_response_bytes, 32 * 1024 * 1024);
        assert_eq!(limits.queue_wait(&budget), limits.max_queue_wait);
    }
}
