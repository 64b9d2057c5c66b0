//! Capture cases: one policy per install (replaced, deleted), captures
//! scoped to their tenant, newest first, invisible once expired and
//! deleted by the sweep, at most `keep` per install, and the reads kept.

use annex_control_plane::store::{CaptureAccessRow, CapturePolicyRow, CaptureRow};
use chrono::Duration;

use super::*;

store_cases!(
    capture_policies_are_per_install_and_replaced,
    captures_are_scoped_to_their_tenant_and_listed_newest_first,
    expired_captures_are_invisible_and_swept,
    an_install_keeps_its_newest_captures,
    capture_reads_are_recorded,
);

fn policy(tenant: &str, install: Uuid, ppm: u32) -> CapturePolicyRow {
    CapturePolicyRow {
        tenant_id: tenant.to_owned(),
        install_id: install,
        sample_ppm: ppm,
        failures: true,
        retention_hours: 72,
        max_bytes: 1024,
        created_at: at(0),
    }
}

fn capture(tenant: &str, install: Uuid, created: i64, expires: i64) -> CaptureRow {
    CaptureRow {
        id: Uuid::now_v7(),
        tenant_id: tenant.to_owned(),
        install_id: install,
        request_id: format!("req-{created}"),
        content_hash: content_hash(),
        reason: "sampled".to_owned(),
        outcome: "ok".to_owned(),
        status: 200,
        method: "GET".to_owned(),
        path: "/mix".to_owned(),
        size_bytes: 12,
        secret_keys: vec!["api_key".to_owned()],
        sealed_secrets: "c2VhbGVk".to_owned(),
        tape: br#"{"version":1}"#.to_vec(),
        created_at: at(created),
        expires_at: at(expires),
    }
}

fn listed(row: &CaptureRow) -> CaptureRow {
    CaptureRow {
        tape: Vec::new(),
        ..row.clone()
    }
}

async fn capture_policies_are_per_install_and_replaced(store: DynStore) {
    let (i1, i2) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.capture_policy("t1", i1).await.expect("read"), None);
    let set = store
        .set_capture_policy(policy("t1", i1, 10_000))
        .await
        .expect("set");
    assert_eq!(set.sample_ppm, 10_000);
    assert!(set.created_at > at(NOW), "the store sets created_at");
    let replaced = store
        .set_capture_policy(policy("t1", i1, 500))
        .await
        .expect("replace");
    assert_eq!(
        store.capture_policy("t1", i1).await.expect("read"),
        Some(replaced)
    );
    // Another tenant naming the same install id sees nothing.
    assert_eq!(store.capture_policy("t2", i1).await.expect("read"), None);
    assert_eq!(store.capture_policy("t1", i2).await.expect("read"), None);
    assert!(store.delete_capture_policy("t1", i1).await.expect("delete"));
    assert!(!store.delete_capture_policy("t1", i1).await.expect("again"));
    assert_eq!(store.capture_policy("t1", i1).await.expect("read"), None);
}

async fn captures_are_scoped_to_their_tenant_and_listed_newest_first(store: DynStore) {
    let (i1, i2) = (Uuid::new_v4(), Uuid::new_v4());
    let later = NOW + 3600;
    let a = capture("t1", i1, NOW, later);
    let b = capture("t1", i1, NOW + 10, later);
    let c = capture("t1", i2, NOW + 20, later);
    let other = capture("t2", i1, NOW + 30, later);
    for row in [&a, &b, &c, &other] {
        store
            .insert_capture(row.clone(), 100)
            .await
            .expect("insert");
    }
    assert!(
        store.insert_capture(a.clone(), 100).await.is_err(),
        "an id is stored once"
    );
    let now = at(NOW + 60);
    let all = store
        .list_captures("t1", None, now, 10)
        .await
        .expect("list");
    assert_eq!(all, [listed(&c), listed(&b), listed(&a)]);
    let one = store
        .list_captures("t1", Some(i1), now, 10)
        .await
        .expect("list");
    assert_eq!(one, [listed(&b), listed(&a)]);
    let limited = store.list_captures("t1", None, now, 1).await.expect("list");
    assert_eq!(limited, [listed(&c)]);
    assert_eq!(
        store.get_capture("t1", a.id, now).await.expect("get"),
        Some(a.clone())
    );
    // Tenant t2 cannot read t1's capture by id, nor list it.
    assert_eq!(store.get_capture("t2", a.id, now).await.expect("get"), None);
    assert_eq!(
        store
            .list_captures("t2", None, now, 10)
            .await
            .expect("list"),
        [listed(&other)]
    );
}

async fn expired_captures_are_invisible_and_swept(store: DynStore) {
    let install = Uuid::new_v4();
    let old = capture("t1", install, NOW, NOW + 60);
    let fresh = capture("t1", install, NOW + 1, NOW + 7200);
    store
        .insert_capture(old.clone(), 100)
        .await
        .expect("insert");
    store
        .insert_capture(fresh.clone(), 100)
        .await
        .expect("insert");
    let now = at(NOW + 120);
    assert_eq!(
        store.get_capture("t1", old.id, now).await.expect("get"),
        None
    );
    assert_eq!(
        store
            .list_captures("t1", None, now, 10)
            .await
            .expect("list"),
        [listed(&fresh)]
    );
    assert_eq!(
        store.delete_expired_captures(now, 10).await.expect("sweep"),
        1
    );
    assert_eq!(
        store.delete_expired_captures(now, 10).await.expect("sweep"),
        0
    );
    // Gone, even for a reader whose clock is behind.
    assert_eq!(
        store
            .get_capture("t1", old.id, at(NOW) - Duration::hours(1))
            .await
            .expect("get"),
        None
    );
}

async fn an_install_keeps_its_newest_captures(store: DynStore) {
    let (install, other) = (Uuid::new_v4(), Uuid::new_v4());
    let kept_elsewhere = capture("t1", other, NOW, NOW + 3600);
    store
        .insert_capture(kept_elsewhere.clone(), 2)
        .await
        .expect("insert");
    let rows: Vec<CaptureRow> = (0..4)
        .map(|i| capture("t1", install, NOW + i, NOW + 3600))
        .collect();
    for row in &rows {
        store.insert_capture(row.clone(), 2).await.expect("insert");
    }
    let now = at(NOW + 10);
    assert_eq!(
        store
            .list_captures("t1", Some(install), now, 10)
            .await
            .expect("list"),
        [listed(&rows[3]), listed(&rows[2])]
    );
    assert_eq!(
        store
            .list_captures("t1", Some(other), now, 10)
            .await
            .expect("list"),
        [listed(&kept_elsewhere)]
    );
}

async fn capture_reads_are_recorded(store: DynStore) {
    let id = Uuid::new_v4();
    let read = |action: &str, t: i64| CaptureAccessRow {
        tenant_id: "t1".to_owned(),
        capture_id: id,
        action: action.to_owned(),
        actor: "operator".to_owned(),
        at: at(t),
    };
    store
        .record_capture_access(read("read", NOW))
        .await
        .expect("record");
    store
        .record_capture_access(read("reveal", NOW + 1))
        .await
        .expect("record");
    assert_eq!(
        store.list_capture_access("t1", id).await.expect("list"),
        [read("read", NOW), read("reveal", NOW + 1)]
    );
    assert!(
        store
            .list_capture_access("t2", id)
            .await
            .expect("list")
            .is_empty()
    );
}
