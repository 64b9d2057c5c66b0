//! The audit pipeline under a poisoned request, against the real binaries
//! and PostgreSQL: `GET /api/ext/<installed ext>/a%00b` used to put a NUL
//! into an audit row Postgres refuses (`22P05`), the control plane called
//! that `INTERNAL`, and the edge retried the batch forever until its buffer
//! filled and every tenant got 503. Now the path is refused, a refused row
//! is told apart from an outage, and auditing and serving go on.

use std::time::Duration;

use annex_e2e::stack::{OTHER_TENANT, TENANT};
use annex_e2e::{Stack, StackOptions, get};
use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::assert_eventually;
use serde_json::json;

fn record(s: &Stack, request_id: &str, path: &str) -> pb::ExecutionRecord {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    pb::ExecutionRecord {
        tenant_id: TENANT.into(),
        registry_id: s.hello.registry_id.clone(),
        version_id: s.hello.registry_id.clone(),
        request_id: request_id.into(),
        started_at_ms: now,
        finished_at_ms: now,
        status: "ok".into(),
        metrics_json: json!({"path": path}).to_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_poisoned_request_never_stops_auditing_or_serving() {
    let mut s = Stack::start_with(StackOptions {
        edge_env: vec![
            // Small enough that a stuck audit trail shows as 503s quickly.
            ("ANNEX_EDGE_AUDIT_BUFFER".into(), "64".into()),
            ("ANNEX_EDGE_AUDIT_IN_FLIGHT".into(), "2".into()),
        ],
        ..StackOptions::default()
    })
    .await;
    let other = s.install_for(OTHER_TENANT, &s.hello.registry_id).await;
    let auth = s.bearer(&json!({}));
    let other_auth = s.bearer(&json!({"tenant": OTHER_TENANT}));
    let edge = s.edge.http;

    // The attack, more times than the shipper has upload slots.
    let mut attack = Vec::new();
    for _ in 0..8 {
        let path = format!("/api/ext/{}/a%00b", s.hello.registry_id);
        attack.push(get(edge, &path, &[("authorization", &auth)]).await);
    }

    // A batch holding one row Postgres cannot store, sent straight to the
    // control plane as an edge that did not clean its rows would: refused
    // as invalid (so an edge splits it), not as an internal failure (which
    // an edge retries).
    let mut dispatch = pb::dispatch_client::DispatchClient::new(s.channel(Role::Edge).await);
    let poisoned = pb::ExecutionRecords {
        records: vec![
            record(&s, "batch-good", "/fine"),
            record(&s, "batch-bad", "/a\u{0}b"),
        ],
    };
    let refusal = dispatch
        .record_executions(poisoned)
        .await
        .expect_err("Postgres refuses a NUL in jsonb");
    assert_eq!(refusal.code(), tonic::Code::InvalidArgument, "{refusal:?}");
    dispatch
        .record_executions(pb::ExecutionRecords {
            records: vec![record(&s, "batch-good", "/fine")],
        })
        .await
        .expect("the good row alone is stored");

    // Normal traffic for every tenant keeps being served...
    for i in 0..100 {
        let (path, auth) = if i % 2 == 0 {
            (format!("/api/ext/{}/hello", s.hello.registry_id), &auth)
        } else {
            (format!("/api/ext/{}/hello", other.registry_id), &other_auth)
        };
        let id = format!("after-{i}");
        let r = get(
            edge,
            &path,
            &[("authorization", auth), ("x-request-id", &id)],
        )
        .await;
        assert_eq!(r.status, 200, "request {i}: {}\n{}", r.text(), s.logs());
    }
    // ...and audited.
    assert_eventually!(
        Duration::from_secs(20),
        async || {
            let rows = s.audit_rows(&s.hello.registry_id).await;
            let after = rows
                .iter()
                .filter(|r| {
                    r.request_id
                        .as_deref()
                        .is_some_and(|id| id.starts_with("after-"))
                })
                .count();
            after == 50
                && rows
                    .iter()
                    .any(|r| r.request_id.as_deref() == Some("batch-good"))
        },
        "audit rows arriving:\n{}",
        s.logs()
    );

    // Rows still buffered at shutdown are shipped before the edge exits.
    for i in 0..20 {
        let id = format!("drain-{i}");
        let path = format!("/api/ext/{}/hello", s.hello.registry_id);
        let r = get(
            edge,
            &path,
            &[("authorization", &auth), ("x-request-id", &id)],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    s.edge.proc.terminate();
    let status = s.edge.proc.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    let rows = s.audit_rows(&s.hello.registry_id).await;
    let drained = rows
        .iter()
        .filter(|r| {
            r.request_id
                .as_deref()
                .is_some_and(|id| id.starts_with("drain-"))
        })
        .count();
    assert_eq!(drained, 20, "rows lost at shutdown:\n{}", s.logs());

    // And the attack itself was refused before anything ran.
    for r in attack {
        assert_eq!(
            (r.status, r.json()),
            (400, json!({"error": "invalid_path"})),
            "{}",
            r.text()
        );
    }
}
