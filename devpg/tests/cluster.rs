//! A throwaway cluster from the system binaries: it starts, answers, makes
//! databases (again without complaint), and is gone when dropped. Without
//! PostgreSQL binaries the test fails under `CI=true` and prints a notice and
//! passes elsewhere.

use std::io::Write as _;

use annex_devpg::{LocalPostgres, LocalPostgresOptions};

/// Whether the binaries are here; under `CI=true` their absence is a failure.
fn binaries_or_skip() -> bool {
    if annex_devpg::binaries_available() {
        return true;
    }
    let message = "no PostgreSQL binaries: install postgresql-15 or set ANNEX_PG_BIN";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    let bar = "!".repeat(78);
    let _ = writeln!(std::io::stderr(), "\n{bar}\nSKIPPING: {message}\n{bar}\n");
    false
}

#[tokio::test]
async fn throwaway_cluster_starts_creates_databases_and_is_removed() {
    if !binaries_or_skip() {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let data_dir = root.path().join("pg");
    let cluster = LocalPostgres::start(&data_dir, LocalPostgresOptions::default())
        .await
        .expect("start");
    let port = cluster.port();
    assert_eq!(
        cluster.url(),
        format!("postgres://postgres@127.0.0.1:{port}/annex")
    );
    assert_eq!(
        cluster.url_for("other"),
        format!("postgres://postgres@127.0.0.1:{port}/other")
    );
    assert!(cluster.data_dir().join("PG_VERSION").exists());
    cluster.create_database("other").await.expect("create");
    cluster
        .create_database("other")
        .await
        .expect("an existing database is fine");
    let data_dir = cluster.data_dir().to_owned();
    drop(cluster);
    assert!(!data_dir.exists(), "a throwaway cluster removes its data");
}
