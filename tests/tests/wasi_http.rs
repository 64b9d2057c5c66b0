//! Standard `wasi:http/proxy` components as extensions, through the real
//! binaries: a Rust one (`examples/wasi-http-hello`) and a JavaScript one
//! built with jco's HTTP world (`examples/js-http`) are published with
//! `"runtime": "wasi-http@0.2"`, installed, and called through the edge
//! like any extension: routing, the request and response mapping, the
//! response-header allowlist, the egress policy and the audit trail.

use std::time::Duration;

use annex_e2e::stack::{PUBLISHER, TENANT};
use annex_e2e::{Resp, Stack, send};
use annex_testkit::assert_eventually;
use serde_json::json;

/// The example's manifest under the stack's publisher.
fn manifest(guest: &str) -> serde_json::Value {
    let path = annex_worker::testing::examples_dir()
        .join(guest)
        .join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("JSON");
    m["publisher"] = json!(PUBLISHER);
    m["name"] = json!(format!("com.annex.e2e.{guest}"));
    m
}

/// Sends until the answer is not `component_compiling` (a JavaScript
/// component compiles for seconds after its install); each such refusal
/// must carry `Retry-After`.
async fn send_when_compiled(
    s: &Stack,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    assert_eventually!(
        Duration::from_secs(180),
        async || {
            let r = send(s.edge.http, method, path, headers, body).await;
            if r.status == 503 && r.json()["error"] == "component_compiling" {
                assert!(r.header("retry-after").is_some(), "no Retry-After");
                return None;
            }
            Some(r)
        },
        "the component compiled:\n{}",
        s.logs()
    )
}

#[tokio::test]
async fn wasi_http_components_are_extensions_through_the_real_binaries() {
    let s = Stack::start().await;
    let auth = s.bearer(&json!({}));
    for (guest, greeting) in [
        ("wasi-http-hello", "hello"),
        ("js-http", "hello from javascript"),
    ] {
        let component =
            std::fs::read(annex_worker::testing::guest(guest)).expect("built component");
        let ext = s.publish_and_install(&manifest(guest), &component).await;
        let base = format!("/api/ext/{}", ext.registry_id);

        let r = send_when_compiled(
            &s,
            "POST",
            &format!("{base}/echo?q=a%20b"),
            &[
                ("authorization", &auth),
                ("content-type", "text/plain"),
                ("x-request-id", "e2e-wasi-http"),
            ],
            b"through the edge",
        )
        .await;
        assert_eq!(r.status, 201, "{guest}: {}\n{}", r.text(), s.logs());
        assert_eq!(
            r.json(),
            json!({"method": "POST", "path": "/echo?q=a+b", "tenant": TENANT,
                   "extension": ext.registry_id, "requestId": "e2e-wasi-http",
                   "contentType": "text/plain", "body": "through the edge"}),
            "{guest}"
        );
        // Relayed through the edge's response-header allowlist (x-ext-*).
        assert_eq!(r.header("x-ext-world"), Some("wasi-http"), "{guest}");
        assert_eq!(r.header("content-type"), Some("application/json"));

        let r = send(
            s.edge.http,
            "GET",
            &format!("{base}/hello"),
            &[("authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{guest}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"message": greeting, "path": "/hello"}),
            "{guest}"
        );

        // The install allows no egress host and has no cap:http.fetch grant
        // beyond its manifest: the outgoing request is denied.
        let r = send(
            s.edge.http,
            "GET",
            &format!("{base}/fetch?url=http://127.0.0.1:9/x"),
            &[("authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{guest}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{guest}: {}", r.text());

        // An undeclared route is refused by the gateway before any worker.
        let r = send(
            s.edge.http,
            "GET",
            &format!("{base}/undeclared"),
            &[("authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(
            (r.status, r.json()),
            (404, json!({"error": "endpoint_not_found"}))
        );

        // Audited like any extension.
        assert_eventually!(
            Duration::from_secs(10),
            async || {
                let rows = s.audit_rows(&ext.registry_id).await;
                rows.iter().filter(|r| r.status == "ok").count() >= 3
            },
            "{guest}: audit rows"
        );
    }
}
