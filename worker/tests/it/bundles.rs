//! Bundles are verified before anything is compiled, and compiled once.

use annex_proto::pb;
use std::sync::Arc;

use annex_worker::backend::NoHostBackend;
use annex_worker::server::Sources;
use annex_worker::testing::{
    Call, Publisher, SwappableTrust, TestWorker, pack_guest, test_settings,
};

use crate::support::publisher;

async fn fresh_worker(p: &Publisher, cache: Option<std::path::PathBuf>) -> TestWorker {
    TestWorker::start(test_settings(cache), p, None).await
}

#[tokio::test]
async fn bytes_whose_signature_does_not_verify_are_never_compiled() {
    let p = Publisher::new();
    let w = fresh_worker(&p, None).await;
    let good = pack_guest("hello");
    let signature = p.sign(&good, "hello");
    // Other bytes presented with the good bundle's signature record.
    let mut tampered = good.clone();
    tampered.extend_from_slice(b"junk");
    let hash = p.store(&tampered, &signature);
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.outcome, pb::Outcome::Rejected as i32, "{r:?}");
    assert_eq!(r.status, 502);
    assert!(
        r.error
            .starts_with("bundle_fetch_failed: signature not trusted"),
        "{}",
        r.error
    );
    assert_eq!(w.executor.cache().compiles(), 0);
}

#[tokio::test]
async fn bytes_that_do_not_match_their_hash_are_never_compiled() {
    let p = Publisher::new();
    let w = fresh_worker(&p, None).await;
    let bytes = pack_guest("hello");
    let hash = p.store(&bytes, &p.sign(&bytes, "hello"));
    // Corrupt the stored archive after the fact.
    let file = p.bundles.dir().join(format!("{}.tar.zst", hash.hex()));
    let mut corrupted = bytes.clone();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0xff;
    std::fs::write(&file, &corrupted).expect("corrupt bundle");
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.outcome, pb::Outcome::Rejected as i32, "{r:?}");
    assert!(
        r.error
            .starts_with("bundle_fetch_failed: archive hash mismatch: expected sha256:"),
        "{}",
        r.error
    );
    assert_eq!(w.executor.cache().compiles(), 0);
}

#[tokio::test]
async fn a_signature_by_an_untrusted_key_is_never_compiled() {
    let p = Publisher::new();
    let stranger = Publisher::new();
    let w = fresh_worker(&p, None).await;
    let bytes = pack_guest("hello");
    let hash = p.store(&bytes, &stranger.sign(&bytes, "hello"));
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.outcome, pb::Outcome::Rejected as i32, "{r:?}");
    assert!(r.error.contains("signature not trusted"), "{}", r.error);
    assert_eq!(w.executor.cache().compiles(), 0);
}

#[tokio::test]
async fn prewarm_compiles_once_and_later_workers_load_from_disk() {
    let p = Publisher::new();
    let cache = tempfile::tempdir().expect("cache dir");
    let hash = p.publish("hello");
    let w = fresh_worker(&p, Some(cache.path().to_path_buf())).await;
    let mut client = w.client.clone();
    let first = client
        .prewarm(pb::PrewarmRequest {
            content_hash: hash.to_string(),
        })
        .await
        .expect("prewarm")
        .into_inner();
    assert_eq!(first.source, "compiled");
    let again = client
        .prewarm(pb::PrewarmRequest {
            content_hash: hash.to_string(),
        })
        .await
        .expect("prewarm")
        .into_inner();
    assert_eq!(again.source, "memory");
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    assert_eq!(w.executor.cache().compiles(), 1);
    w.stop().await;

    let w2 = fresh_worker(&p, Some(cache.path().to_path_buf())).await;
    let mut client = w2.client.clone();
    let warm = client
        .prewarm(pb::PrewarmRequest {
            content_hash: hash.to_string(),
        })
        .await
        .expect("prewarm")
        .into_inner();
    assert_eq!(warm.source, "disk");
    assert_eq!(w2.executor.cache().compiles(), 0);
    let stats = client
        .stats(pb::Empty {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.cached_hashes, vec![hash.to_string()]);
}

#[tokio::test]
async fn concurrent_first_requests_compile_once() {
    let p = Publisher::new();
    let hash = p.publish("hello");
    let w = fresh_worker(&p, None).await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = w.client.clone();
            let req = Call::new(&hash, "GET", "/hello").build();
            tokio::spawn(async move { client.clone().execute(req).await })
        })
        .collect();
    for c in calls {
        let r = c.await.expect("join").expect("execute").into_inner();
        assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    }
    assert_eq!(w.executor.cache().compiles(), 1);
}

#[tokio::test]
async fn a_draining_worker_refuses_new_work_as_unavailable() {
    let _ = publisher();
    let p = Publisher::new();
    let hash = p.publish("hello");
    let w = fresh_worker(&p, None).await;
    let mut client = w.client.clone();
    client.drain(pb::Empty {}).await.expect("drain");
    let err = client
        .execute(Call::new(&hash, "GET", "/hello").build())
        .await
        .expect_err("draining");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let stats = client
        .stats(pb::Empty {})
        .await
        .expect("stats")
        .into_inner();
    assert!(stats.draining);
}

#[tokio::test]
async fn a_revoked_key_stops_even_a_cached_component() {
    let p = Publisher::new();
    let hash = p.publish("hello");
    let trust = Arc::new(SwappableTrust(parking_lot::Mutex::new(p.trust.clone())));
    let w = TestWorker::start_with(
        test_settings(None),
        Sources {
            backend: Arc::new(NoHostBackend),
            bundles: Arc::new(p.bundles.clone()),
            trust: trust.clone(),
        },
    )
    .await;
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    // Revoke the only key.
    let mut revoked = (*p.trust).clone();
    for k in &mut revoked.keys {
        k.revoked = true;
    }
    *trust.0.lock() = Arc::new(revoked);
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.outcome, pb::Outcome::Rejected as i32, "{r:?}");
    assert!(r.error.contains("revoked"), "{}", r.error);
    assert!(w.executor.cache().cached_hashes().is_empty());
}
