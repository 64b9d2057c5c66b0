//! Admission in front of the engine: a worker-wide capacity, a per-tenant
//! concurrency limit, and a fair queue. When a slot frees, the next waiter
//! is taken round-robin across tenants that have waiters and are under
//! their own limit, so one tenant's burst (or its stuck guests) cannot
//! starve the others. Queues are bounded; a full queue or a wait past the
//! caller's deadline is a rejection.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Admission limits.
#[derive(Debug, Clone)]
pub(crate) struct AdmissionConfig {
    /// Executions running at once on this worker. Bounded by the pool's
    /// component instances; 2 cores gain nothing from more runnable guests,
    /// but guests awaiting host calls hold a slot without using a core.
    pub(crate) capacity: usize,
    /// Executions of one tenant running at once.
    pub(crate) per_tenant: usize,
    /// Waiters per tenant before new requests are refused.
    pub(crate) queue_per_tenant: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            capacity: 64,
            per_tenant: 16,
            queue_per_tenant: 256,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("the tenant's queue is full")]
    QueueFull,
    #[error("waited too long for an execution slot")]
    WaitTimeout,
}

#[derive(Default)]
struct TenantState {
    running: usize,
    waiters: VecDeque<oneshot::Sender<()>>,
}

#[derive(Default)]
struct State {
    running: usize,
    tenants: HashMap<String, TenantState>,
    /// Tenants with waiters, in service order.
    ring: VecDeque<String>,
}

/// The admission controller.
pub struct Admission {
    config: AdmissionConfig,
    state: Mutex<State>,
}

/// A held execution slot; released on drop.
pub(crate) struct Permit {
    admission: Arc<Admission>,
    tenant: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(&self.tenant);
    }
}

impl Admission {
    pub(crate) fn new(config: AdmissionConfig) -> Arc<Admission> {
        Arc::new(Admission {
            config,
            state: Mutex::new(State::default()),
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// Executions currently holding a slot.
    pub fn running(&self) -> usize {
        self.state.lock().running
    }

    /// Waits for a slot for `tenant`, at most `max_wait`.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        max_wait: Duration,
    ) -> Result<Permit, Refused> {
        let rx = {
            let mut st = self.state.lock();
            let running = st.running;
            let t = st.tenants.entry(tenant.to_string()).or_default();
            if running < self.config.capacity
                && t.running < self.config.per_tenant
                && t.waiters.is_empty()
            {
                t.running += 1;
                st.running += 1;
                return Ok(self.permit(tenant));
            }
            if t.waiters.len() >= self.config.queue_per_tenant {
                return Err(Refused::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            t.waiters.push_back(tx);
            if !st.ring.iter().any(|x| x == tenant) {
                st.ring.push_back(tenant.to_string());
            }
            rx
        };
        let mut rx = rx;
        match tokio::time::timeout(max_wait, &mut rx).await {
            Ok(Ok(())) => Ok(self.permit(tenant)),
            Ok(Err(_)) => Err(Refused::WaitTimeout),
            Err(_) => {
                // A slot may have been granted just as the wait ended: take
                // it and give it back so the counters stay right.
                rx.close();
                if rx.try_recv().is_ok() {
                    drop(self.permit(tenant));
                }
                Err(Refused::WaitTimeout)
            }
        }
    }

    fn permit(self: &Arc<Self>, tenant: &str) -> Permit {
        Permit {
            admission: self.clone(),
            tenant: tenant.to_string(),
        }
    }

    fn release(&self, tenant: &str) {
        let mut st = self.state.lock();
        st.running = st.running.saturating_sub(1);
        if let Some(t) = st.tenants.get_mut(tenant) {
            t.running = t.running.saturating_sub(1);
        }
        self.dispatch(&mut st);
        if st
            .tenants
            .get(tenant)
            .is_some_and(|t| t.running == 0 && t.waiters.is_empty())
        {
            st.tenants.remove(tenant);
        }
    }

    /// Hands free slots to waiters, round-robin over tenants.
    fn dispatch(&self, st: &mut State) {
        let mut skipped = 0;
        while st.running < self.config.capacity && skipped < st.ring.len() {
            let Some(tenant) = st.ring.pop_front() else {
                break;
            };
            let per_tenant = self.config.per_tenant;
            let Some(t) = st.tenants.get_mut(&tenant) else {
                continue;
            };
            if t.running >= per_tenant {
                st.ring.push_back(tenant);
                skipped += 1;
                continue;
            }
            let mut granted = false;
            while let Some(tx) = t.waiters.pop_front() {
                if tx.send(()).is_ok() {
                    granted = true;
                    break;
                }
            }
            let more = !t.waiters.is_empty();
            if granted {
                t.running += 1;
                st.running += 1;
                skipped = 0;
            }
            if more {
                st.ring.push_back(tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(capacity: usize, per_tenant: usize) -> AdmissionConfig {
        AdmissionConfig {
            capacity,
            per_tenant,
            queue_per_tenant: 4,
        }
    }

    #[tokio::test]
    async fn a_busy_tenant_does_not_block_another() {
        let a = Admission::new(config(4, 1));
        let _held = a
            .acquire("t1", Duration::from_secs(1))
            .await
            .expect("first");
        let refused = a.acquire("t1", Duration::from_millis(20)).await;
        assert_eq!(refused.err(), Some(Refused::WaitTimeout));
        let other = a.acquire("t2", Duration::from_millis(20)).await;
        assert!(other.is_ok());
    }

    #[tokio::test]
    async fn freed_slots_go_round_robin_across_tenants() {
        let a = Admission::new(config(1, 1));
        let first = a
            .acquire("t1", Duration::from_secs(1))
            .await
            .expect("first");
        let (a1, a2) = (a.clone(), a.clone());
        let w1 =
            tokio::spawn(async move { a1.acquire("t1", Duration::from_secs(5)).await.map(drop) });
        // Let t1's waiter queue first.
        while a.state.lock().ring.is_empty() {
            tokio::task::yield_now().await;
        }
        let w2 = tokio::spawn(async move { a2.acquire("t2", Duration::from_secs(5)).await });
        while a.state.lock().ring.len() < 2 {
            tokio::task::yield_now().await;
        }
        drop(first);
        // t1 was first in the ring; after it, t2 gets the slot.
        assert!(w1.await.expect("join").is_ok());
        assert!(w2.await.expect("join").is_ok());
        assert_eq!(a.running(), 0);
    }

    #[tokio::test]
    async fn queue_is_bounded() {
        let a = Admission::new(config(1, 1));
        let _held = a.acquire("t", Duration::from_secs(1)).await.expect("held");
        let mut waiters = Vec::new();
        for _ in 0..4 {
            let a = a.clone();
            waiters.push(tokio::spawn(async move {
                a.acquire("t", Duration::from_secs(5)).await.map(drop)
            }));
        }
        while a
            .state
            .lock()
            .tenants
            .get("t")
            .map_or(0, |t| t.waiters.len())
            < 4
        {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            a.acquire("t", Duration::from_secs(1)).await.err(),
            Some(Refused::QueueFull)
        );
        drop(_held);
        for w in waiters {
            assert!(w.await.expect("join").is_ok());
        }
    }
}
