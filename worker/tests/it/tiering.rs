//! Compile tiering: Winch serves a component's first calls while
//! Cranelift compiles it in the background. Winch code must answer exactly
//! as Cranelift code does, under the same limits (epoch deadline, memory
//! limiter), and only the Cranelift artifact reaches the disk cache.

use std::path::Path;
use std::time::Duration;

use annex_bundle::ContentHash;
use annex_proto::pb;
use annex_testkit::assert_eventually;
use annex_worker::cache::Tiering;
use annex_worker::engine::Tier;
use annex_worker::settings::ExecutorSettings;
use annex_worker::testing::{Call, TestWorker, test_settings};

use crate::support::publisher;

fn outcome(r: &pb::ExecuteResponse) -> pb::Outcome {
    pb::Outcome::try_from(r.outcome).unwrap_or(pb::Outcome::Unspecified)
}

/// Settings with `tiering`; every component goes through Winch first when
/// tiered (no size threshold).
fn tiered(tiering: Tiering, cache: Option<&Path>) -> ExecutorSettings {
    let mut s = test_settings(cache.map(Path::to_path_buf));
    s.compile.tiering = tiering;
    s.compile.winch_min_bytes = 0;
    s
}

async fn start(settings: ExecutorSettings) -> TestWorker {
    TestWorker::start(settings, publisher(), None).await
}

/// What a caller sees of a response: outcome, status, sorted headers, body
/// and error (usage and timings excluded).
type Answer = (i32, u32, Vec<(String, String)>, Option<Vec<u8>>, String);

fn answer(r: &pb::ExecuteResponse) -> Answer {
    let mut headers: Vec<_> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.sort();
    (
        r.outcome,
        r.status,
        headers,
        r.body.clone(),
        r.error.clone(),
    )
}

fn calls(hash: &ContentHash, guest: &str) -> Vec<pb::ExecuteRequest> {
    match guest {
        "hello" => vec![
            Call::new(hash, "GET", "/hello").build(),
            Call::new(hash, "POST", "/echo")
                .body(b"tiers".to_vec())
                .build(),
        ],
        "probe" => vec![
            Call::new(hash, "GET", "/context").build(),
            Call::new(hash, "GET", "/config/get")
                .query("key", "k")
                .config("k", "v")
                .build(),
        ],
        _ => vec![
            Call::new(hash, "POST", "/dynamic/echo")
                .query("foo", "bar")
                .header("content-type", "application/octet-stream")
                .body(vec![1u8, 2, 3, 250])
                .timeout_ms(10_000)
                .build(),
        ],
    }
}

#[tokio::test]
async fn winch_code_answers_like_cranelift_code() {
    for guest in ["hello", "probe", "js-echo"] {
        let hash = publisher().publish(guest);
        let winch = start(tiered(Tiering::WinchThenCranelift, None)).await;
        let cranelift = start(tiered(Tiering::Cranelift, None)).await;
        for (i, call) in calls(&hash, guest).into_iter().enumerate() {
            let by_winch = winch.execute(call.clone()).await;
            let by_cranelift = cranelift.execute(call).await;
            assert_eq!(outcome(&by_winch), pb::Outcome::Ok, "{guest}: {by_winch:?}");
            assert_eq!(answer(&by_winch), answer(&by_cranelift), "{guest} call {i}");
            if i == 0 {
                // The first call waits for the first tier only: Winch.
                assert_eq!(winch.executor.served_by(Tier::Winch), 1, "{guest}");
            }
        }
        assert_eq!(cranelift.executor.served_by(Tier::Winch), 0, "{guest}");
        assert_eq!(cranelift.executor.cache().compile_stats().winch_compiles, 0);
        winch.stop().await;
        cranelift.stop().await;
    }
}

#[tokio::test]
async fn an_endless_loop_under_winch_stops_at_its_deadline() {
    let hash = publisher().publish("misbehave");
    let w = start(tiered(Tiering::WinchThenCranelift, None)).await;
    let r = w
        .execute(Call::new(&hash, "GET", "/loop").timeout_ms(300).build())
        .await;
    assert_eq!(w.executor.served_by(Tier::Winch), 1);
    assert_eq!(outcome(&r), pb::Outcome::Timeout, "{r:?}");
    assert_eq!(
        r.error,
        "execute_failed: execution exceeded its time limit of 300 ms"
    );
    w.stop().await;

    // The memory limiter holds under Winch as well.
    let w = start(tiered(Tiering::WinchThenCranelift, None)).await;
    let r = w
        .execute(Call::new(&hash, "GET", "/oom").memory_mb(64).build())
        .await;
    assert_eq!(w.executor.served_by(Tier::Winch), 1);
    assert_eq!(outcome(&r), pb::Outcome::Oom, "{r:?}");
}

/// The `.cwasm` files in the disk cache.
fn artifacts(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cwasm"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_large_component_is_served_by_winch_then_by_cranelift_which_alone_is_stored() {
    let hash = publisher().publish("js-echo");
    let cache = tempfile::tempdir().expect("cache dir");
    // The default threshold: the 11.8 MB JavaScript component is tiered.
    let mut settings = tiered(Tiering::WinchThenCranelift, Some(cache.path()));
    settings.compile.winch_min_bytes = annex_worker::cache::DEFAULT_WINCH_MIN_BYTES;
    let w = start(settings.clone()).await;
    let call = || calls(&hash, "js-echo").remove(0);
    // Concurrent first calls share one Winch compile and one Cranelift one.
    let first: Vec<_> = (0..3)
        .map(|_| {
            let mut client = w.client.clone();
            let request = call();
            tokio::spawn(async move { client.execute(request).await })
        })
        .collect();
    for r in first {
        let r = r.await.expect("join").expect("execute").into_inner();
        assert_eq!(outcome(&r), pb::Outcome::Ok, "{r:?}");
    }
    assert!(w.executor.served_by(Tier::Winch) >= 1);
    let cache_of = |w: &TestWorker| w.executor.cache().memory_tier(&hash);
    assert_eventually!(
        Duration::from_secs(300),
        async || (cache_of(&w) == Some(Tier::Cranelift)).then_some(()),
        "the Cranelift component replacing the Winch one"
    );
    let stats = w.executor.cache().compile_stats();
    assert_eq!((stats.winch_compiles, stats.compiles), (1, 1), "{stats:?}");
    let before = w.executor.served_by(Tier::Cranelift);
    let r = w.execute(call()).await;
    assert_eq!(outcome(&r), pb::Outcome::Ok, "{r:?}");
    assert_eq!(w.executor.served_by(Tier::Cranelift), before + 1);
    // One artifact: Cranelift's (a Winch one would carry another engine
    // hash in its name).
    let stored = artifacts(cache.path());
    assert_eq!(stored.len(), 1, "{stored:?}");
    w.stop().await;

    // A restarted worker loads Cranelift code from disk and compiles nothing.
    let w = start(settings).await;
    let r = w.execute(call()).await;
    assert_eq!(outcome(&r), pb::Outcome::Ok, "{r:?}");
    assert_eq!(cache_of(&w), Some(Tier::Cranelift));
    assert_eq!(w.executor.served_by(Tier::Winch), 0);
    let stats = w.executor.cache().compile_stats();
    assert_eq!((stats.winch_compiles, stats.compiles), (0, 0), "{stats:?}");
    assert_eq!(artifacts(cache.path()), stored);
}

#[tokio::test]
async fn small_components_skip_winch_by_default() {
    let hash = publisher().publish("hello");
    let w = start(test_settings(None)).await;
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(outcome(&r), pb::Outcome::Ok, "{r:?}");
    assert_eq!(w.executor.served_by(Tier::Cranelift), 1);
    let stats = w.executor.cache().compile_stats();
    assert_eq!((stats.winch_compiles, stats.compiles), (0, 1), "{stats:?}");
}

#[tokio::test]
async fn fuel_meters_and_stops_winch_code() {
    let hash = publisher().publish("misbehave");
    let mut settings = tiered(Tiering::WinchThenCranelift, None);
    settings.engine.fuel = true;
    let w = start(settings).await;
    let mut call = Call::new(&hash, "GET", "/loop").timeout_ms(60_000).build();
    if let Some(limits) = call.limits.as_mut() {
        limits.fuel = Some(1_000_000);
    }
    let r = w.execute(call).await;
    assert_eq!(w.executor.served_by(Tier::Winch), 1);
    // Out of fuel ends as a timeout, long before the 60 s deadline: the
    // whole budget was burnt.
    assert_eq!(outcome(&r), pb::Outcome::Timeout, "{r:?}");
    assert_eq!(r.usage.expect("usage").fuel_consumed, 1_000_000);
}
