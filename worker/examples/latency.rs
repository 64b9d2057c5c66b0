//! Quick latency figures for the hello guest through `Worker.Execute` over
//! gRPC on loopback (plaintext): the first request without `Prewarm`, the
//! first request after `Prewarm`, and warm sequential requests.
//!
//! `cargo run --release -p annex-worker --features testing --example latency [N] [GUEST] [PATH]`
//! (defaults: 5000 requests, `hello`, `/hello`). `PAGEMAP_SCAN=off|on|auto`
//! (default auto) sets the pool's dirty-page reset. `TIERING=cranelift`
//! compiles with Cranelift only, `TIERING=winch` serves Winch code and never
//! upgrades it, whatever the component's size (to measure Winch code);
//! unset, the worker's defaults (components of 1 MiB or more tiered), and
//! the warm requests start once Cranelift code serves. Besides the round trip it
//! prints the worker's own time per request (`usage.wall_us`: admission,
//! component lookup, instantiate, call, teardown; no gRPC).

use std::time::{Duration, Instant};

use annex_proto::pb;
use annex_worker::cache::Tiering;
use annex_worker::engine::Tier;
use annex_worker::testing::{Call, Publisher, TestWorker, test_settings};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000);
    let publisher = Publisher::new();
    let guest = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "hello".to_string());
    let path = std::env::args()
        .nth(3)
        .unwrap_or_else(|| "/hello".to_string());
    let hash = publisher.publish(&guest);
    let request = || Call::new(&hash, "GET", &path).build();
    let settings = || {
        let mut s = test_settings(None);
        s.engine.pool.pagemap_scan = match std::env::var("PAGEMAP_SCAN").as_deref() {
            Ok("off") => wasmtime::Enabled::No,
            Ok("on") => wasmtime::Enabled::Yes,
            _ => wasmtime::Enabled::Auto,
        };
        match std::env::var("TIERING").as_deref() {
            Ok("cranelift") => s.compile.tiering = Tiering::Cranelift,
            Ok("winch") => {
                s.compile.winch_min_bytes = 0;
                s.compile.hold_winch = true;
            }
            _ => {}
        }
        s
    };

    // Cold: nothing compiled, no disk cache.
    let cold = TestWorker::start(settings(), &publisher, None).await;
    let t = Instant::now();
    let r = cold.execute(request()).await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    println!("first request without Prewarm: {:?}", t.elapsed());
    let upgrades = std::env::var("TIERING").as_deref() != Ok("winch");
    if upgrades {
        // Let a background Cranelift compile finish before the next worker.
        while cold.executor.cache().memory_tier(&hash) != Some(Tier::Cranelift) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("Cranelift code serving after: {:?}", t.elapsed());
    }
    cold.stop().await;

    // Prewarmed.
    let w = TestWorker::start(settings(), &publisher, None).await;
    let t = Instant::now();
    let p = w
        .client
        .clone()
        .prewarm(pb::PrewarmRequest {
            content_hash: hash.to_string(),
        })
        .await
        .expect("prewarm")
        .into_inner();
    println!("Prewarm ({}): {:?}", p.source, t.elapsed());
    let t = Instant::now();
    let r = w.execute(request()).await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    println!("first request after Prewarm: {:?}", t.elapsed());
    if upgrades {
        let t = Instant::now();
        while w.executor.cache().memory_tier(&hash) != Some(Tier::Cranelift) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("waited {:?} for Cranelift code", t.elapsed());
    }

    // Warm, one client, sequential.
    for _ in 0..200 {
        w.execute(request()).await;
    }
    let mut samples = Vec::with_capacity(n);
    let mut inside = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let r = w.execute(request()).await;
        samples.push(t.elapsed());
        assert_eq!(r.outcome, pb::Outcome::Ok as i32);
        inside.push(Duration::from_micros(r.usage.map_or(0, |u| u.wall_us)));
    }
    let total = start.elapsed();
    samples.sort();
    inside.sort();
    println!(
        "inside the worker (usage.wall_us), {n} requests: p50 {:?}, p99 {:?}",
        percentile(&inside, 0.5),
        percentile(&inside, 0.99),
    );
    println!(
        "warm, sequential, {n} requests: p50 {:?}, p99 {:?}, max {:?}, {:.0} req/s",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
        n as f64 / total.as_secs_f64()
    );
    println!(
        "served by Winch {} times, by Cranelift {} times",
        w.executor.served_by(Tier::Winch),
        w.executor.served_by(Tier::Cranelift)
    );
    w.stop().await;
}
