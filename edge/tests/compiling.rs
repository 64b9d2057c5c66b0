//! A worker that is still compiling the extension's component: the client
//! gets `503 {"error":"component_compiling"}` with the worker's
//! `Retry-After`, and the call is not sent to a second worker (which would
//! only start a second compile of the same component).

mod support;

use support::*;

#[tokio::test]
async fn a_compiling_component_is_a_503_with_retry_after_and_no_second_worker() {
    let w = World::start().await;
    let second = ScriptedWorker::start(&w.cp.ca, "worker-2").await;
    let _hb = w.cp.keep_registered(&second.id, second.addr);
    // Wait until the edge routes to both workers.
    assert!(
        eventually(10, || async {
            let r = w.call("GET", "/hello").await;
            r.status == 200 && r.json()["worker"] == "worker-2"
        })
        .await
    );
    let compiling = |worker: &ScriptedWorker| {
        worker
            .calls()
            .iter()
            .filter(|c| c.http.as_ref().is_some_and(|h| h.path == "/compiling"))
            .count()
    };
    for attempt in 1..=3 {
        let r = w.call("GET", "/compiling").await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "component_compiling"})
        );
        assert_eq!(r.header("retry-after"), Some("3"));
        assert_eq!(compiling(&w.worker) + compiling(&second), attempt);
    }
    // Audited as an error the client may retry.
    let audited = eventually(5, || async {
        w.audit_rows().await.iter().any(|row| {
            row.error.as_deref() == Some("component_compiling")
                && row.metrics["http_status"] == serde_json::json!(503)
        })
    })
    .await;
    assert!(audited, "no component_compiling audit row");
}
