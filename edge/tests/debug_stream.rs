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

/// Reads the stream until `want` is in what was read, or fails after ten
/// seconds.
async fn read_until(stream: &mut annex_testkit::http::Streaming, seen: &mut String, want: &str) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(want) {
            match stream.next_text().await {
                Some(piece) => seen.push_str(&piece),
                None => return false,
            }
        }
        true
    })
    .await;
    assert!(
        found.unwrap_or(false),
        "{want:?} on the stream (read: {seen:?})"
    );
}

#[tokio::test]
async fn a_stream_starts_with_the_recent_tail_and_polls_resume_after_the_last_id() {
    let w = World::start().await;
    let path = format!("/api/ext-debug/stream?extensionId={}", w.ext.registry_id);
    let auth = bearer(&token(json!({})));
    let event = |message: &str| pb::LogEvent {
        ts_ms: 7,
        level: "warn".into(),
        stream: "log".into(),
        tenant_id: TENANT.into(),
        extension_id: w.ext.registry_id.clone(),
        install_id: w.ext.install_id.clone(),
        message: message.into(),
        ..Default::default()
    };
    w.cp.publish_logs(vec![event("before-1"), event("before-2")])
        .await;

    // Events logged before the stream opened arrive first, each with its id.
    let mut stream = open(w.edge.http, "GET", &path, &[("authorization", &auth)]).await;
    assert_eq!(stream.status, 200);
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "before-2").await;
    assert!(seen.find("before-1") < seen.find("before-2"), "{seen}");
    let ids: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(str::trim)
        .collect();
    assert_eq!(ids.len(), 2, "{seen}");

    // Polling: the first poll answers the tail and where to resume.
    let poll = |body: &'static str| {
        let auth = auth.clone();
        let path = path.clone();
        let edge = w.edge.http;
        async move {
            annex_testkit::http::send(
                edge,
                "POST",
                &path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.as_bytes(),
            )
            .await
        }
    };
    let first = poll("{}").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let body = first.json();
    let messages: Vec<_> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(messages, ["before-1", "before-2"]);
    assert_eq!(body["events"][0]["level"], "warn");
    assert_eq!(body["events"][0]["tenantId"], TENANT);
    let last_id = body["lastId"].as_str().expect("lastId").to_owned();
    assert_eq!(
        last_id, ids[1],
        "the poll's lastId is the stream's last event id"
    );

    w.cp.publish_logs(vec![event("after")]).await;
    read_until(&mut stream, &mut seen, "after").await;
    let next = annex_testkit::http::send(
        w.edge.http,
        "POST",
        &path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json!({"lastId": last_id}).to_string().as_bytes(),
    )
    .await;
    let body = next.json();
    assert_eq!(body["events"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["events"][0]["message"], "after");

    // A reconnecting EventSource resumes after the id it last saw.
    let mut resumed = open(
        w.edge.http,
        "GET",
        &path,
        &[("authorization", &auth), ("last-event-id", &last_id)],
    )
    .await;
    let mut again = String::new();
    read_until(&mut resumed, &mut again, "after").await;
    assert!(!again.contains("before-"), "{again}");

    // Bad input is a clear 4xx; polling needs a session like the stream.
    let bad = poll(r#"{"lastId": "1700000000000-0"}"#).await;
    assert_eq!(
        (bad.status, bad.json()),
        (400, json!({"error": "invalid_last_id"}))
    );
    let broken = poll("{").await;
    assert_eq!(broken.status, 400);
    let anonymous = annex_testkit::http::send(w.edge.http, "POST", &path, &[], b"{}").await;
    assert_eq!(anonymous.status, 401);
}
