//! Debug log cases: ids ascend, a tail is the newest events oldest first,
//! reads resume after an id, filters never cross tenants, trims keep the
//! newest.

use annex_control_plane::store::{DebugEvent, DebugFilter};

use super::*;

store_cases!(
    debug_events_tail_and_resume_in_order_per_tenant,
    debug_events_filter_by_install_and_request,
    debug_event_trims_keep_the_newest_of_one_extension,
);

fn event(tenant: &str, extension: &str, message: &str) -> DebugEvent {
    DebugEvent {
        tenant_id: tenant.to_owned(),
        extension_id: extension.to_owned(),
        install_id: "i1".to_owned(),
        request_id: format!("req-{message}"),
        version_id: "v1".to_owned(),
        content_hash: "sha256:00".to_owned(),
        ts_ms: 1_750_000_000_000,
        level: "info".to_owned(),
        stream: "log".to_owned(),
        message: message.to_owned(),
        truncated: false,
    }
}

fn filter(tenant: &str, extension: &str) -> DebugFilter {
    DebugFilter {
        tenant_id: tenant.to_owned(),
        extension_id: extension.to_owned(),
        install_id: None,
        request_id: None,
    }
}

fn messages(rows: &[(u64, DebugEvent)]) -> Vec<&str> {
    rows.iter().map(|(_, e)| e.message.as_str()).collect()
}

async fn debug_events_tail_and_resume_in_order_per_tenant(store: DynStore) {
    store
        .append_debug_events(vec![
            event("t1", "e1", "a"),
            event("t2", "e1", "theirs"),
            event("t1", "e1", "b"),
            event("t1", "e2", "other extension"),
            event("t1", "e1", "c"),
        ])
        .await
        .expect("append");
    let f = filter("t1", "e1");
    let tail = store.read_debug_events(&f, None, 2).await.expect("tail");
    assert_eq!(messages(&tail), ["b", "c"], "the newest two, oldest first");
    assert!(tail[0].0 < tail[1].0, "ids ascend");
    let all = store.read_debug_events(&f, None, 100).await.expect("all");
    assert_eq!(messages(&all), ["a", "b", "c"]);

    let after = all[0].0;
    let rest = store
        .read_debug_events(&f, Some(after), 100)
        .await
        .expect("after");
    assert_eq!(messages(&rest), ["b", "c"]);
    let last = all[2].0;
    assert!(
        store
            .read_debug_events(&f, Some(last), 100)
            .await
            .expect("nothing new")
            .is_empty()
    );
    store
        .append_debug_events(vec![event("t1", "e1", "d")])
        .await
        .expect("append later");
    let new = store
        .read_debug_events(&f, Some(last), 100)
        .await
        .expect("new");
    assert_eq!(messages(&new), ["d"]);
    assert!(new[0].0 > last);
    // A page stops at its limit, oldest first.
    let page = store.read_debug_events(&f, Some(0), 2).await.expect("page");
    assert_eq!(messages(&page), ["a", "b"]);
    assert_eq!(new[0].1, event("t1", "e1", "d"), "every field comes back");
}

async fn debug_events_filter_by_install_and_request(store: DynStore) {
    store
        .append_debug_events(vec![
            event("t1", "e1", "x"),
            DebugEvent {
                install_id: "i2".to_owned(),
                ..event("t1", "e1", "y")
            },
        ])
        .await
        .expect("append");
    let by_install = DebugFilter {
        install_id: Some("i2".to_owned()),
        ..filter("t1", "e1")
    };
    let rows = store
        .read_debug_events(&by_install, None, 10)
        .await
        .expect("by install");
    assert_eq!(messages(&rows), ["y"]);
    let by_request = DebugFilter {
        request_id: Some("req-x".to_owned()),
        ..filter("t1", "e1")
    };
    let rows = store
        .read_debug_events(&by_request, None, 10)
        .await
        .expect("by request");
    assert_eq!(messages(&rows), ["x"]);
    assert!(
        store
            .read_debug_events(&filter("t2", "e1"), None, 10)
            .await
            .expect("other tenant")
            .is_empty()
    );
}

async fn debug_event_trims_keep_the_newest_of_one_extension(store: DynStore) {
    let batch: Vec<_> = (0..10)
        .map(|n| event("t1", "e1", &n.to_string()))
        .chain([event("t1", "e2", "kept"), event("t2", "e1", "kept too")])
        .collect();
    store.append_debug_events(batch).await.expect("append");
    store.trim_debug_events("t1", "e1", 3).await.expect("trim");
    let rows = store
        .read_debug_events(&filter("t1", "e1"), None, 100)
        .await
        .expect("read");
    assert_eq!(messages(&rows), ["7", "8", "9"]);
    for (t, e) in [("t1", "e2"), ("t2", "e1")] {
        let rows = store
            .read_debug_events(&filter(t, e), None, 100)
            .await
            .expect("others");
        assert_eq!(rows.len(), 1, "{t}/{e} untouched");
    }
    // Trimming below what exists changes nothing.
    store
        .trim_debug_events("t1", "e1", 5)
        .await
        .expect("trim again");
    let rows = store
        .read_debug_events(&filter("t1", "e1"), None, 100)
        .await
        .expect("read");
    assert_eq!(rows.len(), 3);
}
