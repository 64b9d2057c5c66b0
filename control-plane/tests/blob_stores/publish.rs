//! Publishing into S3 through the real gRPC `Publish`: a 150 MiB bundle goes
//! up as a multipart upload and comes back identical; an upload the object
//! store cuts off midway fails the publish with a clear error, leaves
//! nothing under the bundle's hash, and a retry succeeds.

use std::sync::Arc;

use annex_bundle::hash::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_control_plane::store::{BlobStore, ExtensionSelector};
use annex_proto::ErrorCode;
use annex_testkit::{ControlPlane, ControlPlaneOptions};
use object_store::ObjectStoreExt as _;

use super::moto::{CutProxy, Moto};
use super::{PUB, assert_served, fetch, padded_bundle, publish};

async fn start(blobs: Arc<dyn BlobStore>) -> (ControlPlane, KeyPair) {
    let server = ControlPlane::start_with(ControlPlaneOptions {
        blobs: Some(blobs),
        ..ControlPlaneOptions::default()
    })
    .await;
    let key = KeyPair::generate();
    server.trust_key(PUB, &key).await;
    (server, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_150_mib_bundle_goes_to_s3_by_multipart_upload_and_comes_back_identical() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.bucket("large").await;
    let (server, key) = start(Arc::new(moto.store("large"))).await;
    let bytes = Arc::new(padded_bundle("large", 150 * 1024 * 1024));
    assert!(bytes.len() > 150 * 1024 * 1024, "incompressible padding");
    let hash = ContentHash::of(&bytes);

    let published = publish(&server, &key, "large", bytes.clone())
        .await
        .expect("publish");
    let version = published.version.expect("version");
    assert_eq!(version.content_hash, hash.to_string());
    assert_eq!(version.size_bytes, bytes.len() as u64);

    // The object is there, whole, and was assembled from parts (a multipart
    // ETag ends in `-<parts>`).
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("large")
        .with_endpoint(moto.endpoint())
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .build()
        .expect("raw S3 client");
    let meta = raw
        .head(&object_store::path::Path::from(format!(
            "annex/sha256/{}",
            hash.hex()
        )))
        .await
        .expect("the blob's object");
    assert_eq!(meta.size, bytes.len() as u64);
    let etag = meta.e_tag.expect("etag");
    assert!(
        etag.trim_matches('"').contains('-'),
        "multipart ETag: {etag}"
    );

    assert_served(&server, &bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_cut_off_midway_fails_serves_nothing_and_a_retry_succeeds() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.bucket("flaky").await;
    // 20 MiB of bundle: three parts; the proxy lets 12 MiB through.
    let proxy = CutProxy::start(moto.addr, 12 * 1024 * 1024).await;
    let (server, key) = start(Arc::new(Moto::store_at(&proxy.endpoint(), "flaky"))).await;
    let bytes = Arc::new(padded_bundle("flaky", 20 * 1024 * 1024));
    let hash = ContentHash::of(&bytes).to_string();

    let status = publish(&server, &key, "flaky", bytes.clone())
        .await
        .expect_err("the object store went away midway");
    assert_eq!(super::support::code(&status), ErrorCode::Unavailable);
    assert!(
        status.message().contains("blob store"),
        "a clear error: {}",
        status.message()
    );

    // Nothing under the hash: not in the bucket (asked directly), no row,
    // nothing to fetch.
    let direct = moto.store("flaky");
    assert_eq!(direct.blob_size(&hash).await.expect("size"), None);
    assert!(direct.list_blobs().await.expect("list").is_empty());
    assert!(
        server
            .store
            .get_extension(&ExtensionSelector::Slug(format!("{PUB}.flaky")))
            .await
            .expect("store")
            .is_none()
    );
    let status = fetch(&server, &hash).await.expect_err("nothing served");
    assert_eq!(super::support::code(&status), ErrorCode::BundleNotFound);

    proxy.heal();
    publish(&server, &key, "flaky", bytes.clone())
        .await
        .expect("the retry");
    assert_served(&server, &bytes).await;
    assert_eq!(
        direct.blob_size(&hash).await.expect("size"),
        Some(bytes.len() as u64)
    );
}
