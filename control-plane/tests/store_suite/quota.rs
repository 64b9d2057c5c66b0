//! Quota cases: fleet-wide quotas per tenant and install, the route watchers
//! that split them, and usage windows.

use annex_control_plane::store::{QuotaLimits, UsageRow};

use super::*;

store_cases!(
    quotas_set_replace_list_and_delete,
    install_quotas_need_the_tenants_install_and_go_with_it,
    route_watchers_count_the_recently_seen_across_replicas,
    usage_adds_into_minute_windows,
    concurrent_usage_adds_lose_nothing,
);

fn limits(max_concurrency: u32, requests_per_second: u32) -> QuotaLimits {
    QuotaLimits {
        max_concurrency,
        requests_per_second,
    }
}

fn usage(tenant: &str, registry: Uuid, window: i64, invocations: u64, cpu_us: u64) -> UsageRow {
    UsageRow {
        tenant_id: tenant.to_owned(),
        registry_id: registry,
        window_start: at(window),
        invocations,
        cpu_us,
        memory_byte_ms: 3 * invocations,
        egress_bytes: 10 * invocations,
        fuel: 0,
    }
}

async fn quotas_set_replace_list_and_delete(store: DynStore) {
    let (_, version) = publish(&store, "acme", "quota-a", "1.0.0").await;
    let inst = install(&store, "t1", &version).await;
    let tenant_wide = store
        .set_quota("t1", None, limits(4, 0))
        .await
        .expect("tenant quota");
    assert_eq!(tenant_wide.install_id, None);
    assert_eq!(tenant_wide.limits, limits(4, 0));
    let per_install = store
        .set_quota("t1", Some(inst.id), limits(0, 20))
        .await
        .expect("install quota");
    assert_eq!(per_install.install_id, Some(inst.id));
    store.set_quota("t2", None, limits(1, 1)).await.expect("t2");
    // Setting again replaces, never duplicates.
    let replaced = store
        .set_quota("t1", None, limits(2, 5))
        .await
        .expect("replace");
    assert_eq!(replaced.limits, limits(2, 5));
    assert!(replaced.updated_at >= tenant_wide.updated_at);

    let t1 = store.list_quotas(Some("t1")).await.expect("list t1");
    assert_eq!(t1.len(), 2);
    assert_eq!(t1[0].install_id, None, "the tenant-wide quota first");
    assert_eq!(t1[0].limits, limits(2, 5));
    assert_eq!(t1[1].install_id, Some(inst.id));
    let all = store.list_quotas(None).await.expect("list all");
    let tenants: Vec<&str> = all.iter().map(|q| q.tenant_id.as_str()).collect();
    assert_eq!(tenants, ["t1", "t1", "t2"]);

    assert!(store.delete_quota("t1", None).await.expect("delete"));
    assert!(!store.delete_quota("t1", None).await.expect("again"));
    // Deleting the tenant-wide quota leaves the install's.
    let left = store.list_quotas(Some("t1")).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].install_id, Some(inst.id));
    assert!(
        !store
            .delete_quota("t2", Some(inst.id))
            .await
            .expect("other tenant")
    );
}

async fn install_quotas_need_the_tenants_install_and_go_with_it(store: DynStore) {
    let (_, version) = publish(&store, "acme", "quota-b", "1.0.0").await;
    let inst = install(&store, "t1", &version).await;
    let err = store
        .set_quota("t2", Some(inst.id), limits(1, 0))
        .await
        .expect_err("another tenant's install");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .set_quota("t1", Some(Uuid::new_v4()), limits(1, 0))
        .await
        .expect_err("no such install");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    store
        .set_quota("t1", Some(inst.id), limits(1, 0))
        .await
        .expect("set");
    store
        .set_quota("t1", None, limits(9, 0))
        .await
        .expect("tenant");
    assert!(store.delete_install(inst.id).await.expect("uninstall"));
    let left = store.list_quotas(Some("t1")).await.expect("list");
    assert_eq!(left.len(), 1, "the install's quota went with it");
    assert_eq!(left[0].install_id, None);
}

async fn route_watchers_count_the_recently_seen_across_replicas(store: DynStore) {
    store
        .touch_route_watcher("edge-a", "r1", at(1_000))
        .await
        .expect("a");
    store
        .touch_route_watcher("edge-b", "r2", at(1_000))
        .await
        .expect("b");
    store
        .touch_route_watcher("edge-c", "r1", at(900))
        .await
        .expect("c");
    assert_eq!(store.count_route_watchers(at(998)).await.expect("n"), 2);
    assert_eq!(store.count_route_watchers(at(0)).await.expect("n"), 3);
    // A refresh moves the watcher forward; it is one row.
    store
        .touch_route_watcher("edge-c", "r1", at(1_001))
        .await
        .expect("c again");
    assert_eq!(store.count_route_watchers(at(998)).await.expect("n"), 3);
    // Only the replica holding a watcher removes it (an edge that moved to
    // another replica stays counted).
    store
        .touch_route_watcher("edge-a", "r2", at(1_002))
        .await
        .expect("moved");
    store
        .remove_route_watcher("edge-a", "r1")
        .await
        .expect("stale remove");
    assert_eq!(store.count_route_watchers(at(998)).await.expect("n"), 3);
    store
        .remove_route_watcher("edge-a", "r2")
        .await
        .expect("remove");
    assert_eq!(store.count_route_watchers(at(998)).await.expect("n"), 2);
}

async fn usage_adds_into_minute_windows(store: DynStore) {
    let ext1 = Uuid::new_v4();
    let ext2 = Uuid::new_v4();
    store
        .add_usage(vec![
            usage("t1", ext1, 60, 2, 1_500),
            usage("t1", ext2, 60, 1, 700),
            // Equal keys in one batch add up.
            usage("t1", ext1, 60, 3, 600),
            usage("t2", ext1, 60, 9, 9),
        ])
        .await
        .expect("first heartbeat");
    store
        .add_usage(vec![
            usage("t1", ext1, 60, 1, 900),
            usage("t1", ext1, 120, 4, 4_000),
        ])
        .await
        .expect("second heartbeat");
    store.add_usage(Vec::new()).await.expect("empty");

    let all = store.list_usage("t1", None, None, None).await.expect("all");
    let got: Vec<(i64, Uuid, u64, u64)> = all
        .iter()
        .map(|u| {
            (
                u.window_start.timestamp(),
                u.registry_id,
                u.invocations,
                u.cpu_us,
            )
        })
        .collect();
    let mut first_window = vec![(60, ext1, 6, 3_000), (60, ext2, 1, 700)];
    first_window.sort_by_key(|w| w.1);
    let mut expected = first_window;
    expected.push((120, ext1, 4, 4_000));
    assert_eq!(got, expected, "oldest first, then by registry id");
    let w = all
        .iter()
        .find(|u| u.registry_id == ext1 && u.window_start == at(60))
        .expect("window");
    assert_eq!(w.egress_bytes, 60);
    assert_eq!(w.memory_byte_ms, 18);

    let one = store
        .list_usage("t1", Some(ext1), Some(at(61)), None)
        .await
        .expect("since");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].window_start, at(120));
    let before = store
        .list_usage("t1", Some(ext1), None, Some(at(120)))
        .await
        .expect("until");
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].invocations, 6);
    let t2 = store.list_usage("t2", None, None, None).await.expect("t2");
    assert_eq!(t2.len(), 1);
    assert_eq!(t2[0].invocations, 9);
}

async fn concurrent_usage_adds_lose_nothing(store: DynStore) {
    let ext = Uuid::new_v4();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    store
                        .add_usage(vec![usage("t", ext, 600, 1, 10)])
                        .await
                        .expect("add");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let rows = store
        .list_usage("t", Some(ext), None, None)
        .await
        .expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].invocations, 80);
    assert_eq!(rows[0].cpu_us, 800);
}
