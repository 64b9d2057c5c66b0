//! The compile queue: every `Component::new` of the worker runs through it,
//! on a blocking thread, with at most `concurrency` compiles at once and
//! their estimated memory within a budget, in arrival order. It logs each
//! compile ("queued", "compiling", "compiled" with the component digest,
//! size and duration) and keeps the queue's metrics.
//!
//! Why: installing 26 JavaScript extensions at once made one worker compile
//! all of them together (minutes, gigabytes of resident memory on 2 cores,
//! every call timing out meanwhile). One compile already uses every core
//! (Wasmtime's parallel compilation), so running several at once only adds
//! memory. This module does not decide what to compile or cache.
//!
//! Both compiler tiers share the queue (one compile at a time uses every
//! core either way); each tier keeps its own compile-time estimate. A
//! compile a call waits for goes before a background one (tiering's
//! Cranelift compile of a component Winch code already serves): a
//! background compile that gets its turn while a call's compile waits gives
//! it up and queues again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annex_bundle::ContentHash;
use tokio::sync::Semaphore;
use wasmtime::component::Component;

use super::CacheError;
use crate::engine::{Tier, WasmEngine};
use crate::metrics::{CompileMetrics, TierLabel};

const MIB: u64 = 1024 * 1024;

/// How compiles are bounded, and how long a call waits for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileSettings {
    /// Compiles running at once ([`default_concurrency`]).
    pub concurrency: usize,
    /// Estimated compile memory ([`estimated_memory`]) allowed at once. A
    /// compile estimated above the budget still runs, alone.
    pub memory_budget_bytes: u64,
    /// How long a call waits for its component before it is answered
    /// `COMPONENT_COMPILING` (a nearly finished compile is worth a short
    /// wait; a 5–7 s JavaScript compile is not worth a 30 s one).
    pub wait: Duration,
    /// Whether a large component is first compiled with Winch.
    pub tiering: Tiering,
    /// Components smaller than this go straight to Cranelift under
    /// [`Tiering::WinchThenCranelift`]: their Cranelift compile is already
    /// quick (the 42 KB Rust hello: 33 ms).
    pub winch_min_bytes: u64,
    /// Benchmarks only: never start the background Cranelift compile, so
    /// Winch code keeps serving (to measure it).
    #[cfg(feature = "testing")]
    pub hold_winch: bool,
}

/// How a component missing from every cache is compiled
/// (docs/design/wasmtime.md, "Compile tiering").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tiering {
    /// Winch first (served at once), Cranelift in the background through
    /// the queue, then swapped in; only Cranelift's artifact is stored.
    #[default]
    WinchThenCranelift,
    /// Cranelift only: the first call waits for the optimizing compile.
    Cranelift,
}

impl CompileSettings {
    /// Whether a Winch-compiled component is upgraded to Cranelift.
    pub(crate) fn upgrades(&self) -> bool {
        #[cfg(feature = "testing")]
        return !self.hold_winch;
        #[cfg(not(feature = "testing"))]
        true
    }
}

impl Tiering {
    /// Whether the worker needs a Winch engine.
    pub(crate) fn uses_winch(self) -> bool {
        self == Tiering::WinchThenCranelift
    }
}

/// Below this size `winch_min_bytes` sends components straight to
/// Cranelift by default (BENCHMARKS.md, "Compile tiering").
pub const DEFAULT_WINCH_MIN_BYTES: u64 = MIB;

impl Default for CompileSettings {
    fn default() -> Self {
        CompileSettings {
            concurrency: default_concurrency(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            // One large JavaScript compile (≈ 470 MiB estimated for 12 MB)
            // fits, two do not; small Rust guests (a few MiB) run beside it.
            memory_budget_bytes: 768 * MIB,
            wait: Duration::from_secs(2),
            tiering: Tiering::default(),
            winch_min_bytes: DEFAULT_WINCH_MIN_BYTES,
            #[cfg(feature = "testing")]
            hold_winch: false,
        }
    }
}

/// One compile at a time up to two cores (a compile already uses every
/// core), half the cores beyond that.
pub(crate) fn default_concurrency(cores: usize) -> usize {
    if cores <= 2 { 1 } else { (cores / 2).max(1) }
}

/// Estimated peak memory of compiling a component of `size` bytes: 11.8 MB
/// JavaScript components peaked at 370–420 MB (docs/design/wasmtime.md,
/// "Compile and load"), about 35 times their size, plus a fixed part.
pub(crate) fn estimated_memory(size: u64) -> u64 {
    32 * MIB + size.saturating_mul(36)
}

/// Whether a caller waits for a compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// A call (or a prewarm) waits for it.
    Call,
    /// Nobody waits: tiering's Cranelift compile of a component Winch code
    /// already serves.
    Background,
}

/// How long a background compile that gave its turn up waits before it
/// queues again.
const YIELD_PAUSE: Duration = Duration::from_millis(20);

/// What the queue holds right now, and the most compiles that ever ran at
/// once (for tests and `Worker.Stats`-style reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompileStats {
    pub queued: usize,
    pub running: usize,
    pub peak_running: usize,
    /// Components compiled to the final tier (Cranelift) by this process.
    pub compiles: u64,
    /// Components compiled with Winch by this process.
    pub winch_compiles: u64,
}

/// The bounded, ordered queue every compile goes through.
pub(crate) struct CompileQueue {
    slots: Semaphore,
    concurrency: usize,
    /// Permits are MiB of estimated compile memory.
    memory: Semaphore,
    budget_mib: u32,
    metrics: CompileMetrics,
    queued: AtomicUsize,
    running: AtomicUsize,
    peak_running: AtomicUsize,
    /// Compiles that calls wait for, queued and not yet started.
    urgent_waiting: AtomicUsize,
    /// Compiles that produced a component, per tier ([`slot`]).
    compiles: [AtomicU64; 2],
    /// Component bytes queued or compiling per tier, for
    /// [`CompileQueue::retry_after`].
    pending_bytes: [AtomicU64; 2],
    /// Compile time per byte per tier, a moving average (nanoseconds per
    /// KiB).
    nanos_per_kib: [AtomicU64; 2],
}

/// A tier's index in the queue's per-tier figures.
fn slot(tier: Tier) -> usize {
    match tier {
        Tier::Cranelift => 0,
        Tier::Winch => 1,
    }
}

impl CompileQueue {
    pub(crate) fn new(settings: &CompileSettings, metrics: CompileMetrics) -> CompileQueue {
        let budget_mib = u32::try_from(settings.memory_budget_bytes / MIB)
            .unwrap_or(u32::MAX)
            .max(1);
        CompileQueue {
            slots: Semaphore::new(settings.concurrency.max(1)),
            concurrency: settings.concurrency.max(1),
            memory: Semaphore::new(budget_mib as usize),
            budget_mib,
            metrics,
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            peak_running: AtomicUsize::new(0),
            urgent_waiting: AtomicUsize::new(0),
            compiles: [AtomicU64::new(0), AtomicU64::new(0)],
            pending_bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            // 12 MB of JavaScript in about 5.5 s on 2 cores with Cranelift,
            // about 1 s with Winch.
            nanos_per_kib: [AtomicU64::new(470_000), AtomicU64::new(85_000)],
        }
    }

    pub(crate) fn stats(&self) -> CompileStats {
        CompileStats {
            queued: self.queued.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            peak_running: self.peak_running.load(Ordering::Relaxed),
            compiles: self.compiles[slot(Tier::Cranelift)].load(Ordering::Relaxed),
            winch_compiles: self.compiles[slot(Tier::Winch)].load(Ordering::Relaxed),
        }
    }

    /// When a caller should come back: the estimated time to compile what
    /// is queued or compiling now, between 1 and 30 seconds.
    pub(crate) fn retry_after(&self) -> Duration {
        let nanos = self
            .pending_bytes
            .iter()
            .zip(&self.nanos_per_kib)
            .map(|(bytes, rate)| {
                (bytes.load(Ordering::Relaxed) / 1024).saturating_mul(rate.load(Ordering::Relaxed))
            })
            .fold(0u64, u64::saturating_add);
        let slots = self.concurrency as u64;
        Duration::from_nanos(nanos / slots.max(1))
            .clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Compiles `bytes` (whose SHA-256 is `digest`) with `tier`'s engine
    /// once a slot and its memory are free, on a blocking thread.
    pub(crate) async fn compile(
        &self,
        engine: &Arc<WasmEngine>,
        tier: Tier,
        urgency: Urgency,
        digest: &ContentHash,
        bytes: Arc<Vec<u8>>,
    ) -> Result<Component, CacheError> {
        let Some(compiler) = engine.engine_for(tier).cloned() else {
            return Err(CacheError::Compile(format!(
                "no {} engine: compile tiering is off",
                tier.as_str()
            )));
        };
        let size = bytes.len() as u64;
        let estimate = estimated_memory(size);
        let need = u32::try_from(estimate.div_ceil(MIB))
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_mib);
        let waiting = Waiting::enter(self, tier, size);
        tracing::info!(
            component = %digest,
            size_bytes = size,
            tier = tier.as_str(),
            queued_ahead = waiting.ahead,
            "component queued for compiling"
        );
        let closed = |_| CacheError::Compile("the compile queue is closed".into());
        let urgent = (urgency == Urgency::Call).then(|| Urgent::enter(self));
        let (_memory, _slot) = loop {
            let memory = self.memory.acquire_many(need).await.map_err(closed)?;
            let slot = self.slots.acquire().await.map_err(closed)?;
            if urgency == Urgency::Call || self.urgent_waiting.load(Ordering::Relaxed) == 0 {
                break (memory, slot);
            }
            // A call's compile is waiting: let it have the slot (the
            // semaphores are fair, so it is next) and queue again.
            drop((slot, memory));
            tokio::time::sleep(YIELD_PAUSE).await;
        };
        drop(urgent);
        let running = waiting.start();
        tracing::info!(
            component = %digest,
            size_bytes = size,
            estimated_memory_bytes = estimate,
            tier = tier.as_str(),
            "compiling component"
        );
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || Component::new(&compiler, &*bytes))
            .await
            .map_err(|e| CacheError::Compile(format!("compile task failed: {e}")))
            .and_then(|r| r.map_err(|e| CacheError::Compile(format!("{e:#}"))));
        let took = started.elapsed();
        running.finish(took, result.is_ok());
        match &result {
            Ok(_) => tracing::info!(
                component = %digest,
                size_bytes = size,
                tier = tier.as_str(),
                seconds = took.as_secs_f64(),
                "component compiled"
            ),
            Err(error) => tracing::warn!(
                component = %digest,
                size_bytes = size,
                tier = tier.as_str(),
                seconds = took.as_secs_f64(),
                %error,
                "component compile failed"
            ),
        }
        result
    }

    fn learn(&self, tier: Tier, size: u64, took: Duration) {
        let kib = (size / 1024).max(1);
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX) / kib;
        // A quarter of each new sample: quick to follow a new machine, not
        // thrown by one odd compile.
        let rate = &self.nanos_per_kib[slot(tier)];
        let old = rate.load(Ordering::Relaxed);
        let next = old - old / 4 + sample / 4;
        rate.store(next.max(1), Ordering::Relaxed);
    }
}

/// A compile a call waits for, counted until it starts (or its caller
/// gives up).
struct Urgent<'a>(&'a CompileQueue);

impl<'a> Urgent<'a> {
    fn enter(queue: &'a CompileQueue) -> Urgent<'a> {
        queue.urgent_waiting.fetch_add(1, Ordering::Relaxed);
        Urgent(queue)
    }
}

impl Drop for Urgent<'_> {
    fn drop(&mut self) {
        self.0.urgent_waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A compile counted as queued until it starts (or its caller gives up).
struct Waiting<'a> {
    queue: &'a CompileQueue,
    tier: Tier,
    size: u64,
    ahead: usize,
    started: bool,
}

impl<'a> Waiting<'a> {
    fn enter(queue: &'a CompileQueue, tier: Tier, size: u64) -> Waiting<'a> {
        let ahead =
            queue.queued.fetch_add(1, Ordering::Relaxed) + queue.running.load(Ordering::Relaxed);
        queue.pending_bytes[slot(tier)].fetch_add(size, Ordering::Relaxed);
        queue.metrics.queued.inc();
        Waiting {
            queue,
            tier,
            size,
            ahead,
            started: false,
        }
    }

    fn start(mut self) -> Running<'a> {
        self.started = true;
        let q = self.queue;
        q.queued.fetch_sub(1, Ordering::Relaxed);
        q.metrics.queued.dec();
        let now = q.running.fetch_add(1, Ordering::Relaxed) + 1;
        q.peak_running.fetch_max(now, Ordering::Relaxed);
        q.metrics.in_flight.inc();
        Running {
            queue: q,
            tier: self.tier,
            size: self.size,
            done: false,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.started {
            self.queue.queued.fetch_sub(1, Ordering::Relaxed);
            self.queue.metrics.queued.dec();
            self.queue.pending_bytes[slot(self.tier)].fetch_sub(self.size, Ordering::Relaxed);
        }
    }
}

/// A compile counted as running until it ends.
struct Running<'a> {
    queue: &'a CompileQueue,
    tier: Tier,
    size: u64,
    done: bool,
}

impl Running<'_> {
    /// Records the compile's time; `compiled`: it produced a component.
    fn finish(mut self, took: Duration, compiled: bool) {
        self.queue.metrics.seconds.observe(took.as_secs_f64());
        self.queue.learn(self.tier, self.size, took);
        self.done = compiled;
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let q = self.queue;
        q.running.fetch_sub(1, Ordering::Relaxed);
        q.metrics.in_flight.dec();
        q.pending_bytes[slot(self.tier)].fetch_sub(self.size, Ordering::Relaxed);
        if self.done {
            q.compiles[slot(self.tier)].fetch_add(1, Ordering::Relaxed);
            q.metrics
                .compiles
                .get_or_create(&TierLabel {
                    tier: self.tier.as_str(),
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_calls_compile_goes_before_a_background_compile_queued_earlier() {
        let mut config = crate::engine::EngineConfig::default();
        config.pool.enabled = false;
        let engine = WasmEngine::new(&config, true).expect("engine");
        let hello = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/hello/dist/main.wasm");
        let bytes: Arc<Vec<u8>> = std::fs::read(hello).expect("examples/hello built").into();
        let digest = ContentHash::of(&bytes);
        let settings = CompileSettings {
            concurrency: 1,
            ..CompileSettings::default()
        };
        let q = Arc::new(CompileQueue::new(&settings, CompileMetrics::default()));
        let done = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let held = q.slots.acquire().await.expect("slot");
        let compile = |tier, urgency| {
            let (q, engine, digest, bytes, done) = (
                q.clone(),
                engine.clone(),
                digest.clone(),
                bytes.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                q.compile(&engine, tier, urgency, &digest, bytes)
                    .await
                    .expect("compile");
                done.lock().push(urgency);
            })
        };
        let background = compile(Tier::Cranelift, Urgency::Background);
        while q.stats().queued < 1 {
            tokio::task::yield_now().await;
        }
        let call = compile(Tier::Winch, Urgency::Call);
        while q.stats().queued < 2 {
            tokio::task::yield_now().await;
        }
        drop(held);
        call.await.expect("call");
        background.await.expect("background");
        assert_eq!(*done.lock(), [Urgency::Call, Urgency::Background]);
        let stats = q.stats();
        assert_eq!((stats.winch_compiles, stats.compiles), (1, 1));
    }

    #[test]
    fn concurrency_is_one_on_two_cores_and_half_the_cores_beyond() {
        assert_eq!(default_concurrency(1), 1);
        assert_eq!(default_concurrency(2), 1);
        assert_eq!(default_concurrency(3), 1);
        assert_eq!(default_concurrency(4), 2);
        assert_eq!(default_concurrency(16), 8);
    }

    #[test]
    fn two_large_javascript_compiles_do_not_fit_the_default_budget_together() {
        let budget = CompileSettings::default().memory_budget_bytes;
        let js = estimated_memory(12 * MIB);
        assert!(js <= budget && 2 * js > budget, "{js} of {budget}");
        let rust = estimated_memory(64 * 1024);
        assert!(js + rust <= budget);
    }

    #[test]
    fn retry_after_stays_between_one_and_thirty_seconds() {
        let q = CompileQueue::new(&CompileSettings::default(), CompileMetrics::default());
        assert_eq!(q.retry_after(), Duration::from_secs(1));
        let cranelift = &q.pending_bytes[slot(Tier::Cranelift)];
        cranelift.store(26 * 12 * MIB, Ordering::Relaxed);
        assert_eq!(q.retry_after(), Duration::from_secs(30));
        cranelift.store(12 * MIB, Ordering::Relaxed);
        let one = q.retry_after();
        assert!(
            one > Duration::from_secs(1) && one < Duration::from_secs(30),
            "{one:?}"
        );
        // The same bytes waiting for Winch are estimated sooner.
        cranelift.store(0, Ordering::Relaxed);
        q.pending_bytes[slot(Tier::Winch)].store(12 * MIB, Ordering::Relaxed);
        assert!(q.retry_after() < one);
    }
}
