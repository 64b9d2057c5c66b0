//! `/api/ext-debug/stream`: the caller's tenant's logs of one extension as
//! server-sent events; other tenants' events never appear.

mod support;

use std::time::Duration;

use annex_proto::pb;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

    // Open the stream by hand: it never ends, so read it incrementally.
    let mut conn = tokio::net::TcpStream::connect(w.edge.http)
        .await
        .expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: {}\r\n\r\n",
        bearer(&token(json!({})))
    );
    conn.write_all(req.as_bytes()).await.expect("write");
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
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("mine-") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event arrived: {seen}"
        );
        // Publish until the stream (which subscribes when opened) sees one.
        w.cp.publish_logs(vec![event(OTHER_TENANT, "theirs"), event(TENANT, "mine-1")])
            .await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await
        {
            assert!(n > 0, "stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );
    assert!(seen.contains("\"tenantId\":\"tenant-a\""), "{seen}");
    assert!(!seen.contains("theirs"), "{seen}");
}
