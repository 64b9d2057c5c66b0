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
    active_content_hashes_are_those_active_installs_run,
    ping_answers,
    storage_revisions_start_at_one_and_compare_and_swap,
    storage_ttl_expires_lazily,
    storage_list_orders_by_key_after_key_and_literal_prefix,
    storage_quotas_count_namespaces_keys_and_bytes,
    storage_namespace_quota_holds_under_concurrent_first_writes,
    storage_is_scoped_to_tenant_and_install,
    deleting_an_install_removes_its_storage,
    api_keys_create_list_find_and_revoke_per_tenant,
    executions_list_newest_first_per_tenant_and_extension,
    workers_upsert_and_list_those_seen_since,
    schedules_create_list_get_update_delete,
    schedule_quota_and_unique_names_per_install,
    schedule_quota_holds_under_concurrent_creates,
    schedules_are_scoped_to_their_install,
    schedules_go_with_their_install,
    remap_moves_endpoints_and_disables_the_missing,
    due_schedules_are_claimed_once_per_lease,
    concurrent_claims_take_disjoint_schedules,
    quotas_set_replace_list_and_delete,
    install_quotas_need_the_tenants_install_and_go_with_it,
    route_watchers_count_the_recently_seen_across_replicas,
    usage_adds_into_minute_windows,
    concurrent_usage_adds_lose_nothing,
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

mod installs;
mod pg_harness;
mod postgres_only;
mod quotas;
mod registry;
mod runtime;
mod schedules;
mod trust;

use installs::*;
use quotas::*;
use registry::*;
use runtime::*;
use schedules::*;
use trust::*;
