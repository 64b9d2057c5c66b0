//! Postgres-only checks: migrations, rows below the traits, connection errors,
//! and `LocalPostgres` in the persistent mode `annex dev` uses.

use annex_control_plane::store::{HealthStore, PgStore, PgStoreConfig, StoreError};
use annex_devpg::{ClusterMode, LocalPostgres, LocalPostgresOptions};

use super::*;
use annex_testkit::postgres::{self, TestDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_under_concurrent_starts() {
    let Some(db) = TestDatabase::create("migrations").await else {
        return;
    };
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let config = PgStoreConfig {
                url: db.url.clone(),
                max_connections: 2,
            };
            tokio::spawn(PgStore::connect(config))
        })
        .collect();
    for start in starts {
        start.await.expect("task").expect("connect and migrate");
    }
    let store = db.connect().await;
    store.ping().await.expect("ping");
    drop(store);

    let client = db.sql().await;
    let applied = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("query");
    let applied: Vec<String> = applied.iter().map(|r| r.get(0)).collect();
    // Every file in migrations/ is embedded and applied, each once.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("read migrations/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".sql").map(str::to_owned))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    assert_eq!(applied, files);
    for table in [
        "extension_registry",
        "extension_version",
        "extension_bundle",
        "extension_api_endpoint",
        "tenant_extension_install",
        "tenant_extension_install_config",
        "tenant_extension_install_secrets",
        "tenant_extension_schedule",
        "extension_execution_log",
        "extension_quota_usage",
        "ext_storage_records",
        "ext_storage_schemas",
        "ext_storage_usage",
        "publisher_keys",
        "trust_revision",
        "bundle_blobs",
        "workers",
        "idempotency_records",
        "api_keys",
        "tenant_quotas",
        "route_watchers",
    ] {
        let row = client
            .query_one("SELECT to_regclass($1)::text", &[&table])
            .await
            .expect("query");
        assert_eq!(
            row.get::<_, Option<String>>(0).as_deref(),
            Some(table),
            "table {table} exists"
        );
    }
    drop(client);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_writes_endpoint_rows() {
    let Some(db) = TestDatabase::create("endpoints").await else {
        return;
    };
    let store: DynStore = Arc::new(db.connect().await);
    let (_, version) = publish(&store, "acme", "alpha", "1.0.0").await;
    let client = db.sql().await;
    let rows = client
        .query(
            "SELECT method, path, handler FROM extension_api_endpoint WHERE version_id = $1 ORDER BY path",
            &[&version.id],
        )
        .await
        .expect("query");
    let rows: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut expected: Vec<(String, String, String)> = version
        .endpoints
        .iter()
        .map(|e| (e.method.clone(), e.path.clone(), e.handler.clone()))
        .collect();
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(rows, expected);
    drop((client, store));
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_row_and_config_row_agree_and_go_together() {
    let Some(db) = TestDatabase::create("config_rows").await else {
        return;
    };
    let store: DynStore = Arc::new(db.connect().await);
    let client = db.sql().await;
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let row = install(&store, "t1", &v1).await;
    let row = store
        .set_install_config(row.id, config(&[("k", "v")]))
        .await
        .expect("config");
    store
        .set_install_secrets(row.id, Some(secrets("c", "s")))
        .await
        .expect("secrets");

    let stored = client
        .query_one(
            "SELECT i.config, c.config, c.version, c.providers, c.tenant_id \
             FROM tenant_extension_install i JOIN tenant_extension_install_config c ON c.install_id = i.id \
             WHERE i.id = $1",
            &[&row.id],
        )
        .await
        .expect("query");
    let expected = serde_json::json!({"k": "v"});
    assert_eq!(stored.get::<_, serde_json::Value>(0), expected);
    assert_eq!(stored.get::<_, serde_json::Value>(1), expected);
    assert_eq!(stored.get::<_, String>(2), row.config_version);
    assert_eq!(
        stored.get::<_, serde_json::Value>(3),
        serde_json::json!(v1.capabilities)
    );
    assert_eq!(stored.get::<_, String>(4), "t1");

    assert!(store.delete_install(row.id).await.expect("delete"));
    for table in [
        "tenant_extension_install_config",
        "tenant_extension_install_secrets",
    ] {
        let sql = format!("SELECT count(*) FROM {table} WHERE install_id = $1");
        let count: i64 = client
            .query_one(&sql, &[&row.id])
            .await
            .expect("count")
            .get(0);
        assert_eq!(count, 0, "{table} rows of a deleted install");
    }
    drop((client, store));
    db.drop_database().await;
}

#[tokio::test]
async fn unreachable_database_is_unavailable() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = PgStoreConfig {
        url: format!("postgres://postgres@127.0.0.1:{port}/annex"),
        max_connections: 1,
    };
    match PgStore::connect(config).await {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_local_cluster_keeps_data_and_port_across_restarts() {
    if !postgres::local_binaries_or_skip() {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let data_dir = root.path().join("postgres");
    let persistent = || LocalPostgresOptions {
        mode: ClusterMode::Persistent,
    };

    let first = LocalPostgres::start(&data_dir, persistent())
        .await
        .expect("start");
    let port = first.port();
    assert_eq!(
        first.url(),
        format!("postgres://postgres@127.0.0.1:{port}/annex")
    );
    let client = postgres::connect(&first.url()).await;
    client
        .batch_execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        .await
        .expect("write");

    // A second start while it runs adopts the cluster and leaves it running.
    let adopted = LocalPostgres::start(&data_dir, persistent())
        .await
        .expect("adopt");
    assert_eq!(adopted.port(), port);
    drop(adopted);
    client
        .query_one("SELECT 1", &[])
        .await
        .expect("still running");
    drop(client);

    drop(first);
    let again = LocalPostgres::start(&data_dir, persistent())
        .await
        .expect("restart");
    assert_eq!(again.port(), port, "the recorded port is reused");
    let client = postgres::connect(&again.url()).await;
    let row = client
        .query_one("SELECT v FROM kept", &[])
        .await
        .expect("read");
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_keeps_algas_cpu_ms_and_mem_mb_ms_columns_in_step() {
    let Some(db) = TestDatabase::create("usage_columns").await else {
        return;
    };
    let store: DynStore = Arc::new(db.connect().await);
    let registry = Uuid::new_v4();
    let row = |cpu_us: u64, memory_byte_ms: u64| annex_control_plane::store::UsageRow {
        tenant_id: "t".into(),
        registry_id: registry,
        window_start: at(600),
        invocations: 1,
        cpu_us,
        memory_byte_ms,
        egress_bytes: 0,
        fuel: 0,
    };
    // 0.6 ms + 0.6 ms + 0.9 ms = 2.1 ms: whole milliseconds of the running total.
    for (cpu, mem) in [(600, 700_000), (600, 700_000), (900, 700_000)] {
        store.add_usage(vec![row(cpu, mem)]).await.expect("add");
    }
    let client = db.sql().await;
    let got = client
        .query_one(
            "SELECT cpu_us, cpu_ms, memory_byte_ms, mem_mb_ms, invocations FROM extension_quota_usage",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(got.get::<_, i64>("cpu_us"), 2_100);
    assert_eq!(got.get::<_, i64>("cpu_ms"), 2);
    assert_eq!(got.get::<_, i64>("memory_byte_ms"), 2_100_000);
    assert_eq!(
        got.get::<_, i64>("mem_mb_ms"),
        2,
        "2,100,000 bytes·ms is 2 MiB·ms"
    );
    assert_eq!(got.get::<_, i64>("invocations"), 3);
    drop(client);
    db.drop_database().await;
}

/// Puts of one install committed as a group: one the database refuses (a
/// NUL character, which `jsonb` cannot hold) fails alone with a clear
/// error; every other put of the same moment is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_put_fails_alone_among_concurrent_puts() {
    use annex_control_plane::store::{StoragePut, StorageQuota, StorageScope};
    let Some(db) = TestDatabase::create("grouped_puts").await else {
        return;
    };
    let store: DynStore = Arc::new(db.connect().await);
    let (_, version) = publish(&store, "acme", "alpha", "1.0.0").await;
    let installed = install(&store, "t1", &version).await;
    let scope = StorageScope {
        tenant_id: installed.tenant_id.clone(),
        install_id: installed.id,
    };
    let put = |key: String, value: &str| {
        let value = serde_json::json!(value);
        let metadata = serde_json::json!({});
        StoragePut {
            namespace: "ns".into(),
            key,
            size_bytes: (value.to_string().len() + 2) as u64,
            value,
            metadata,
            ttl_expires_at: None,
            if_revision: None,
        }
    };
    let mut tasks = Vec::new();
    for i in 0..41 {
        let store = store.clone();
        let scope = scope.clone();
        let p = if i == 20 {
            put("bad".into(), "nul \u{0} inside")
        } else {
            put(format!("k{i:02}"), "fine")
        };
        tasks.push(tokio::spawn(async move {
            store
                .storage_put(&scope, p, StorageQuota::default(), at(NOW))
                .await
        }));
    }
    let mut stored = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.expect("task") {
            Ok(row) => {
                assert_ne!(i, 20, "the NUL value was stored");
                assert_eq!(row.revision, 1);
                stored += 1;
            }
            Err(e) => {
                assert_eq!(i, 20, "put {i} failed: {e:?}");
                assert!(matches!(e, StoreError::InvalidData(_)), "{e:?}");
            }
        }
    }
    assert_eq!(stored, 40);
    let listed = store
        .storage_list(&scope, "ns", None, None, 100, at(NOW))
        .await
        .expect("list");
    assert_eq!(listed.len(), 40);
    drop(store);
    db.drop_database().await;
}
