//! The store conformance suite: every case below runs against `MemoryStore`
//! (module `memory`) and against `PgStore` on a fresh database (module
//! `postgres`). A few Postgres-only checks (migrations, rows left behind,
//! connection errors) follow in `postgres_only`.
//!
//! Postgres: `DATABASE_URL` if set (each test creates and drops its own
//! database there), else one throwaway cluster per test binary started with
//! `LocalPostgres` from the system binaries. With neither, the Postgres tests
//! fail under `CI=true` and print a notice and pass elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use annex_control_plane::store::{
    EndpointRow, ExtensionRow, ExtensionSelector, InstallRow, InstallStatus, KeyRow, NewInstall,
    NewVersion, SecretsRow, Store, StoreError, UiRow, VersionRow, VersionSpec,
};
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

type DynStore = Arc<dyn Store>;

/// Runs each named case against both stores.
macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(std::sync::Arc::new(annex_control_plane::store::MemoryStore::new())).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = super::pg_harness::TestDatabase::create(stringify!($case)).await else {
                        return;
                    };
                    super::$case(std::sync::Arc::new(db.connect().await)).await;
                    db.drop_database().await;
                }
            )*
        }
    };
}

store_suite!(
    publish_then_get_by_id_and_slug,
    extensions_list_by_publisher_then_name,
    duplicate_version_is_rejected_without_writing,
    concurrent_publishes_of_one_version_have_one_winner,
    wildcard_takes_the_next_stable_patch,
    concurrent_wildcard_publishes_get_distinct_patches,
    versions_list_newest_first,
    deprecate_marks_the_version,
    version_by_content_hash_finds_the_newest_owner,
    blobs_are_idempotent_and_kept_while_referenced,
    keys_add_list_revoke_and_revision,
    reinstall_keeps_id_and_secrets_and_resets_config,
    install_needs_a_version_of_its_extension,
    find_install_by_install_id_registry_id_or_slug,
    find_install_never_returns_another_tenants_install,
    disabled_install_is_found_but_inactive,
    set_install_version_keeps_config,
    set_install_config_writes_a_new_config_version,
    secrets_set_replace_and_delete,
    delete_install_removes_config_and_secrets,
    installs_list_by_publisher_then_name,
    ping_answers,
);

// ---- fixtures ----

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

// ---- registry ----

async fn publish_then_get_by_id_and_slug(store: DynStore) {
    let new = new_version("Acme", "Alpha", exact("1.0.0"));
    let (ext, version) = store.publish_version(new.clone()).await.expect("publish");

    assert_eq!(
        (
            ext.publisher.as_str(),
            ext.name.as_str(),
            ext.slug().as_str()
        ),
        ("Acme", "Alpha", "acme.alpha")
    );
    assert_eq!(version.registry_id, ext.id);
    assert_eq!(
        (version.publisher.as_str(), version.name.as_str()),
        ("Acme", "Alpha")
    );
    assert_eq!(
        (version.version.as_str(), version.manifest_version.as_str()),
        ("1.0.0", "1.0.0")
    );
    assert_eq!(version.runtime, new.runtime);
    assert_eq!(version.main_entry, new.main_entry);
    assert_eq!(version.endpoints, new.endpoints);
    assert_eq!(version.ui, new.ui);
    assert_eq!(version.capabilities, new.capabilities);
    assert!(!version.deprecated);
    assert_eq!(version.deprecation_reason, None);
    assert_eq!(version.bundle.version_id, version.id);
    assert_eq!(version.bundle.content_hash, new.content_hash);
    assert_eq!(version.bundle.signature, new.signature);
    assert_eq!(version.bundle.signing_key_id, new.signing_key_id);
    assert_eq!(version.bundle.size_bytes, 4096);

    let by_id = store
        .get_extension(&ExtensionSelector::Id(ext.id))
        .await
        .expect("get");
    assert_eq!(by_id.as_ref(), Some(&ext));
    for s in ["acme.alpha", "ACME.Alpha", " acme.ALPHA "] {
        assert_eq!(
            store.get_extension(&slug(s)).await.expect("get").as_ref(),
            Some(&ext),
            "{s}"
        );
    }
    assert_eq!(
        store
            .get_extension(&ExtensionSelector::Slug("Acme.Alpha".into()))
            .await
            .expect("get"),
        Some(ext.clone())
    );
    assert_eq!(
        store.get_extension(&slug("acme.beta")).await.expect("get"),
        None
    );
    assert_eq!(
        store
            .get_extension(&ExtensionSelector::Id(Uuid::new_v4()))
            .await
            .expect("get"),
        None
    );
    // A version id is not a registry id.
    assert_eq!(
        store
            .get_extension(&ExtensionSelector::Id(version.id))
            .await
            .expect("get"),
        None
    );

    assert_eq!(
        store
            .get_version(ext.id, "1.0.0")
            .await
            .expect("get")
            .as_ref(),
        Some(&version)
    );
    assert_eq!(
        store
            .get_version_by_id(version.id)
            .await
            .expect("get")
            .as_ref(),
        Some(&version)
    );
    assert_eq!(store.get_version(ext.id, "1.0.1").await.expect("get"), None);
    assert_eq!(
        store.get_version_by_id(Uuid::new_v4()).await.expect("get"),
        None
    );

    // A second version reuses the registry row.
    let (again, v2) = publish(&store, "Acme", "Alpha", "1.1.0").await;
    assert_eq!(again, ext);
    assert_ne!(v2.id, version.id);
    assert_eq!(store.list_extensions().await.expect("list"), vec![ext]);
}

async fn extensions_list_by_publisher_then_name(store: DynStore) {
    for (publisher, name) in [("zeta", "a"), ("acme", "b"), ("acme", "a"), ("Acme", "z")] {
        publish(&store, publisher, name, "1.0.0").await;
    }
    let listed: Vec<(String, String)> = store
        .list_extensions()
        .await
        .expect("list")
        .into_iter()
        .map(|e| (e.publisher, e.name))
        .collect();
    // Byte order, as `COLLATE "C"`: upper case sorts first.
    let expected = [("Acme", "z"), ("acme", "a"), ("acme", "b"), ("zeta", "a")];
    assert_eq!(listed, expected.map(|(p, n)| (p.to_owned(), n.to_owned())));
}

async fn duplicate_version_is_rejected_without_writing(store: DynStore) {
    let first = new_version("acme", "alpha", exact("1.0.0"));
    store
        .put_blob(&first.content_hash, Bytes::from_static(b"first bundle"))
        .await
        .expect("put");
    let (ext, published) = store.publish_version(first.clone()).await.expect("publish");

    let second = new_version("acme", "alpha", exact("1.0.0"));
    let err = store
        .publish_version(second.clone())
        .await
        .expect_err("duplicate");
    assert!(
        matches!(&err, StoreError::VersionExists { version } if version == "1.0.0"),
        "{err:?}"
    );

    assert_eq!(
        store.list_versions(ext.id).await.expect("list"),
        vec![published.clone()]
    );
    assert_eq!(
        store
            .version_by_content_hash(&second.content_hash)
            .await
            .expect("by hash"),
        None
    );
    assert_eq!(
        store
            .version_by_content_hash(&first.content_hash)
            .await
            .expect("by hash"),
        Some(published)
    );
    let blob = store.get_blob(&first.content_hash).await.expect("get");
    assert_eq!(blob, Some(Bytes::from_static(b"first bundle")));
    assert_eq!(store.list_extensions().await.expect("list").len(), 1);
}

async fn concurrent_publishes_of_one_version_have_one_winner(store: DynStore) {
    // The extension does not exist yet: the registry row is raced for as well.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .publish_version(new_version("acme", "race", exact("2.0.0")))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok((_, version)) => winners.push(version),
            Err(StoreError::VersionExists { version }) => assert_eq!(version, "2.0.0"),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one publish wins");
    let extensions = store.list_extensions().await.expect("list");
    assert_eq!(extensions.len(), 1);
    assert_eq!(
        store.list_versions(extensions[0].id).await.expect("list"),
        winners
    );
}

async fn wildcard_takes_the_next_stable_patch(store: DynStore) {
    let (ext, first) = store
        .publish_version(new_version("acme", "wild", wildcard(1, 2)))
        .await
        .expect("publish");
    assert_eq!(
        (first.version.as_str(), first.manifest_version.as_str()),
        ("1.2.0", "1.2.*")
    );

    publish(&store, "acme", "wild", "1.2.3").await;
    publish(&store, "acme", "wild", "1.2.4-beta").await;
    publish(&store, "acme", "wild", "1.3.7").await;
    let (_, next) = store
        .publish_version(new_version("acme", "wild", wildcard(1, 2)))
        .await
        .expect("publish");
    assert_eq!(
        (next.version.as_str(), next.manifest_version.as_str()),
        ("1.2.4", "1.2.*")
    );
    assert_eq!(
        store.get_version(ext.id, "1.2.4").await.expect("get"),
        Some(next)
    );

    let (_, other_minor) = store
        .publish_version(new_version("acme", "wild", wildcard(2, 0)))
        .await
        .expect("publish");
    assert_eq!(other_minor.version, "2.0.0");
}

async fn concurrent_wildcard_publishes_get_distinct_patches(store: DynStore) {
    publish(&store, "acme", "wild", "3.1.0").await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .publish_version(new_version("acme", "wild", wildcard(3, 1)))
                    .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.expect("task").expect("publish").1.version);
    }
    versions.sort_by_key(|v| v.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()));
    let expected: Vec<String> = (1..=8).map(|p| format!("3.1.{p}")).collect();
    assert_eq!(versions, expected);
}

async fn versions_list_newest_first(store: DynStore) {
    let (ext, _) = publish(&store, "acme", "alpha", "1.0.0").await;
    publish(&store, "acme", "alpha", "1.1.0").await;
    publish(&store, "acme", "alpha", "0.9.0").await;
    publish(&store, "acme", "other", "5.0.0").await;

    let listed = store.list_versions(ext.id).await.expect("list");
    assert_eq!(versions_of(&listed), ["0.9.0", "1.1.0", "1.0.0"]);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].created_at >= w[1].created_at)
    );
    assert_eq!(
        store.list_versions(Uuid::new_v4()).await.expect("list"),
        vec![]
    );
}

async fn deprecate_marks_the_version(store: DynStore) {
    let (ext, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, v2) = publish(&store, "acme", "alpha", "1.1.0").await;

    let deprecated = store
        .deprecate_version(ext.id, "1.0.0", "security fix in 1.1.0")
        .await
        .expect("deprecate");
    assert_eq!(
        deprecated,
        VersionRow {
            deprecated: true,
            deprecation_reason: Some("security fix in 1.1.0".into()),
            ..v1
        }
    );
    assert_eq!(
        store.get_version(ext.id, "1.0.0").await.expect("get"),
        Some(deprecated.clone())
    );
    assert_eq!(
        store.get_version(ext.id, "1.1.0").await.expect("get"),
        Some(v2)
    );

    let again = store
        .deprecate_version(ext.id, "1.0.0", "superseded")
        .await
        .expect("deprecate again");
    assert_eq!(again.deprecation_reason.as_deref(), Some("superseded"));

    let missing = store
        .deprecate_version(ext.id, "9.9.9", "x")
        .await
        .expect_err("absent");
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
    let other = store
        .deprecate_version(Uuid::new_v4(), "1.0.0", "x")
        .await
        .expect_err("absent");
    assert!(matches!(other, StoreError::NotFound(_)), "{other:?}");
}

async fn version_by_content_hash_finds_the_newest_owner(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, v2) = publish(&store, "acme", "alpha", "1.1.0").await;
    assert_eq!(
        store
            .version_by_content_hash(&v1.bundle.content_hash)
            .await
            .expect("get"),
        Some(v1)
    );
    assert_eq!(
        store
            .version_by_content_hash(&v2.bundle.content_hash)
            .await
            .expect("get"),
        Some(v2)
    );
    assert_eq!(
        store
            .version_by_content_hash(&content_hash())
            .await
            .expect("get"),
        None
    );

    // The same bytes published twice under a wildcard: the newest version owns them.
    let same = new_version("acme", "beta", wildcard(1, 0));
    store.publish_version(same.clone()).await.expect("publish");
    let (_, newest) = store.publish_version(same.clone()).await.expect("publish");
    assert_eq!(newest.version, "1.0.1");
    assert_eq!(
        store
            .version_by_content_hash(&same.content_hash)
            .await
            .expect("get"),
        Some(newest)
    );
}

// ---- blobs ----

async fn blobs_are_idempotent_and_kept_while_referenced(store: DynStore) {
    let loose = content_hash();
    store
        .put_blob(&loose, Bytes::from_static(b"one"))
        .await
        .expect("put");
    store
        .put_blob(&loose, Bytes::from_static(b"two"))
        .await
        .expect("put again");
    assert_eq!(
        store.get_blob(&loose).await.expect("get"),
        Some(Bytes::from_static(b"one")),
        "first write wins"
    );
    assert_eq!(store.get_blob(&content_hash()).await.expect("get"), None);

    let new = new_version("acme", "alpha", exact("1.0.0"));
    let bytes = Bytes::from(vec![0u8, 1, 2, 255].repeat(1024));
    store
        .put_blob(&new.content_hash, bytes.clone())
        .await
        .expect("put");
    store.publish_version(new.clone()).await.expect("publish");

    assert!(
        !store
            .delete_unreferenced_blob(&new.content_hash)
            .await
            .expect("delete"),
        "referenced"
    );
    assert_eq!(
        store.get_blob(&new.content_hash).await.expect("get"),
        Some(bytes)
    );

    assert!(
        store
            .delete_unreferenced_blob(&loose)
            .await
            .expect("delete")
    );
    assert_eq!(store.get_blob(&loose).await.expect("get"), None);
    assert!(
        !store
            .delete_unreferenced_blob(&loose)
            .await
            .expect("delete"),
        "already gone"
    );
    assert!(
        !store
            .delete_unreferenced_blob(&content_hash())
            .await
            .expect("delete"),
        "never stored"
    );
}

// ---- trust ----

async fn keys_add_list_revoke_and_revision(store: DynStore) {
    let (keys, mut revision) = store.list_keys(None).await.expect("list");
    assert!(keys.is_empty());

    let mut added = Vec::new();
    for (key_id, publisher) in [("k1", "acme"), ("k2", "beta"), ("k0", "acme")] {
        let row = store.add_key(key(key_id, publisher)).await.expect("add");
        assert_eq!(
            row,
            KeyRow {
                created_at: row.created_at,
                ..key(key_id, publisher)
            }
        );
        assert!(
            row.created_at > at(1_700_000_000),
            "created_at is set by the store"
        );
        let (_, now) = store.list_keys(None).await.expect("list");
        assert!(now > revision, "add moves the revision");
        revision = now;
        added.push(row);
    }
    let ids = |keys: &[KeyRow]| keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>();
    let (all, _) = store.list_keys(None).await.expect("list");
    assert_eq!(ids(&all), ["k0", "k1", "k2"]);
    assert_eq!(all[1], added[0]);
    let (acme, _) = store.list_keys(Some("acme")).await.expect("list");
    assert_eq!(ids(&acme), ["k0", "k1"]);
    assert!(
        store
            .list_keys(Some("nobody"))
            .await
            .expect("list")
            .0
            .is_empty()
    );

    let dup = store
        .add_key(key("k1", "other"))
        .await
        .expect_err("duplicate");
    assert!(matches!(dup, StoreError::AlreadyExists(_)), "{dup:?}");
    assert_eq!(
        store.list_keys(None).await.expect("list").1,
        revision,
        "a refused add changes nothing"
    );

    let revoked = store.revoke_key("k1").await.expect("revoke");
    let revoked_at = revoked.revoked_at.expect("revoked_at set");
    let (_, after_revoke) = store.list_keys(None).await.expect("list");
    assert!(after_revoke > revision);
    let again = store.revoke_key("k1").await.expect("revoke again");
    assert_eq!(
        again.revoked_at,
        Some(revoked_at),
        "idempotent: keeps the first time"
    );
    assert_eq!(store.list_keys(None).await.expect("list").1, after_revoke);
    let (acme, _) = store.list_keys(Some("acme")).await.expect("list");
    assert_eq!(acme[1].revoked_at, Some(revoked_at));
    assert_eq!(acme[0].revoked_at, None);

    let missing = store.revoke_key("nope").await.expect_err("absent");
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
}

// ---- installs ----

async fn reinstall_keeps_id_and_secrets_and_resets_config(store: DynStore) {
    let (ext, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, v2) = publish(&store, "acme", "alpha", "2.0.0").await;

    let first = install(&store, "t1", &v1).await;
    assert_eq!(
        (
            first.tenant_id.as_str(),
            first.registry_id,
            first.version_id
        ),
        ("t1", ext.id, v1.id)
    );
    assert_eq!(first.granted_caps, v1.capabilities);
    assert_eq!(first.config, config(&[("region", "eu")]));
    assert_eq!(first.egress_allowlist, ["api.example.com"]);
    assert!(first.enabled && first.status == InstallStatus::Enabled && first.is_active());
    assert!(!first.config_version.is_empty());

    store
        .set_install_secrets(first.id, Some(secrets("c1", "s1")))
        .await
        .expect("secrets");
    store
        .set_install_enabled(first.id, false)
        .await
        .expect("disable");

    let again = store
        .upsert_install(NewInstall {
            version_id: v2.id,
            granted_caps: vec!["cap:log.emit".into()],
            config: BTreeMap::new(),
            egress_allowlist: vec![],
            ..new_install("t1", &v1)
        })
        .await
        .expect("reinstall");
    assert_eq!(again.id, first.id);
    assert_eq!(again.created_at, first.created_at);
    assert_eq!(again.version_id, v2.id);
    assert_eq!(again.granted_caps, ["cap:log.emit"]);
    assert!(again.config.is_empty(), "config is reset");
    assert_ne!(again.config_version, first.config_version);
    assert!(again.egress_allowlist.is_empty());
    assert!(again.is_active(), "a reinstall enables");

    let view = store
        .find_install("t1", &ExtensionSelector::Id(first.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(view.install, again);
    assert_eq!(view.version, v2);
    assert_eq!(view.secrets, Some(secrets("c1", "s1")), "secrets are kept");
}

async fn install_needs_a_version_of_its_extension(store: DynStore) {
    let (_, alpha) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, beta) = publish(&store, "acme", "beta", "1.0.0").await;

    let crossed = NewInstall {
        version_id: beta.id,
        ..new_install("t1", &alpha)
    };
    let err = store
        .upsert_install(crossed)
        .await
        .expect_err("foreign version");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let unknown = NewInstall {
        version_id: Uuid::new_v4(),
        ..new_install("t1", &alpha)
    };
    let err = store
        .upsert_install(unknown)
        .await
        .expect_err("unknown version");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(store.list_installs("t1").await.expect("list").is_empty());
}

async fn find_install_by_install_id_registry_id_or_slug(store: DynStore) {
    let (ext, v1) = publish(&store, "Acme", "Alpha", "1.0.0").await;
    let mine = install(&store, "t1", &v1).await;
    store
        .set_install_secrets(mine.id, Some(secrets("c", "s")))
        .await
        .expect("secrets");

    for selector in [
        ExtensionSelector::Id(mine.id),
        ExtensionSelector::Id(ext.id),
        slug("acme.alpha"),
        slug("ACME.ALPHA"),
        slug(&mine.id.to_string()),
    ] {
        let view = store
            .find_install("t1", &selector)
            .await
            .expect("find")
            .expect("found");
        assert_eq!(view.install, mine, "{selector:?}");
        assert_eq!(view.extension, ext);
        assert_eq!(view.version, v1);
        assert_eq!(view.secrets, Some(secrets("c", "s")));
    }
    assert!(
        store
            .find_install("t1", &slug("acme.beta"))
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        store
            .find_install("t1", &ExtensionSelector::Id(v1.id))
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        store
            .find_install("t1", &ExtensionSelector::Id(Uuid::new_v4()))
            .await
            .expect("find")
            .is_none()
    );
}

async fn find_install_never_returns_another_tenants_install(store: DynStore) {
    let (alpha, a1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (beta, b1) = publish(&store, "acme", "beta", "1.0.0").await;
    let mine = install(&store, "t1", &a1).await;
    let theirs = install(&store, "t2", &a1).await;
    let their_beta = install(&store, "t2", &b1).await;
    assert_ne!(mine.id, theirs.id);

    let find = |tenant: &'static str, selector: ExtensionSelector| {
        let store = store.clone();
        async move {
            store
                .find_install(tenant, &selector)
                .await
                .expect("find")
                .map(|v| v.install.id)
        }
    };
    assert_eq!(find("t1", ExtensionSelector::Id(theirs.id)).await, None);
    assert_eq!(find("t1", ExtensionSelector::Id(their_beta.id)).await, None);
    assert_eq!(find("t1", ExtensionSelector::Id(beta.id)).await, None);
    assert_eq!(find("t1", slug("acme.beta")).await, None);
    assert_eq!(
        find("t1", ExtensionSelector::Id(alpha.id)).await,
        Some(mine.id)
    );
    assert_eq!(
        find("t2", ExtensionSelector::Id(alpha.id)).await,
        Some(theirs.id)
    );
    assert_eq!(find("t2", ExtensionSelector::Id(mine.id)).await, None);
    assert_eq!(find("t3", slug("acme.alpha")).await, None);
}

async fn disabled_install_is_found_but_inactive(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let row = install(&store, "t1", &v1).await;

    let disabled = store
        .set_install_enabled(row.id, false)
        .await
        .expect("disable");
    assert!(
        !disabled.enabled && disabled.status == InstallStatus::Disabled && !disabled.is_active()
    );
    assert_eq!(disabled.config_version, row.config_version);
    let view = store
        .find_install("t1", &slug("acme.alpha"))
        .await
        .expect("find")
        .expect("still found");
    assert_eq!(view.install, disabled);
    assert_eq!(store.list_installs("t1").await.expect("list").len(), 1);

    let enabled = store
        .set_install_enabled(row.id, true)
        .await
        .expect("enable");
    assert!(enabled.enabled && enabled.status == InstallStatus::Enabled && enabled.is_active());

    let err = store
        .set_install_enabled(Uuid::new_v4(), true)
        .await
        .expect_err("absent");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn set_install_version_keeps_config(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, v2) = publish(&store, "acme", "alpha", "1.1.0").await;
    let (_, other) = publish(&store, "acme", "beta", "1.1.0").await;
    let row = install(&store, "t1", &v1).await;

    let moved = store
        .set_install_version(row.id, v2.id, vec!["cap:a".into(), "cap:b".into()])
        .await
        .expect("move");
    assert_eq!(moved.id, row.id);
    assert_eq!(moved.version_id, v2.id);
    assert_eq!(moved.granted_caps, ["cap:a", "cap:b"]);
    assert_eq!(
        (&moved.config, &moved.config_version),
        (&row.config, &row.config_version)
    );
    let view = store
        .find_install("t1", &ExtensionSelector::Id(row.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(view.version, v2);

    let err = store
        .set_install_version(row.id, other.id, vec![])
        .await
        .expect_err("foreign version");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .set_install_version(Uuid::new_v4(), v2.id, vec![])
        .await
        .expect_err("absent install");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let unchanged = store
        .find_install("t1", &ExtensionSelector::Id(row.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(unchanged.install, moved);
}

async fn set_install_config_writes_a_new_config_version(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let row = install(&store, "t1", &v1).await;

    let first = store
        .set_install_config(row.id, config(&[("a", "1"), ("b", "two")]))
        .await
        .expect("config");
    assert_eq!(first.config, config(&[("a", "1"), ("b", "two")]));
    assert_ne!(first.config_version, row.config_version);
    let second = store
        .set_install_config(row.id, config(&[("a", "1"), ("b", "two")]))
        .await
        .expect("config");
    assert_ne!(
        second.config_version, first.config_version,
        "every write is a new version"
    );

    let view = store
        .find_install("t1", &ExtensionSelector::Id(row.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(view.install, second);
    let cleared = store
        .set_install_config(row.id, BTreeMap::new())
        .await
        .expect("clear");
    assert!(cleared.config.is_empty());

    let err = store
        .set_install_config(Uuid::new_v4(), BTreeMap::new())
        .await
        .expect_err("absent");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

async fn secrets_set_replace_and_delete(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let row = install(&store, "t1", &v1).await;
    let find_secrets = || {
        let store = store.clone();
        async move {
            let view = store
                .find_install("t1", &ExtensionSelector::Id(row.id))
                .await
                .expect("find");
            view.expect("found").secrets
        }
    };
    assert_eq!(find_secrets().await, None);

    store
        .set_install_secrets(row.id, Some(secrets("c1", "s1")))
        .await
        .expect("set");
    assert_eq!(find_secrets().await, Some(secrets("c1", "s1")));
    let alga = SecretsRow {
        ciphertext: "eyJrIjoidiJ9".into(),
        algorithm: "inline/base64".into(),
        key_path: None,
        mount: None,
        version: "s2".into(),
        expires_at: None,
    };
    store
        .set_install_secrets(row.id, Some(alga.clone()))
        .await
        .expect("replace");
    assert_eq!(find_secrets().await, Some(alga));

    store
        .set_install_secrets(row.id, None)
        .await
        .expect("delete");
    assert_eq!(find_secrets().await, None);
    store
        .set_install_secrets(row.id, None)
        .await
        .expect("delete again");

    for value in [Some(secrets("c", "s")), None] {
        let err = store
            .set_install_secrets(Uuid::new_v4(), value)
            .await
            .expect_err("absent install");
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    }
}

async fn delete_install_removes_config_and_secrets(store: DynStore) {
    let (_, v1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let row = install(&store, "t1", &v1).await;
    store
        .set_install_config(row.id, config(&[("k", "v")]))
        .await
        .expect("config");
    store
        .set_install_secrets(row.id, Some(secrets("c", "s")))
        .await
        .expect("secrets");
    let other = install(&store, "t2", &v1).await;

    assert!(store.delete_install(row.id).await.expect("delete"));
    assert!(
        store
            .find_install("t1", &ExtensionSelector::Id(row.id))
            .await
            .expect("find")
            .is_none()
    );
    assert!(store.list_installs("t1").await.expect("list").is_empty());
    assert!(!store.delete_install(row.id).await.expect("delete again"));
    let err = store
        .set_install_secrets(row.id, None)
        .await
        .expect_err("gone");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(
        store.list_installs("t2").await.expect("list")[0].install,
        other,
        "other tenants untouched"
    );

    let fresh = install(&store, "t1", &v1).await;
    assert_ne!(fresh.id, row.id);
    let view = store
        .find_install("t1", &ExtensionSelector::Id(fresh.id))
        .await
        .expect("find")
        .expect("found");
    assert_eq!(view.secrets, None);
    assert_eq!(view.install.config, config(&[("region", "eu")]));
}

async fn installs_list_by_publisher_then_name(store: DynStore) {
    for (publisher, name) in [("zeta", "a"), ("acme", "b"), ("acme", "a")] {
        let (_, version) = publish(&store, publisher, name, "1.0.0").await;
        install(&store, "t1", &version).await;
    }
    let (_, elsewhere) = publish(&store, "acme", "c", "1.0.0").await;
    install(&store, "t2", &elsewhere).await;

    let listed = store.list_installs("t1").await.expect("list");
    let names: Vec<String> = listed.iter().map(|v| v.extension.slug()).collect();
    assert_eq!(names, ["acme.a", "acme.b", "zeta.a"]);
    assert!(
        listed
            .iter()
            .all(|v| v.install.tenant_id == "t1" && v.version.registry_id == v.extension.id)
    );
    assert!(
        store
            .list_installs("nobody")
            .await
            .expect("list")
            .is_empty()
    );
}

async fn ping_answers(store: DynStore) {
    store.ping().await.expect("ping");
}

// ---- Postgres only ----

mod postgres_only {
    use annex_control_plane::store::{PgStore, PgStoreConfig, Store, StoreError};

    use super::pg_harness::TestDatabase;
    use super::*;

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
        assert_eq!(
            applied,
            [
                "0001_registry",
                "0002_trust",
                "0003_installs",
                "0004_runtime"
            ]
        );
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
}

// ---- Postgres harness ----

mod pg_harness {
    use std::io::Write as _;

    use annex_control_plane::postgres_local::{self, LocalPostgres, LocalPostgresOptions};
    use annex_control_plane::store::{PgStore, PgStoreConfig};
    use tokio::sync::OnceCell;
    use uuid::Uuid;

    /// Where test databases are created: decided once per test binary.
    enum Server {
        External {
            url: String,
        },
        Local(LocalPostgres),
        /// Neither `DATABASE_URL` nor PostgreSQL binaries.
        Missing,
        /// Binaries found, but the cluster did not start: every test fails with this.
        Broken(String),
    }

    static SERVER: OnceCell<Server> = OnceCell::const_new();

    async fn server() -> &'static Server {
        SERVER
            .get_or_init(|| async {
                if let Some(url) = std::env::var("DATABASE_URL")
                    .ok()
                    .filter(|u| !u.trim().is_empty())
                {
                    return Server::External { url };
                }
                if !postgres_local::binaries_available() {
                    return Server::Missing;
                }
                // Not a TempDir: a static is never dropped, so the cluster's own
                // watchdog removes the directory when this process exits.
                let dir = std::env::temp_dir()
                    .join(format!("annex-store-suite-{}", Uuid::new_v4().simple()));
                match LocalPostgres::start(&dir, LocalPostgresOptions::default()).await {
                    Ok(cluster) => Server::Local(cluster),
                    Err(e) => Server::Broken(format!(
                        "starting a throwaway PostgreSQL cluster in {}: {e}",
                        dir.display()
                    )),
                }
            })
            .await
    }

    /// One database per test, dropped at the end of a passing test.
    pub struct TestDatabase {
        pub url: String,
        admin_url: String,
        name: String,
    }

    impl TestDatabase {
        /// A fresh, empty database; None (after a notice) when Postgres cannot be had outside CI.
        pub async fn create(case: &str) -> Option<TestDatabase> {
            let (admin_url, url_for): (String, Box<dyn Fn(&str) -> String>) = match server().await {
                Server::External { url } => {
                    let url = url.clone();
                    (
                        url.clone(),
                        Box::new(move |db: &str| with_database(&url, db)),
                    )
                }
                Server::Local(cluster) => (
                    cluster.url_for("postgres"),
                    Box::new(|db: &str| cluster.url_for(db)),
                ),
                Server::Missing => {
                    let message = "no PostgreSQL for the store suite: set DATABASE_URL, or install postgresql-15 \
                                   (or set ANNEX_PG_BIN) so a throwaway cluster can be started";
                    if std::env::var("CI").is_ok_and(|v| v == "true") {
                        panic!("{message}");
                    }
                    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
                    static NOTICE: std::sync::Once = std::sync::Once::new();
                    NOTICE.call_once(|| {
                        let _ = writeln!(
                            std::io::stderr(),
                            "\n{0}\nSKIPPING the Postgres store tests: {message}\n{0}\n",
                            "!".repeat(78)
                        );
                    });
                    return None;
                }
                Server::Broken(message) => panic!("{message}"),
            };
            let name = format!(
                "t_{}_{}",
                case.to_lowercase(),
                &Uuid::new_v4().simple().to_string()[..8]
            );
            let admin = connect(&admin_url).await;
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "create test database {name}: {e} (the DATABASE_URL role needs CREATEDB)"
                    )
                });
            Some(TestDatabase {
                url: url_for(&name),
                admin_url,
                name,
            })
        }

        pub async fn connect(&self) -> PgStore {
            let config = PgStoreConfig {
                url: self.url.clone(),
                max_connections: 10,
            };
            PgStore::connect(config)
                .await
                .unwrap_or_else(|e| panic!("connect to test database {}: {e}", self.name))
        }

        /// A plain client on the test database, for checks below the Store trait.
        pub async fn sql(&self) -> tokio_postgres::Client {
            connect(&self.url).await
        }

        pub async fn drop_database(self) {
            let admin = connect(&self.admin_url).await;
            if let Err(e) = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await
            {
                eprintln!("could not drop test database {}: {e}", self.name);
            }
        }
    }

    async fn connect(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to postgres: {e}"));
        tokio::spawn(connection);
        client
    }

    /// `url` with its database replaced by `database` (URL or key=value form).
    fn with_database(url: &str, database: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return format!("{url} dbname={database}");
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, format!("?{query}")),
            None => (rest, String::new()),
        };
        let authority = rest
            .split_once('/')
            .map_or(rest, |(authority, _)| authority);
        format!("{scheme}://{authority}/{database}{query}")
    }

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u:p@h:5/db?sslmode=disable", "t"),
            "postgres://u:p@h:5/t?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "t"), "postgresql://h/t");
        assert_eq!(
            with_database("host=h user=u", "t"),
            "host=h user=u dbname=t"
        );
    }
}
