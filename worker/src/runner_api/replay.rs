//! Idempotent replay for the runner API: the answer of an execution whose
//! guest answered is kept under (tenant, extension, install, key) and
//! replayed for a repeated `x-idempotency-key`, so the guest does not run
//! twice. Alga's runner keeps one map for every tenant, unbounded and
//! forever; here the scope includes tenant and install, the store is
//! bounded in entries and bytes (least recently used first out) and an
//! answer expires after a TTL (docs/design/differences.md, "Idempotency
//! keys are scoped per install").
//!
//! A duplicate that arrives while the first call runs waits for it (up to
//! its own time limit) instead of running the guest a second time; if the
//! first ends without a stored answer, one waiter runs. The store is this
//! process's memory: it does not span workers.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::watch;

/// Bounds of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayConfig {
    max_entries: NonZeroUsize,
    max_bytes: usize,
    ttl: Duration,
}

impl ReplayConfig {
    /// `None` when a bound is zero.
    pub(crate) fn new(max_entries: usize, max_bytes: usize, ttl: Duration) -> Option<ReplayConfig> {
        (max_bytes > 0 && !ttl.is_zero()).then_some(())?;
        Some(ReplayConfig {
            max_entries: NonZeroUsize::new(max_entries)?,
            max_bytes,
            ttl,
        })
    }
}

/// What a key is scoped to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Scope {
    pub(crate) tenant: String,
    pub(crate) extension: String,
    pub(crate) install: String,
    pub(crate) key: String,
}

enum Entry {
    /// The first call is running; waiters watch until its sender drops.
    Running(watch::Receiver<()>),
    Done {
        answer: Bytes,
        stored: Instant,
    },
}

struct State {
    entries: LruCache<Scope, Entry>,
    bytes: usize,
}

/// The replay store.
pub(crate) struct Replays {
    config: ReplayConfig,
    state: Mutex<State>,
}

/// What a call with a key does.
pub(crate) enum Claim {
    /// The stored answer.
    Replay(Bytes),
    /// Run; [`Running::store`] the answer if the guest answered. `None`
    /// when a duplicate waited its whole time limit and runs anyway.
    Run(Option<Running>),
}

/// The first call for a scope; dropping it without storing lets a waiter run.
pub(crate) struct Running {
    replays: Arc<Replays>,
    scope: Scope,
    _done: watch::Sender<()>,
}

impl Replays {
    pub(crate) fn new(config: ReplayConfig) -> Replays {
        Replays {
            config,
            state: Mutex::new(State {
                entries: LruCache::new(config.max_entries),
                bytes: 0,
            }),
        }
    }

    /// The stored answer for `scope`, or the right to run (after waiting up
    /// to `wait` for a call already running with the same scope).
    pub(crate) async fn claim(self: &Arc<Self>, scope: Scope, wait: Duration) -> Claim {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut running = match self.try_claim(&scope) {
                Ok(claim) => return claim,
                Err(running) => running,
            };
            // Ends when the first call stores its answer or gives up.
            let ended = tokio::time::timeout_at(deadline, running.changed()).await;
            if ended.is_err() {
                tracing::warn!(tenant = %scope.tenant, extension = %scope.extension,
                    "idempotent duplicate waited its whole time limit; running it");
                return Claim::Run(None);
            }
        }
    }

    /// `Err` with the running call's watch when one is running.
    fn try_claim(self: &Arc<Self>, scope: &Scope) -> Result<Claim, watch::Receiver<()>> {
        let mut state = self.state.lock();
        match state.entries.get(scope) {
            Some(Entry::Running(rx)) => return Err(rx.clone()),
            Some(Entry::Done { answer, stored }) if stored.elapsed() < self.config.ttl => {
                return Ok(Claim::Replay(answer.clone()));
            }
            _ => {}
        }
        let (tx, rx) = watch::channel(());
        state.remove(scope);
        state.insert(scope.clone(), Entry::Running(rx));
        Ok(Claim::Run(Some(Running {
            replays: self.clone(),
            scope: scope.clone(),
            _done: tx,
        })))
    }

    /// Answers stored now (expired ones included until pushed out).
    #[cfg(test)]
    fn stored(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.entries.len(), state.bytes)
    }
}

impl State {
    fn remove(&mut self, scope: &Scope) {
        if let Some(Entry::Done { answer, .. }) = self.entries.pop(scope) {
            self.bytes -= answer.len();
        }
    }

    fn insert(&mut self, scope: Scope, entry: Entry) {
        if let Some((_, Entry::Done { answer, .. })) = self.entries.push(scope, entry) {
            self.bytes -= answer.len();
        }
    }
}

impl Running {
    /// Keeps `answer` for replay (unless it alone exceeds the byte bound),
    /// pushing out expired and then least recently used answers.
    pub(crate) fn store(self, answer: Bytes) {
        let config = self.replays.config;
        let mut state = self.replays.state.lock();
        state.remove(&self.scope);
        if answer.len() > config.max_bytes {
            tracing::warn!(bytes = answer.len(), tenant = %self.scope.tenant,
                "answer larger than the idempotency store; not kept for replay");
            return;
        }
        while state.bytes + answer.len() > config.max_bytes {
            let Some((_, old)) = state.entries.pop_lru() else {
                break;
            };
            if let Entry::Done { answer, .. } = old {
                state.bytes -= answer.len();
            }
        }
        state.bytes += answer.len();
        let entry = Entry::Done {
            answer,
            stored: Instant::now(),
        };
        state.insert(self.scope.clone(), entry);
    }
}

impl Drop for Running {
    /// A call that ends without storing frees its scope (its watch sender
    /// drops with it and wakes the waiters).
    fn drop(&mut self) {
        let mut state = self.replays.state.lock();
        if matches!(state.entries.peek(&self.scope), Some(Entry::Running(_))) {
            state.entries.pop(&self.scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(tenant: &str, key: &str) -> Scope {
        Scope {
            tenant: tenant.into(),
            extension: "e".into(),
            install: "i".into(),
            key: key.into(),
        }
    }

    fn replays(entries: usize, bytes: usize) -> Arc<Replays> {
        Arc::new(Replays::new(
            ReplayConfig::new(entries, bytes, Duration::from_secs(60)).expect("valid"),
        ))
    }

    async fn run(r: &Arc<Replays>, s: Scope) -> Running {
        match r.claim(s, Duration::from_secs(1)).await {
            Claim::Run(Some(running)) => running,
            _ => panic!("expected to run"),
        }
    }

    #[tokio::test]
    async fn a_stored_answer_replays_only_in_its_scope() {
        let r = replays(10, 1024);
        run(&r, scope("t1", "k"))
            .await
            .store(Bytes::from_static(b"one"));
        match r.claim(scope("t1", "k"), Duration::ZERO).await {
            Claim::Replay(b) => assert_eq!(&b[..], b"one"),
            Claim::Run(_) => panic!("expected a replay"),
        }
        // Another tenant with the same key runs.
        drop(run(&r, scope("t2", "k")).await);
    }

    #[tokio::test]
    async fn a_duplicate_waits_for_the_first_call() {
        let r = replays(10, 1024);
        let first = run(&r, scope("t", "k")).await;
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.claim(scope("t", "k"), Duration::from_secs(30)).await }
        });
        first.store(Bytes::from_static(b"answer"));
        match waiter.await.expect("joins") {
            Claim::Replay(b) => assert_eq!(&b[..], b"answer"),
            Claim::Run(_) => panic!("the duplicate ran"),
        }
    }

    #[tokio::test]
    async fn a_first_call_that_stores_nothing_lets_one_waiter_run() {
        let r = replays(10, 1024);
        let first = run(&r, scope("t", "k")).await;
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.claim(scope("t", "k"), Duration::from_secs(30)).await }
        });
        drop(first);
        assert!(matches!(waiter.await.expect("joins"), Claim::Run(Some(_))));
    }

    #[tokio::test]
    async fn the_store_is_bounded_in_entries_and_bytes() {
        let r = replays(2, 10);
        for k in ["a", "b", "c"] {
            run(&r, scope("t", k))
                .await
                .store(Bytes::from_static(b"1234"));
        }
        assert_eq!(r.stored(), (2, 8));
        run(&r, scope("t", "d"))
            .await
            .store(Bytes::from_static(b"123456789"));
        assert_eq!(r.stored(), (1, 9));
        run(&r, scope("t", "e"))
            .await
            .store(Bytes::from(vec![0; 11]));
        assert_eq!(r.stored(), (1, 9), "an answer over the bound is not kept");
    }

    #[tokio::test]
    async fn expired_answers_are_not_replayed() {
        let r = Arc::new(Replays::new(
            ReplayConfig::new(10, 1024, Duration::from_nanos(1)).expect("valid"),
        ));
        run(&r, scope("t", "k"))
            .await
            .store(Bytes::from_static(b"old"));
        std::thread::sleep(Duration::from_millis(1));
        assert!(matches!(
            r.claim(scope("t", "k"), Duration::ZERO).await,
            Claim::Run(Some(_))
        ));
    }
}
