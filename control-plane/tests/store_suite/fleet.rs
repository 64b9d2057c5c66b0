//! Fleet cases: worker membership and the content hashes placement keeps
//! warm.

use annex_control_plane::store::WorkerRow;

use super::*;

store_cases!(
    workers_upsert_and_list_those_seen_since,
    active_content_hashes_are_those_active_installs_run,
);

fn worker(id: &str, seen: i64, capacity: u32) -> WorkerRow {
    WorkerRow {
        id: id.to_owned(),
        address: format!("https://{id}:7443"),
        capacity,
        in_flight: 1,
        draining: false,
        cached_hashes: vec![content_hash()],
        last_seen: at(seen),
    }
}

async fn workers_upsert_and_list_those_seen_since(store: DynStore) {
    let b = worker("worker-b", NOW, 8);
    store.upsert_worker(b.clone()).await.expect("upsert");
    store
        .upsert_worker(worker("worker-a", NOW - 100, 8))
        .await
        .expect("upsert");
    assert_eq!(store.list_workers(at(NOW - 50)).await.expect("list"), [b]);

    let back = WorkerRow {
        draining: true,
        in_flight: 0,
        ..worker("worker-a", NOW + 5, 16)
    };
    store
        .upsert_worker(back.clone())
        .await
        .expect("upsert again");
    let listed = store.list_workers(at(NOW)).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["worker-a", "worker-b"], "by id");
    assert_eq!(listed[0], back);
    assert!(
        store
            .list_workers(at(NOW + 6))
            .await
            .expect("list")
            .is_empty()
    );
}

async fn active_content_hashes_are_those_active_installs_run(store: DynStore) {
    let (_, a1) = publish(&store, "acme", "alpha", "1.0.0").await;
    let (_, b1) = publish(&store, "acme", "beta", "1.0.0").await;
    let (_, c1) = publish(&store, "acme", "gamma", "1.0.0").await;
    // Two tenants on one version: its hash is listed once.
    install(&store, "t1", &a1).await;
    install(&store, "t2", &a1).await;
    install(&store, "t1", &b1).await;
    let off = install(&store, "t1", &c1).await;
    store
        .set_install_enabled(off.id, false)
        .await
        .expect("disable");
    let mut expected = vec![
        a1.bundle.content_hash.clone(),
        b1.bundle.content_hash.clone(),
    ];
    expected.sort();
    assert_eq!(
        store.active_content_hashes().await.expect("hashes"),
        expected,
        "a disabled install's version is not kept warm"
    );
}
