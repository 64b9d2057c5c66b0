//! The one place that configures Wasmtime. Everything else receives a
//! [`WasmEngine`] and never builds its own `Engine` or `Config`.
//!
//! Fixed here: the component model, async host calls, the pooling allocator
//! (with a fallback to on-demand allocation when its address space cannot be
//! reserved), epoch interruption driven by a 1 ms ticker thread, optional
//! fuel, and the engine compatibility hash that keys the disk cache.
//!
//! With compile tiering on there are two engines with the same settings but
//! their compiler: Cranelift (the pooling allocator, the disk cache's
//! artifacts, every steady-state call) and Winch (on-demand allocation, code
//! that serves a large component's first calls while Cranelift compiles it;
//! never stored). A component and the stores that instantiate it always
//! belong to one engine: [`Tier`] says which.
//! The numbers quoted below were measured with real Alga components; the
//! engine facts they rest on are recorded in docs/design/wasmtime.md.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    Strategy,
};

const MIB: usize = 1024 * 1024;

/// How often the ticker advances the epoch. A running guest yields to the
/// runtime every tick and is stopped at most one tick past its wall-time
/// limit. Alga ticks every 10 ms; at 10 ms, 16 spinning guests on 2 cores
/// delayed another tenant's hello by up to ~80 ms (victim p99 6× in the
/// noisy-neighbour scenario, BENCHMARKS.md). 1 ms bounds that wait to a few
/// ms for about a thousand cheap yields a second per spinning guest.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Pooling-allocator limits. Limits that are too small fail when a component
/// is loaded (`instantiate_pre`/first instantiation), not per request, so the
/// defaults are sized for real Alga JavaScript components.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Use the pooling allocator at all (falls back to on-demand on failure).
    pub(crate) enabled: bool,
    /// Concurrent component instances: the worker's hard execution capacity.
    /// 256 matches Alga's pool and, with 4 GiB reservations per memory, stays
    /// around 1 TiB of virtual address space (a fraction of 128 TiB).
    pub(crate) total_component_instances: u32,
    /// A JS component uses 3 core instances and a Rust wasip2 guest a few
    /// more for its shims: 8 per component leaves headroom.
    pub(crate) total_core_instances: u32,
    /// One memory per JS component; a second one for the rare guest with two.
    pub(crate) total_memories: u32,
    /// JS components use 2 tables; Rust guests 1 or 2.
    pub(crate) total_tables: u32,
    /// Async stacks: one per concurrently running guest call.
    pub(crate) total_stacks: u32,
    /// Per-component caps (JS: 3 core instances, 1 memory, 2 tables).
    pub(crate) max_core_instances_per_component: u32,
    pub(crate) max_memories_per_component: u32,
    pub(crate) max_tables_per_component: u32,
    /// Largest linear memory any request may grow to. Must be at least the
    /// largest per-request memory limit and a JS component's initial 9.5 MB.
    pub(crate) max_memory_size: usize,
    /// A JS component needs at least 7,589 table elements; 20,000 is
    /// Wasmtime's own default and covers larger bundles.
    pub(crate) table_elements: usize,
    /// Core instance ≈ 200 KB and component instance ≈ 204 KB for JS
    /// components: 1 MiB is plenty (Alga uses the same).
    pub(crate) max_core_instance_size: usize,
    pub(crate) max_component_instance_size: usize,
    /// Bytes of each slot kept resident (not returned to the OS) between
    /// uses. With nothing kept resident two threads are slower than one
    /// (madvise/page-fault contention); keeping 32 MiB of linear memory,
    /// 1 MiB of tables and 2 MiB of async stack resident gave 3,884 req/s
    /// instead of 744 for the JS component on 2 cores.
    pub(crate) linear_memory_keep_resident: usize,
    pub(crate) table_keep_resident: usize,
    pub(crate) async_stack_keep_resident: usize,
    /// Warm slots kept for reuse; bounds the memory the keep-resident
    /// settings can pin (100 × 35 MiB worst case).
    pub(crate) max_unused_warm_slots: u32,
    /// Reset a reused linear memory by asking the kernel which pages the
    /// last instance dirtied (Linux `PAGEMAP_SCAN`, 6.7+) instead of
    /// rewriting every kept-resident byte. Without it a slot's whole
    /// accessible memory, up to the keep-resident size, is rewritten on every
    /// request: for the Rust hello guest that memset was a quarter of the
    /// worker's CPU under load (BENCHMARKS.md). `Auto` uses it where the
    /// kernel supports it.
    pub pagemap_scan: Enabled,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            enabled: true,
            total_component_instances: 256,
            total_core_instances: 256 * 8,
            total_memories: 256 * 2,
            total_tables: 256 * 2,
            total_stacks: 256,
            max_core_instances_per_component: 16,
            max_memories_per_component: 2,
            max_tables_per_component: 4,
            max_memory_size: 1024 * MIB,
            table_elements: 20_000,
            max_core_instance_size: MIB,
            max_component_instance_size: MIB,
            linear_memory_keep_resident: 32 * MIB,
            table_keep_resident: MIB,
            async_stack_keep_resident: 2 * MIB,
            max_unused_warm_slots: 100,
            pagemap_scan: Enabled::Auto,
        }
    }
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub pool: PoolConfig,
    /// Enables fuel metering for installs that buy deterministic limits.
    /// Off by default: it costs every guest some speed and Alga ignores fuel.
    pub fuel: bool,
    /// Guest stack limit; unbounded recursion traps with "call stack
    /// exhausted" at this depth. Wasmtime's default (512 KiB) suits Alga's
    /// JS components.
    pub(crate) max_wasm_stack: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pool: PoolConfig::default(),
            fuel: false,
            max_wasm_stack: 512 * 1024,
        }
    }
}

/// Which compiler produced a component's code (docs/design/wasmtime.md,
/// "Compile tiering").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Wasmtime's baseline compiler: about four times faster to compile a
    /// large JavaScript component, slower code. Serves a component only
    /// until its Cranelift compile is done; never written to disk.
    Winch,
    /// Wasmtime's optimizing compiler: the final tier, cached on disk.
    Cranelift,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Winch => "winch",
            Tier::Cranelift => "cranelift",
        }
    }
}

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allocator {
    Pooling,
    OnDemand,
}

/// The process's Wasmtime engine plus its epoch ticker.
pub(crate) struct WasmEngine {
    engine: Engine,
    /// The Winch engine, when compile tiering is on.
    winch: Option<Engine>,
    allocator: Allocator,
    fuel: bool,
    compatibility_hash: String,
    ticker: Option<Ticker>,
}

impl WasmEngine {
    /// Builds the engine (and, with `winch`, the Winch engine) and starts
    /// the epoch ticker.
    pub(crate) fn new(config: &EngineConfig, winch: bool) -> anyhow::Result<Arc<WasmEngine>> {
        let (engine, allocator) = if config.pool.enabled {
            match Engine::new(&base_config(config, Some(&config.pool))) {
                Ok(engine) => (engine, Allocator::Pooling),
                Err(error) => {
                    tracing::warn!(
                        error = %error,
                        "pooling allocator could not reserve its address space; using on-demand allocation"
                    );
                    (
                        Engine::new(&base_config(config, None))?,
                        Allocator::OnDemand,
                    )
                }
            }
        } else {
            (
                Engine::new(&base_config(config, None))?,
                Allocator::OnDemand,
            )
        };
        // Winch code runs only until Cranelift's replaces it: on-demand
        // allocation keeps it from reserving a second pool's address space;
        // each store's memory is still bounded by its request's limiter.
        let winch = if winch {
            let mut c = base_config(config, None);
            c.strategy(Strategy::Winch);
            // Winch still compiles the trampolines with Cranelift: without
            // optimizing them the 11.8 MB JavaScript component compiled in
            // about 12 % less time (docs/design/wasmtime.md).
            c.cranelift_opt_level(OptLevel::None);
            Some(Engine::new(&c)?)
        } else {
            None
        };
        let compatibility_hash = compatibility_hash(&engine);
        let ticker = Ticker::start(std::iter::once(&engine).chain(&winch).cloned().collect());
        Ok(Arc::new(WasmEngine {
            engine,
            winch,
            allocator,
            fuel: config.fuel,
            compatibility_hash,
            ticker: Some(ticker),
        }))
    }

    /// The Cranelift engine (the disk cache's and the final tier's).
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine of `tier`; `None` for Winch when tiering is off.
    pub(crate) fn engine_for(&self, tier: Tier) -> Option<&Engine> {
        match tier {
            Tier::Cranelift => Some(&self.engine),
            Tier::Winch => self.winch.as_ref(),
        }
    }

    pub(crate) fn allocator(&self) -> Allocator {
        self.allocator
    }

    pub(crate) fn fuel_enabled(&self) -> bool {
        self.fuel
    }

    /// Identifies which serialized artifacts this engine can load: equal
    /// hashes mean compatible settings, Wasmtime version and target.
    pub(crate) fn compatibility_hash(&self) -> &str {
        &self.compatibility_hash
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
    }
}

fn base_config(config: &EngineConfig, pool: Option<&PoolConfig>) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.consume_fuel(config.fuel);
    c.max_wasm_stack(config.max_wasm_stack);
    c.parallel_compilation(true);
    if let Some(pool) = pool {
        let mut p = PoolingAllocationConfig::new();
        p.total_component_instances(pool.total_component_instances)
            .total_core_instances(pool.total_core_instances)
            .total_memories(pool.total_memories)
            .total_tables(pool.total_tables)
            .total_stacks(pool.total_stacks)
            .max_core_instances_per_component(pool.max_core_instances_per_component)
            .max_memories_per_component(pool.max_memories_per_component)
            .max_tables_per_component(pool.max_tables_per_component)
            .max_memory_size(pool.max_memory_size)
            .table_elements(pool.table_elements)
            .max_core_instance_size(pool.max_core_instance_size)
            .max_component_instance_size(pool.max_component_instance_size)
            .linear_memory_keep_resident(pool.linear_memory_keep_resident)
            .table_keep_resident(pool.table_keep_resident)
            .async_stack_keep_resident(pool.async_stack_keep_resident)
            .max_unused_warm_slots(pool.max_unused_warm_slots)
            .pagemap_scan(pool.pagemap_scan);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

fn compatibility_hash(engine: &Engine) -> String {
    // `DefaultHasher::new()` is deterministic for one build, which is all the
    // disk cache needs (a different build simply misses).
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The thread that advances the epoch of every engine every [`EPOCH_TICK`].
struct Ticker {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Ticker {
    fn start(engines: Vec<Engine>) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("annex-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the epoch ticker thread: {e}"));
        Ticker { stop, handle }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreservable_pool_falls_back_to_on_demand_allocation() {
        // 4 GiB reservations for a million memories: petabytes of address
        // space, which no machine can reserve.
        let mut config = EngineConfig::default();
        config.pool.total_memories = 1_000_000;
        config.pool.total_component_instances = 1_000_000;
        let engine = WasmEngine::new(&config, false).expect("engine");
        assert_eq!(engine.allocator(), Allocator::OnDemand);
    }

    #[test]
    fn engine_builds_with_the_default_pool_and_has_a_stable_hash() {
        let engine = WasmEngine::new(&EngineConfig::default(), true).expect("engine");
        assert_eq!(engine.allocator(), Allocator::Pooling);
        let again = compatibility_hash(engine.engine());
        assert_eq!(engine.compatibility_hash(), again);
        assert_eq!(engine.compatibility_hash().len(), 16);
        let winch = engine.engine_for(Tier::Winch).expect("a winch engine");
        assert_ne!(
            compatibility_hash(winch),
            engine.compatibility_hash(),
            "Winch artifacts must never pass for Cranelift ones"
        );
    }
}
