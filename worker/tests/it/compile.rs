//! Compiles: once per component digest whatever bundle carries it, through
//! a bounded queue, and a call that arrives while its component is being
//! compiled is refused as retryable instead of waiting.

use std::time::Duration;

use annex_proto::pb;
use annex_worker::testing::{Call, Publisher, TestWorker, guest, pack, test_settings, variant};

fn hello_manifest(name: &str) -> Vec<u8> {
    serde_json::json!({
        "name": name, "publisher": "annex", "version": "0.1.0", "runtime": "wasm-rust@1",
        "api": {"endpoints": [{"method": "GET", "path": "/hello", "handler": "dist/main"}]}
    })
    .to_string()
    .into_bytes()
}

/// Publishes `component` under `name` (its own manifest and signature).
fn publish_as(p: &Publisher, name: &str, component: &[u8]) -> annex_bundle::ContentHash {
    let bytes = pack(&hello_manifest(name), component);
    p.store(&bytes, &p.sign(&bytes, name))
}

#[tokio::test]
async fn two_differently_signed_bundles_with_the_same_component_compile_once() {
    let p = Publisher::new();
    let cache = tempfile::tempdir().expect("cache dir");
    let component = std::fs::read(guest("hello")).expect("hello");
    let first = publish_as(&p, "hello-one", &component);
    let second = publish_as(&p, "hello-two", &component);
    assert_ne!(first, second);
    let w = TestWorker::start(test_settings(Some(cache.path().to_path_buf())), &p, None).await;
    for hash in [&first, &second] {
        let r = w.execute(Call::new(hash, "GET", "/hello").build()).await;
        assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    }
    assert_eq!(w.executor.cache().compiles(), 1);
    let mut cached = w.executor.cache().cached_hashes();
    cached.sort();
    let mut want = vec![first.to_string(), second.to_string()];
    want.sort();
    assert_eq!(cached, want);
    w.stop().await;

    // A restarted worker finds both bundles' records and the one artifact.
    let w = TestWorker::start(test_settings(Some(cache.path().to_path_buf())), &p, None).await;
    let mut client = w.client.clone();
    for hash in [&first, &second] {
        let warm = client
            .prewarm(pb::PrewarmRequest {
                content_hash: hash.to_string(),
            })
            .await
            .expect("prewarm")
            .into_inner();
        assert!(
            matches!(warm.source.as_str(), "disk" | "memory"),
            "{warm:?}"
        );
    }
    assert_eq!(w.executor.cache().compiles(), 0);
}

#[tokio::test]
async fn a_call_during_a_compile_is_refused_as_retryable_and_the_compile_goes_on() {
    let p = Publisher::new();
    let hash = p.publish("hello");
    let mut settings = test_settings(None);
    settings.compile.wait = Duration::ZERO;
    let w = TestWorker::start(settings, &p, None).await;
    let call = || Call::new(&hash, "GET", "/hello").build();
    let refused = w
        .client
        .clone()
        .execute(call())
        .await
        .expect_err("the component is not compiled yet");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(
        annex_proto::AnnexError::from_status(&refused).code,
        annex_proto::ErrorCode::ComponentCompiling
    );
    assert!(annex_proto::error::never_started(&refused));
    let retry = annex_proto::error::retry_after(&refused).expect("a retry-after");
    assert!(retry >= Duration::from_secs(1), "{retry:?}");
    // The compile went on without the caller: a later call runs.
    let client = w.client.clone();
    let ran = annex_testkit::assert_eventually!(
        Duration::from_secs(60),
        async || {
            let mut client = client.clone();
            client
                .execute(call())
                .await
                .ok()
                .filter(|r| r.get_ref().outcome == pb::Outcome::Ok as i32)
        },
        "a call after the background compile"
    );
    assert_eq!(ran.get_ref().status, 200);
    assert_eq!(w.executor.cache().compiles(), 1);
}

/// Prewarms every hash at once and waits for all of them.
async fn prewarm_all(w: &TestWorker, hashes: &[annex_bundle::ContentHash]) {
    let calls: Vec<_> = hashes
        .iter()
        .map(|h| {
            let mut client = w.client.clone();
            let request = pb::PrewarmRequest {
                content_hash: h.to_string(),
            };
            tokio::spawn(async move { client.prewarm(request).await })
        })
        .collect();
    for call in calls {
        let warm = call.await.expect("join").expect("prewarm").into_inner();
        assert_eq!(warm.source, "compiled", "{warm:?}");
    }
}

#[tokio::test]
async fn compiles_never_exceed_the_concurrency_bound() {
    let p = Publisher::new();
    let component = std::fs::read(guest("hello")).expect("hello");
    let hashes: Vec<_> = (0..4)
        .map(|i| {
            publish_as(
                &p,
                &format!("hello-{i}"),
                &variant(&component, &i.to_string()),
            )
        })
        .collect();
    let mut settings = test_settings(None);
    settings.compile.concurrency = 1;
    let w = TestWorker::start(settings, &p, None).await;
    prewarm_all(&w, &hashes).await;
    let stats = w.executor.cache().compile_stats();
    assert_eq!(stats.compiles, 4, "{stats:?}");
    assert_eq!(stats.peak_running, 1, "{stats:?}");
    assert_eq!((stats.queued, stats.running), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn compiles_that_do_not_fit_the_memory_budget_together_run_one_at_a_time() {
    let p = Publisher::new();
    let component = std::fs::read(guest("hello")).expect("hello");
    let hashes: Vec<_> = (0..4)
        .map(|i| {
            publish_as(
                &p,
                &format!("budget-{i}"),
                &variant(&component, &format!("b{i}")),
            )
        })
        .collect();
    let mut settings = test_settings(None);
    settings.compile.concurrency = 4;
    // Every compile is estimated above 1 MiB: each takes the whole budget.
    settings.compile.memory_budget_bytes = 1024 * 1024;
    let w = TestWorker::start(settings, &p, None).await;
    prewarm_all(&w, &hashes).await;
    let stats = w.executor.cache().compile_stats();
    assert_eq!(stats.compiles, 4, "{stats:?}");
    assert_eq!(stats.peak_running, 1, "{stats:?}");
}
