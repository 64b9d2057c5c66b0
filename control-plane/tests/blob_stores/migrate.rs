//! `annex-control-plane migrate-blobs` (the binary) copies every referenced
//! blob from Postgres to S3 and to a directory, verifying each; a second run
//! copies nothing, a run after a lost blob copies just that one; a control
//! plane on the new store serves the same bytes.

use std::process::Command;
use std::sync::Arc;

use annex_bundle::hash::ContentHash;
use annex_control_plane::store::{BlobStore, FsBlobStore, PgStore};
use annex_testkit::postgres::TestDatabase;
use annex_testkit::{ControlPlane, ControlPlaneOptions, StoreChoice};

use super::moto::Moto;
use super::{PUB, assert_served, padded_bundle, publish};

/// Runs `migrate-blobs --from postgres --to <to>`; returns its report line.
fn migrate(db: &TestDatabase, moto: &Moto, to: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_annex-control-plane"))
        .args(["migrate-blobs", "--from", "postgres", "--to", to])
        .args(["--database-url", &db.url])
        .args([
            "--blob-s3-endpoint",
            &moto.endpoint(),
            "--blob-s3-allow-http",
        ])
        .args(["--blob-s3-region", "us-east-1"])
        .args(["--blob-s3-access-key-id", "testing"])
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("ANNEX_CONTROL_PLANE_BLOB_STORE")
        .output()
        .expect("running migrate-blobs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate-blobs to {to} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn serve_from(db: &TestDatabase, blobs: Arc<dyn BlobStore>, bundles: &[Arc<Vec<u8>>]) {
    let server = ControlPlane::start_with(ControlPlaneOptions {
        store: StoreChoice::Given(Arc::new(db.connect().await)),
        blobs: Some(blobs),
        ..ControlPlaneOptions::default()
    })
    .await;
    for bytes in bundles {
        assert_served(&server, bytes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_blobs_copies_postgres_to_s3_and_to_a_directory() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let Some(db) = TestDatabase::create("migrate_blobs").await else {
        return;
    };
    moto.bucket("migrated").await;
    let pg: PgStore = db.connect().await;
    let bundles = {
        let server = ControlPlane::start_with(ControlPlaneOptions {
            store: StoreChoice::Given(Arc::new(pg.clone())),
            ..ControlPlaneOptions::default()
        })
        .await;
        let key = annex_bundle::signing::KeyPair::generate();
        server.trust_key(PUB, &key).await;
        // Small, and larger than a Postgres read slice and an S3 part.
        let mut bundles = Vec::new();
        for (name, padding) in [("small", 10), ("large", 10 * 1024 * 1024)] {
            let bytes = Arc::new(padded_bundle(name, padding));
            publish(&server, &key, name, bytes.clone())
                .await
                .unwrap_or_else(|e| panic!("publishing {name}: {e}"));
            bundles.push(bytes);
        }
        bundles
    };

    let report = migrate(&db, &moto, "s3://migrated/annex");
    assert!(
        report.contains("2 referenced: 2 copied, 0 already present"),
        "{report}"
    );
    let report = migrate(&db, &moto, "s3://migrated/annex");
    assert!(report.contains("0 copied, 2 already present"), "{report}");
    // A blob lost from the destination is copied again, and only it.
    let s3 = moto.store("migrated");
    let lost = ContentHash::of(&bundles[1]).to_string();
    assert!(s3.delete_blob(&lost).await.expect("delete"));
    let report = migrate(&db, &moto, "s3://migrated/annex");
    assert!(report.contains("1 copied, 1 already present"), "{report}");
    serve_from(&db, Arc::new(s3), &bundles).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let to = format!("fs:{}", dir.path().display());
    let report = migrate(&db, &moto, &to);
    assert!(report.contains("2 referenced: 2 copied"), "{report}");
    let fs = FsBlobStore::open(dir.path()).expect("open");
    serve_from(&db, Arc::new(fs), &bundles).await;
    db.drop_database().await;
}
