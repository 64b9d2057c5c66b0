//! The store conformance suite: one file of cases per store area, named as
//! in `src/store/`; [`store_cases!`] runs every case of a file against
//! `MemoryStore` (`<area>::memory::<case>`) and against `PgStore` on a fresh
//! database (`<area>::postgres::<case>`), and
//! [`every_case_runs_on_both_stores`] checks that no case is left out. The
//! Postgres-only checks (migrations, rows below the traits, connection
//! errors, the persistent local cluster) are in `postgres_only`.
//!
//! Postgres (`annex_testkit::postgres`): `DATABASE_URL` if set (each test creates and drops its own
//! database there), else one throwaway cluster per test binary started with
//! `annex_devpg::LocalPostgres` from the system binaries. With neither, the
//! Postgres tests fail under `CI=true` and print a notice and pass elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use annex_control_plane::store::{
    BlobStore, EndpointRow, ExtensionRow, ExtensionSelector, InstallRow, InstallStatus, KeyRow,
    NewInstall, NewVersion, SecretsRow, Store, StoreError, UiRow, VersionRow, VersionSpec,
};
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

type DynStore = Arc<dyn Store>;

/// Commits `bytes` under `hash` from a spooled file, as a publish does.
async fn put_blob(store: &dyn BlobStore, hash: &str, bytes: &[u8]) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), bytes).expect("write");
    store
        .put_blob_file(hash, file.path())
        .await
        .expect("put_blob_file");
}

/// The whole blob, read through its stream.
async fn read_blob(store: &dyn BlobStore, hash: &str) -> Option<Bytes> {
    use futures::StreamExt as _;
    let mut read = store.get_blob(hash).await.expect("get_blob")?;
    let mut out = Vec::new();
    while let Some(chunk) = read.chunks.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(out.len() as u64, read.size, "streamed size");
    Some(Bytes::from(out))
}

/// Runs each named case of the calling module against both stores, and names
/// them in `CASES` for [`every_case_runs_on_both_stores`]. A case is an
/// `async fn name(store: DynStore)` of that module.
macro_rules! store_cases {
    ($($case:ident),* $(,)?) => {
        pub(crate) const CASES: &[&str] = &[$(stringify!($case)),*];

        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let store = annex_control_plane::store::MemoryStore::new();
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = annex_testkit::postgres::TestDatabase::create(stringify!($case)).await
                    else {
                        return;
                    };
                    super::$case(std::sync::Arc::new(db.connect().await)).await;
                    db.drop_database().await;
                }
            )*
        }
    };
}

// ---- fixtures ----

/// A fixed "now" for cases that pass their own clock.
const NOW: i64 = 1_750_000_000;

fn content_hash() -> String {
    format!(
        "sha256:{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

fn exact(v: &str) -> VersionSpec {
    VersionSpec::Exact(v.to_owned())
}

fn wildcard(major: u64, minor: u64) -> VersionSpec {
    VersionSpec::Wildcard { major, minor }
}

fn new_version(publisher: &str, name: &str, version: VersionSpec) -> NewVersion {
    NewVersion {
        publisher: publisher.to_owned(),
        name: name.to_owned(),
        version,
        runtime: "wasm-js@1".to_owned(),
        main_entry: "ui/index.html".to_owned(),
        endpoints: vec![
            EndpointRow {
                method: "GET".into(),
                path: "/api/status".into(),
                handler: "dist/main".into(),
            },
            EndpointRow {
                method: "POST".into(),
                path: "/api/items/:id".into(),
                handler: "dist/main".into(),
            },
        ],
        ui: Some(UiRow {
            entry: "ui/index.html".to_owned(),
            app_menu_label: Some("Alpha".to_owned()),
            client_portal_menu_label: None,
        }),
        capabilities: vec!["cap:log.emit".to_owned(), "cap:storage.kv".to_owned()],
        content_hash: content_hash(),
        signature: "c2lnbmF0dXJl".to_owned(),
        signing_key_id: "acme-2025".to_owned(),
        size_bytes: 4096,
    }
}

async fn publish(
    store: &DynStore,
    publisher: &str,
    name: &str,
    version: &str,
) -> (ExtensionRow, VersionRow) {
    store
        .publish_version(new_version(publisher, name, exact(version)))
        .await
        .expect("publish")
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .expect("valid timestamp")
}

fn key(key_id: &str, publisher: &str) -> KeyRow {
    KeyRow {
        key_id: key_id.to_owned(),
        publisher: publisher.to_owned(),
        public_key: vec![7; 32],
        not_before: at(1_700_000_000),
        not_after: Some(at(1_900_000_000)),
        revoked_at: None,
        created_at: at(0),
    }
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn new_install(tenant: &str, version: &VersionRow) -> NewInstall {
    NewInstall {
        tenant_id: tenant.to_owned(),
        registry_id: version.registry_id,
        version_id: version.id,
        granted_caps: version.capabilities.clone(),
        config: config(&[("region", "eu")]),
        egress_allowlist: vec!["api.example.com".to_owned()],
    }
}

async fn install(store: &DynStore, tenant: &str, version: &VersionRow) -> InstallRow {
    store
        .upsert_install(new_install(tenant, version))
        .await
        .expect("install")
}

fn secrets(ciphertext: &str, version: &str) -> SecretsRow {
    SecretsRow {
        ciphertext: ciphertext.to_owned(),
        algorithm: "annex-aead:v1".to_owned(),
        key_path: Some("k1".to_owned()),
        mount: None,
        version: version.to_owned(),
        expires_at: Some(at(1_800_000_000)),
    }
}

fn slug(s: &str) -> ExtensionSelector {
    ExtensionSelector::parse(s).expect("selector")
}

fn versions_of(list: &[VersionRow]) -> Vec<&str> {
    list.iter().map(|v| v.version.as_str()).collect()
}

mod apikeys;
mod blobs;
mod captures;
mod executions;
mod fleet;
mod health;
mod idempotency;
mod installs;
mod kv;
mod logs;
mod postgres_only;
mod quota;
mod registry;
mod rollouts;
mod schedules;
mod trust;

/// Every `async fn name(store: DynStore)` of an area file is in that file's
/// `store_cases!` list, and no area file declares a test of its own: each
/// case runs on both stores.
#[test]
fn every_case_runs_on_both_stores() {
    let areas: [(&str, &[&str], &str); 15] = [
        ("apikeys", apikeys::CASES, include_str!("apikeys.rs")),
        ("blobs", blobs::CASES, include_str!("blobs.rs")),
        ("captures", captures::CASES, include_str!("captures.rs")),
        (
            "executions",
            executions::CASES,
            include_str!("executions.rs"),
        ),
        ("fleet", fleet::CASES, include_str!("fleet.rs")),
        ("health", health::CASES, include_str!("health.rs")),
        (
            "idempotency",
            idempotency::CASES,
            include_str!("idempotency.rs"),
        ),
        ("installs", installs::CASES, include_str!("installs.rs")),
        ("kv", kv::CASES, include_str!("kv.rs")),
        ("logs", logs::CASES, include_str!("logs.rs")),
        ("quota", quota::CASES, include_str!("quota.rs")),
        ("registry", registry::CASES, include_str!("registry.rs")),
        ("rollouts", rollouts::CASES, include_str!("rollouts.rs")),
        ("schedules", schedules::CASES, include_str!("schedules.rs")),
        ("trust", trust::CASES, include_str!("trust.rs")),
    ];
    let mut total = 0;
    for (area, cases, source) in areas {
        assert!(
            !source.contains("#[tokio::test") && !source.contains("#[test"),
            "{area}.rs declares a test outside store_cases!: it would run on one store only"
        );
        let defined: Vec<&str> = source
            .split("async fn ")
            .skip(1)
            .filter_map(|item| {
                let (name, rest) = item.split_once('(')?;
                let (params, _) = rest.split_once(')')?;
                let params: String = params.split_whitespace().collect();
                (params.trim_end_matches(',') == "store:DynStore").then_some(name.trim())
            })
            .collect();
        for name in &defined {
            assert!(
                cases.contains(name),
                "case {area}::{name} is missing from its store_cases! list"
            );
        }
        assert_eq!(defined.len(), cases.len(), "{area}: {cases:?}");
        total += cases.len();
    }
    assert!(total >= 54, "{total} cases");
}
