//! The orphan collector in a running control plane: blobs no bundle row
//! references, staging leftovers and spool leftovers are deleted once older
//! than the grace period; published bundles stay; the count is a metric.

use std::sync::Arc;
use std::time::Duration;

use annex_control_plane::store::{BlobStore, FsBlobStore};
use annex_control_plane::{BlobLimits, Limits};
use annex_testkit::http::get;
use annex_testkit::{ControlPlane, ControlPlaneOptions, assert_eventually};

use super::moto::Moto;
use super::{PUB, assert_served, padded_bundle, publish, put_blob, random};

/// Publishes one bundle, leaves an orphan blob and a spool leftover, and
/// waits for the collector to remove exactly the leftovers.
async fn orphans_are_collected(
    blobs: Arc<dyn BlobStore>,
    extra_leftover: Option<std::path::PathBuf>,
) {
    let spool = tempfile::tempdir().expect("spool");
    let server = ControlPlane::start_with(ControlPlaneOptions {
        blobs: Some(blobs.clone()),
        limits: Limits {
            blobs: BlobLimits {
                spool_dir: Some(spool.path().to_owned()),
                orphan_grace: Duration::from_secs(1),
                collect_every: Duration::from_millis(200),
            },
            ..Limits::default()
        },
        ..ControlPlaneOptions::default()
    })
    .await;
    let key = annex_bundle::signing::KeyPair::generate();
    server.trust_key(PUB, &key).await;
    let bundle = Arc::new(padded_bundle("kept", 1024));
    publish(&server, &key, "kept", bundle.clone())
        .await
        .expect("publish");
    let orphan = put_blob(blobs.as_ref(), &random(4096)).await;
    let spooled = spool.path().join("annex-upload-crashed.part");
    std::fs::write(&spooled, b"half an upload").expect("spool leftover");

    let addr = server.admin_addr;
    let blobs_ref = blobs.clone();
    assert_eventually!(
        Duration::from_secs(30),
        async || {
            blobs_ref.blob_size(&orphan).await.expect("size").is_none()
                && !spooled.exists()
                && extra_leftover.as_ref().is_none_or(|p| !p.exists())
        },
        "the orphan and the leftovers to be collected"
    );
    assert_served(&server, &bundle).await;
    assert_eq!(blobs.list_blobs().await.expect("list").len(), 1);
    let metrics = get(addr, "/metrics", &[]).await.text();
    let collected = |kind: &str| -> u64 {
        let prefix = format!("annex_control_plane_blobs_collected_total{{kind=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {kind} count in {metrics}"))
    };
    assert_eq!(collected("blob"), 1);
    assert!(collected("staging") >= 1);
}

#[tokio::test]
async fn orphans_in_a_directory_are_collected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::open(dir.path()).expect("open");
    let staging = dir.path().join("staging/interrupted.part");
    std::fs::write(&staging, b"half a commit").expect("staging leftover");
    orphans_are_collected(Arc::new(store), Some(staging)).await;
}

#[tokio::test]
async fn orphans_in_s3_are_collected() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.bucket("orphans").await;
    orphans_are_collected(Arc::new(moto.store("orphans")), None).await;
}
