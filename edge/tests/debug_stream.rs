//! `/api/ext-debug/stream`: the caller's tenant's logs of one extension as
//! server-sent events; other tenants' events never appear.

mod support;

use std::time::Duration;

use annex_proto::pb;
use annex_testkit::http::open;
use serde_json::json;
use support::*;

#[tokio::test]
async fn the_debug_stream_is_scoped_to_the_callers_tenant() {
    let w = World::start().await;
    let path = format!("/api/ext-debug/stream?extensionId={}", w.ext.registry_id);
    let no_read = bearer(&token(json!({"permissions": ["extension:write"]})));
    let r = get(w.edge.http, &path, &[("authorization", &no_read)]).await;
    assert_eq!((r.status, r.json()), (403, json!({"error": "forbidden"})));
    assert_eq!(get(w.edge.http, &path, &[]).await.status, 401);
    let r = get(
        w.edge.http,
        &format!("{path}&tenantId={OTHER_TENANT}"),
        &[("authorization", &bearer(&token(json!({}))))],
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"error": "tenant_mismatch"}))
    );

    // The stream never ends: read it as it arrives.
    let auth = bearer(&token(json!({})));
    let mut stream = open(w.edge.http, "GET", &path, &[("authorization", &auth)]).await;
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{:?}",
        stream.headers
    );
    let event = |tenant: &str, message: &str| pb::LogEvent {
        ts_ms: 1,
        level: "info".into(),
        stream: "log".into(),
        tenant_id: tenant.into(),
        extension_id: w.ext.registry_id.clone(),
        install_id: w.ext.install_id.clone(),
        message: message.into(),
        ..Default::default()
    };
    let mut seen = String::new();
    assert_eventually!(
        Duration::from_secs(10),
        async || {
            // Publish until the stream (which subscribes when opened) sees one.
            w.cp.publish_logs(vec![event(OTHER_TENANT, "theirs"), event(TENANT, "mine-1")])
                .await;
            // A bounded read, not a pause: the next event or nothing yet.
            if let Ok(piece) =
                tokio::time::timeout(Duration::from_millis(200), stream.next_text()).await
            {
                seen.push_str(&piece.expect("the stream ended"));
            }
            seen.contains("mine-")
        },
        "the caller's own event on the stream (read so far: {seen:?})"
    );
    assert!(seen.contains("\"tenantId\":\"tenant-a\""), "{seen}");
    assert!(!seen.contains("theirs"), "{seen}");
}
