//! [`MemoryStore`]: the [`Store`](super::Store) on plain collections behind one
//! mutex, for unit tests and for `annex dev` when no Postgres binaries are
//! installed.
//!
//! It keeps the semantics of [`PgStore`](super::PgStore) exactly (the
//! conformance suite runs against both): one lock over every area's tables
//! makes each operation a transaction, including the checks and cascades that
//! Postgres does with foreign keys; timestamps have Postgres's microsecond
//! resolution; orderings compare bytes as Postgres's `COLLATE "C"` does.
//! Nothing survives the process.
//!
//! Layout: this file owns the lock, the clock and the health check; each
//! area's file (named as in `store/` and `pg/`) holds that area's tables and
//! implements its trait.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::{Mutex, MutexGuard};

use super::{HealthStore, StoreResult};

mod apikeys;
mod blobs;
mod captures;
mod executions;
mod fleet;
mod idempotency;
mod installs;
mod kv;
mod logs;
mod quota;
mod registry;
mod rollouts;
mod schedules;
mod trust;

/// The in-memory store. Cheap to create; share it behind an `Arc`.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The one lock; never held across an await.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
}

/// Every area's tables.
#[derive(Default)]
struct State {
    /// The last timestamp handed out; see [`State::now`].
    last_now: Option<DateTime<Utc>>,
    registry: registry::Registry,
    blobs: blobs::Blobs,
    trust: trust::Trust,
    installs: installs::Installs,
    kv: kv::Kv,
    schedules: schedules::Schedules,
    fleet: fleet::Fleet,
    quotas: quota::Quotas,
    api_keys: apikeys::ApiKeys,
    executions: executions::Executions,
    logs: logs::Logs,
    idempotency: idempotency::Idempotency,
    rollouts: rollouts::Rollouts,
    captures: captures::Captures,
}

impl State {
    /// Now, truncated to microseconds like a Postgres `timestamptz`, and strictly
    /// after the previous call so "newest first" orderings never tie.
    fn now(&mut self) -> DateTime<Utc> {
        let wall = micros(Utc::now());
        let now = match self.last_now {
            Some(last) if wall <= last => last + TimeDelta::microseconds(1),
            _ => wall,
        };
        self.last_now = Some(now);
        now
    }
}

/// `t` at the resolution of a Postgres `timestamptz`: callers pass their own
/// clock's times, which Postgres would truncate on the way in.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

#[async_trait]
impl HealthStore for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}
