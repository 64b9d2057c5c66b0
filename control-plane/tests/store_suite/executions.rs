//! Execution log cases: batches, repeated ids, newest first per tenant and
//! extension.

use annex_control_plane::store::ExecutionRow;
use serde_json::json;

use super::*;

store_cases!(executions_list_newest_first_per_tenant_and_extension,);

fn execution(tenant: &str, registry: Uuid, started: i64, status: &str) -> ExecutionRow {
    ExecutionRow {
        id: Uuid::new_v4(),
        tenant_id: tenant.to_owned(),
        registry_id: registry,
        version_id: Uuid::new_v4(),
        request_id: Some(format!("req-{started}")),
        started_at: at(started),
        finished_at: Some(at(started + 1)),
        status: status.to_owned(),
        metrics: json!({"method": "GET", "path": "/x", "http_status": 200}),
        error: (status != "ok").then(|| "extension_error_status".to_owned()),
    }
}

async fn executions_list_newest_first_per_tenant_and_extension(store: DynStore) {
    let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
    let rows = vec![
        execution("t1", r1, NOW, "ok"),
        execution("t1", r1, NOW + 20, "error"),
        execution("t1", r1, NOW + 10, "timeout"),
        execution("t1", r2, NOW + 30, "ok"),
        // An audit row of a call still running or refused early: no request id, no finish.
        ExecutionRow {
            request_id: None,
            finished_at: None,
            ..execution("t2", r1, NOW + 40, "policy_denied")
        },
    ];
    store.record_executions(rows.clone()).await.expect("record");
    // Recording a row again (a retried batch) changes nothing.
    store
        .record_executions(vec![rows[0].clone()])
        .await
        .expect("record");
    store
        .record_executions(Vec::new())
        .await
        .expect("record nothing");

    let listed = store.list_executions("t1", r1, 10).await.expect("list");
    assert_eq!(listed, [rows[1].clone(), rows[2].clone(), rows[0].clone()]);
    let limited = store.list_executions("t1", r1, 2).await.expect("list");
    assert_eq!(limited, [rows[1].clone(), rows[2].clone()]);
    assert_eq!(
        store.list_executions("t2", r1, 10).await.expect("list"),
        [rows[4].clone()]
    );
    assert!(
        store
            .list_executions("t3", r1, 10)
            .await
            .expect("list")
            .is_empty()
    );
}
