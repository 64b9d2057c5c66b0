//! Bundles from Alga's bundle-store layout: downloaded once, verified by
//! digest before anything compiles, cached by digest; signatures required
//! exactly when trust keys are configured.

use std::sync::Arc;

use annex_bundle::{KeyPair, TrustBundle};
use annex_worker::testing::Publisher;
use serde_json::json;

use super::{BundleStore, EXTENSION, Fixture, Options, TENANT, bundle, envelope, guest_json};

#[tokio::test]
async fn a_bundle_is_downloaded_verified_and_then_served_from_the_cache() {
    let f = Fixture::with(Options {
        fresh_cache: true,
        ..Options::default()
    })
    .await;
    let hex = f.publish("hello");
    let key = BundleStore::key(TENANT, EXTENSION, &hex);
    for _ in 0..2 {
        let (_, answer) = f.execute(&envelope(&hex, "GET", "/hello")).await;
        assert_eq!(answer["status"], 200, "{answer}");
        assert_eq!(guest_json(&answer)["message"], "hello");
    }
    assert_eq!(f.store.served(&key), 1, "the second call did not download");
    assert_eq!(f.api.executor.cache().compiles(), 1);
}

#[tokio::test]
async fn bytes_that_do_not_match_their_digest_are_never_compiled() {
    let f = Fixture::with(Options {
        fresh_cache: true,
        ..Options::default()
    })
    .await;
    let (bytes, hash) = bundle("hello");
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let actual = annex_bundle::ContentHash::of(&tampered);
    f.store.put(
        &BundleStore::key(TENANT, EXTENSION, hash.hex()),
        tampered,
        None,
    );
    let (_, answer) = f.execute(&envelope(hash.hex(), "GET", "/hello")).await;
    assert_eq!(answer["status"], 502);
    assert_eq!(
        answer["error"],
        format!("bundle_fetch_failed: archive hash mismatch: expected {hash}, got {actual}")
    );
    assert_eq!(f.api.executor.cache().compiles(), 0);
}

#[tokio::test]
async fn bundles_are_looked_up_under_the_routing_tenant_and_extension() {
    // A fresh cache: a hash compiled once is served to any tenant from it.
    let f = Fixture::with(Options {
        fresh_cache: true,
        ..Options::default()
    })
    .await;
    let (bytes, hash) = bundle("hello");
    // Stored under another tenant's prefix only.
    f.store.put(
        &BundleStore::key("tenant-z", EXTENSION, hash.hex()),
        bytes,
        None,
    );
    let (_, answer) = f.execute(&envelope(hash.hex(), "GET", "/hello")).await;
    assert_eq!(answer["status"], 502, "{answer}");
    assert_eq!(
        f.store
            .served(&BundleStore::key("tenant-z", EXTENSION, hash.hex())),
        0
    );
}

fn trusted(publisher: &Publisher) -> Option<Arc<TrustBundle>> {
    Some(publisher.trust.clone())
}

#[tokio::test]
async fn with_trust_keys_a_signature_is_required_and_verified() {
    let publisher = Publisher::new();
    let f = Fixture::with(Options {
        trust: trusted(&publisher),
        fresh_cache: true,
        ..Options::default()
    })
    .await;
    let (bytes, hash) = bundle("hello");
    let key = BundleStore::key(TENANT, EXTENSION, hash.hex());

    // Unsigned: refused before anything compiles.
    f.store.put(&key, bytes.clone(), None);
    let (_, answer) = f.execute(&envelope(hash.hex(), "GET", "/hello")).await;
    assert_eq!(answer["status"], 502);
    assert_eq!(
        answer["error"],
        "bundle_fetch_failed: signature not trusted: bundle is not signed"
    );

    // Signed by a stranger: refused.
    let stranger = Publisher::at(&std::env::temp_dir(), KeyPair::generate());
    let forged = serde_json::to_value(stranger.sign(&bytes, "hello")).expect("record");
    f.store.put(&key, bytes.clone(), Some(forged));
    let (_, answer) = f.execute(&envelope(hash.hex(), "GET", "/hello")).await;
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("bundle_fetch_failed: signature not trusted")),
        "{answer}"
    );
    assert_eq!(f.api.executor.cache().compiles(), 0);

    // Signed by the trusted publisher (the `.sig` `annex sign` writes).
    let mut signed = serde_json::to_value(publisher.sign(&bytes, "hello")).expect("record");
    signed["content_hash"] = json!(hash.to_string());
    f.store.put(&key, bytes, Some(signed));
    let (_, answer) = f.execute(&envelope(hash.hex(), "GET", "/hello")).await;
    assert_eq!(answer["status"], 200, "{answer}");
}
