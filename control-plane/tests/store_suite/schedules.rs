//! Schedule cases: CRUD, the per-install quota and unique names (also under
//! concurrency), install scoping, cascade on uninstall, the upgrade remap,
//! and claiming due runs.

use std::collections::HashSet;

use annex_control_plane::store::{ScheduleFields, ScheduleRemap, ScheduleRow, ScheduleRun};
use chrono::TimeDelta;
use serde_json::json;

use super::*;

store_cases!(
    schedules_create_list_get_update_delete,
    schedule_quota_and_unique_names_per_install,
    schedule_quota_holds_under_concurrent_creates,
    schedules_are_scoped_to_their_install,
    schedules_go_with_their_install,
    remap_moves_endpoints_and_disables_the_missing,
    due_schedules_are_claimed_once_per_lease,
    concurrent_claims_take_disjoint_schedules,
);

const NOW: i64 = 1_750_000_000;

fn fields(name: Option<&str>, next: Option<i64>) -> ScheduleFields {
    ScheduleFields {
        endpoint_id: Uuid::new_v4(),
        endpoint_method: "GET".into(),
        endpoint_path: "/api/status".into(),
        name: name.map(str::to_owned),
        cron: "*/5 * * * *".into(),
        timezone: "UTC".into(),
        enabled: true,
        payload: Some(json!({"full": true})),
        next_run_at: next.map(at),
    }
}

async fn installed(store: &DynStore, tenant: &str, name: &str) -> InstallRow {
    let (_, version) = publish(store, "acme", name, "1.0.0").await;
    install(store, tenant, &version).await
}

async fn create(store: &DynStore, i: &InstallRow, f: ScheduleFields) -> ScheduleRow {
    store
        .create_schedule(&i.tenant_id, i.id, f, 50)
        .await
        .expect("create schedule")
}

fn ids(rows: &[ScheduleRow]) -> Vec<Uuid> {
    rows.iter().map(|r| r.id).collect()
}

async fn schedules_create_list_get_update_delete(store: DynStore) {
    let i = installed(&store, "t1", "alpha").await;
    let first = create(&store, &i, fields(Some("nightly"), Some(NOW))).await;
    let second = create(&store, &i, fields(None, None)).await;
    assert_eq!((first.tenant_id.as_str(), first.install_id), ("t1", i.id));
    assert_eq!(
        first.fields,
        fields(Some("nightly"), Some(NOW)).with_endpoint(&first.fields)
    );
    assert_eq!(
        (
            first.last_run_at,
            first.last_run_status.as_deref(),
            first.last_error.as_deref()
        ),
        (None, None, None)
    );

    let listed = store.list_schedules("t1", i.id).await.expect("list");
    assert_eq!(listed, [first.clone(), second.clone()], "oldest first");
    let got = store.get_schedule("t1", i.id, first.id).await.expect("get");
    assert_eq!(got, Some(first.clone()));

    let changed = ScheduleFields {
        cron: "0 9 * * 1-5".into(),
        timezone: "Europe/Berlin".into(),
        enabled: false,
        payload: None,
        name: Some("weekdays".into()),
        next_run_at: None,
        endpoint_method: "POST".into(),
        endpoint_path: "/api/sync".into(),
        ..first.fields.clone()
    };
    let updated = store
        .update_schedule("t1", i.id, first.id, changed.clone())
        .await
        .expect("update");
    assert_eq!(updated.fields, changed);
    assert_eq!(updated.created_at, first.created_at);
    assert!(updated.updated_at >= first.updated_at);
    assert_eq!(
        store.get_schedule("t1", i.id, first.id).await.expect("get"),
        Some(updated)
    );

    assert!(
        store
            .delete_schedule("t1", i.id, first.id)
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_schedule("t1", i.id, first.id)
            .await
            .expect("delete again")
    );
    assert_eq!(
        store.get_schedule("t1", i.id, first.id).await.expect("get"),
        None
    );
    let err = store
        .update_schedule("t1", i.id, first.id, changed)
        .await
        .expect_err("deleted");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(
        ids(&store.list_schedules("t1", i.id).await.expect("list")),
        [second.id]
    );
}

trait WithEndpoint {
    fn with_endpoint(self, from: &ScheduleFields) -> ScheduleFields;
}

impl WithEndpoint for ScheduleFields {
    /// The fixture's random endpoint id replaced by the stored one.
    fn with_endpoint(self, from: &ScheduleFields) -> ScheduleFields {
        ScheduleFields {
            endpoint_id: from.endpoint_id,
            ..self
        }
    }
}

async fn schedule_quota_and_unique_names_per_install(store: DynStore) {
    let i = installed(&store, "t1", "alpha").await;
    let j = installed(&store, "t1", "beta").await;
    let quota = |f: ScheduleFields, install: &InstallRow| {
        let store = store.clone();
        let (tenant, id) = (install.tenant_id.clone(), install.id);
        async move { store.create_schedule(&tenant, id, f, 3).await }
    };
    let named = quota(fields(Some("a"), None), &i).await.expect("first");
    quota(fields(None, None), &i).await.expect("unnamed");
    let err = quota(fields(Some("a"), None), &i)
        .await
        .expect_err("name taken");
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    // Names are unique per install only; unnamed schedules never clash.
    quota(fields(Some("a"), None), &j)
        .await
        .expect("same name, other install");
    let unnamed = quota(fields(None, None), &i).await.expect("third");
    let err = quota(fields(Some("z"), None), &i)
        .await
        .expect_err("fourth");
    assert!(matches!(err, StoreError::QuotaExceeded(_)), "{err:?}");
    assert_eq!(
        store.list_schedules("t1", i.id).await.expect("list").len(),
        3
    );

    // Renaming onto a taken name is refused; keeping one's own name is not a clash.
    let err = store
        .update_schedule("t1", i.id, unnamed.id, fields(Some("a"), None))
        .await
        .expect_err("rename onto a taken name");
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err:?}");
    store
        .update_schedule("t1", i.id, named.id, fields(Some("a"), Some(NOW)))
        .await
        .expect("same name");
    // A deleted schedule frees its slot and its name.
    assert!(
        store
            .delete_schedule("t1", i.id, named.id)
            .await
            .expect("delete")
    );
    quota(fields(Some("a"), None), &i)
        .await
        .expect("slot and name are free");
}

async fn schedule_quota_holds_under_concurrent_creates(store: DynStore) {
    let i = installed(&store, "t1", "alpha").await;
    let creates: Vec<_> = (0..20)
        .map(|n| {
            let store = store.clone();
            let (tenant, id) = (i.tenant_id.clone(), i.id);
            tokio::spawn(async move {
                store
                    .create_schedule(&tenant, id, fields(Some(&format!("s{n}")), None), 5)
                    .await
            })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for c in creates {
        match c.await.expect("task") {
            Ok(_) => created += 1,
            Err(StoreError::QuotaExceeded(_)) => refused += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((created, refused), (5, 15));
    assert_eq!(
        store.list_schedules("t1", i.id).await.expect("list").len(),
        5
    );
}

async fn schedules_are_scoped_to_their_install(store: DynStore) {
    let a = installed(&store, "t1", "alpha").await;
    let b = installed(&store, "t1", "beta").await;
    let s = create(&store, &a, fields(Some("mine"), Some(NOW))).await;
    let scopes = [("t1", b.id), ("t2", a.id)];
    for (tenant, install_id) in scopes {
        assert!(
            store
                .list_schedules(tenant, install_id)
                .await
                .expect("list")
                .is_empty()
        );
        assert_eq!(
            store
                .get_schedule(tenant, install_id, s.id)
                .await
                .expect("get"),
            None
        );
        let err = store
            .update_schedule(tenant, install_id, s.id, fields(None, None))
            .await
            .expect_err("not theirs");
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
        assert!(
            !store
                .delete_schedule(tenant, install_id, s.id)
                .await
                .expect("delete")
        );
        store
            .remap_schedules(
                tenant,
                install_id,
                vec![ScheduleRemap::Disable {
                    id: s.id,
                    last_error: "gone".into(),
                }],
            )
            .await
            .expect("remap");
    }
    assert_eq!(
        store.get_schedule("t1", a.id, s.id).await.expect("get"),
        Some(s)
    );
}

async fn schedules_go_with_their_install(store: DynStore) {
    let a = installed(&store, "t1", "alpha").await;
    let b = installed(&store, "t1", "beta").await;
    create(&store, &a, fields(Some("x"), Some(NOW))).await;
    let kept = create(&store, &b, fields(Some("x"), Some(NOW))).await;
    assert!(store.delete_install(a.id).await.expect("uninstall"));
    assert!(
        store
            .list_schedules("t1", a.id)
            .await
            .expect("list")
            .is_empty()
    );
    let err = store
        .create_schedule("t1", a.id, fields(None, None), 50)
        .await
        .expect_err("no install");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(
        ids(&store.list_schedules("t1", b.id).await.expect("list")),
        [kept.id]
    );
    // Reinstalling starts without schedules.
    let (_, v) = publish(&store, "acme", "alpha", "2.0.0").await;
    let again = install(&store, "t1", &v).await;
    assert!(
        store
            .list_schedules("t1", again.id)
            .await
            .expect("list")
            .is_empty()
    );
}

async fn remap_moves_endpoints_and_disables_the_missing(store: DynStore) {
    let i = installed(&store, "t1", "alpha").await;
    let moved = create(&store, &i, fields(Some("moved"), Some(NOW))).await;
    let gone = create(&store, &i, fields(Some("gone"), Some(NOW))).await;
    let untouched = create(&store, &i, fields(Some("untouched"), Some(NOW))).await;
    let new_endpoint = Uuid::new_v4();
    store
        .remap_schedules(
            "t1",
            i.id,
            vec![
                ScheduleRemap::Endpoint {
                    id: moved.id,
                    endpoint_id: new_endpoint,
                },
                ScheduleRemap::Disable {
                    id: gone.id,
                    last_error: "Endpoint GET /api/status no longer exists".into(),
                },
            ],
        )
        .await
        .expect("remap");
    let get = |id| {
        let store = store.clone();
        async move {
            store
                .get_schedule("t1", i.id, id)
                .await
                .expect("get")
                .expect("found")
        }
    };
    let m = get(moved.id).await;
    assert_eq!(
        m.fields,
        ScheduleFields {
            endpoint_id: new_endpoint,
            ..moved.fields
        }
    );
    let g = get(gone.id).await;
    assert!(!g.fields.enabled);
    assert_eq!(g.fields.next_run_at, None);
    assert_eq!(
        g.last_error.as_deref(),
        Some("Endpoint GET /api/status no longer exists")
    );
    assert_eq!(get(untouched.id).await, untouched);
}

async fn due_schedules_are_claimed_once_per_lease(store: DynStore) {
    let a = installed(&store, "t1", "alpha").await;
    let b = installed(&store, "t2", "beta").await;
    let early = create(&store, &a, fields(None, Some(NOW - 10))).await;
    let later = create(&store, &b, fields(None, Some(NOW - 5))).await;
    let future = create(&store, &a, fields(None, Some(NOW + 100))).await;
    let disabled = ScheduleFields {
        enabled: false,
        ..fields(None, Some(NOW - 20))
    };
    create(&store, &a, disabled).await;
    let lease = TimeDelta::seconds(60);

    let claimed = store
        .claim_due_schedules(at(NOW), lease, 10)
        .await
        .expect("claim");
    assert_eq!(
        ids(&claimed),
        [early.id, later.id],
        "due and enabled, earliest first"
    );
    assert_eq!(
        claimed[0].fields.next_run_at,
        Some(at(NOW - 10)),
        "the due time it was claimed at"
    );
    assert!(
        store
            .claim_due_schedules(at(NOW), lease, 10)
            .await
            .expect("claim")
            .is_empty()
    );

    // Recorded runs move to their next time; an unrecorded one comes back after the lease.
    let run = ScheduleRun {
        at: at(NOW + 1),
        status: "error".into(),
        error: Some("extension_error_status".into()),
        next_run_at: Some(at(NOW + 300)),
    };
    assert!(
        store
            .record_schedule_run(early.id, run)
            .await
            .expect("record")
    );
    let e = store
        .get_schedule("t1", a.id, early.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(e.last_run_at, Some(at(NOW + 1)));
    assert_eq!(e.last_run_status.as_deref(), Some("error"));
    assert_eq!(e.last_error.as_deref(), Some("extension_error_status"));
    assert_eq!(e.fields.next_run_at, Some(at(NOW + 300)));
    let reclaimed = store
        .claim_due_schedules(at(NOW + 60), lease, 10)
        .await
        .expect("claim");
    assert_eq!(ids(&reclaimed), [later.id]);
    let limited = store
        .claim_due_schedules(at(NOW + 500), lease, 1)
        .await
        .expect("claim");
    assert_eq!(limited.len(), 1);

    // A disabled install's schedules are not claimed; a gone schedule records nothing.
    store
        .set_install_enabled(a.id, false)
        .await
        .expect("disable");
    let rest = store
        .claim_due_schedules(at(NOW + 1000), lease, 10)
        .await
        .expect("claim");
    assert!(rest.iter().all(|s| s.install_id == b.id), "{rest:?}");
    assert!(!rest.iter().any(|s| s.id == future.id));
    let gone = ScheduleRun {
        at: at(NOW),
        status: "success".into(),
        error: None,
        next_run_at: None,
    };
    assert!(
        !store
            .record_schedule_run(Uuid::new_v4(), gone)
            .await
            .expect("record")
    );
}

async fn concurrent_claims_take_disjoint_schedules(store: DynStore) {
    let i = installed(&store, "t1", "alpha").await;
    let mut all = HashSet::new();
    for n in 0..10 {
        all.insert(create(&store, &i, fields(None, Some(NOW - n))).await.id);
    }
    let claims: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_due_schedules(at(NOW), TimeDelta::seconds(60), 10)
                    .await
                    .expect("claim")
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for c in claims {
        for s in c.await.expect("task") {
            assert!(seen.insert(s.id), "claimed twice: {}", s.id);
        }
    }
    assert_eq!(seen, all);
}
