//! `wasi:http/proxy` components (`"runtime": "wasi-http@0.2"`): the Rust
//! `wasi-http-hello` and the JavaScript `js-http` (jco, fetch-event) answer
//! through the same execution path as Alga components: the request mapping,
//! the egress policy behind `cap:http.fetch`, the response limit, and a
//! manifest whose world the component does not export.

use annex_proto::pb;
use annex_worker::testing::{Call, Publisher, TestWorker, guest, json, pack, test_settings};
use serde_json::json;

use crate::interfaces::stub_http_server;
use crate::support::{publisher, worker};

/// `POST /echo` with a body and the headers the edge adds.
fn echo(hash: &annex_bundle::ContentHash) -> pb::ExecuteRequest {
    Call::new(hash, "POST", "/echo")
        .query("q", "a b")
        .header("content-type", "text/plain")
        .header("x-alga-tenant", "tenant-a")
        .header("x-alga-extension", "ext-1")
        .header("x-request-id", "req-1")
        .body("through wasi:http")
        .build()
}

#[tokio::test]
async fn a_rust_wasi_http_component_sees_the_request_and_answers_like_an_extension() {
    let (w, _) = worker().await;
    let hash = publisher().publish("wasi-http-hello");
    let r = w.execute(echo(&hash)).await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    assert_eq!(r.status, 201);
    assert_eq!(
        r.headers.get("x-ext-world").map(String::as_str),
        Some("wasi-http")
    );
    assert_eq!(
        json(&r),
        json!({"method": "POST", "path": "/echo?q=a+b", "tenant": "tenant-a", "extension": "ext-1",
               "requestId": "req-1", "contentType": "text/plain", "body": "through wasi:http"})
    );
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(json(&r), json!({"message": "hello", "path": "/hello"}));
}

#[tokio::test]
async fn a_javascript_wasi_http_component_built_with_jco_answers() {
    let (w, _) = worker().await;
    let hash = publisher().publish("js-http");
    let r = w.execute(echo(&hash)).await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    assert_eq!(r.status, 201);
    assert_eq!(
        r.headers.get("x-ext-world").map(String::as_str),
        Some("wasi-http")
    );
    assert_eq!(
        json(&r),
        json!({"method": "POST", "path": "/echo?q=a+b", "tenant": "tenant-a", "extension": "ext-1",
               "requestId": "req-1", "contentType": "text/plain", "body": "through wasi:http"})
    );
}

#[tokio::test]
async fn outgoing_requests_go_through_the_egress_policy() {
    let addr = stub_http_server().await;
    let (w, _) = worker().await;
    for name in ["wasi-http-hello", "js-http"] {
        let hash = publisher().publish(name);
        let fetch = |c: Call| c.query("url", &format!("http://{addr}/w")).build();
        let allowed = addr.to_string();
        // Without cap:http.fetch the request is denied, allowlisted or not.
        let r = w
            .execute(fetch(
                Call::new(&hash, "GET", "/fetch").allow(&[allowed.as_str()]),
            ))
            .await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
        assert!(json(&r)["error"].is_string(), "{name}: {}", json(&r));
        // With it and the host allowlisted, the stub answers.
        let r = w
            .execute(fetch(
                Call::new(&hash, "GET", "/fetch")
                    .caps(&["cap:http.fetch"])
                    .allow(&[allowed.as_str()]),
            ))
            .await;
        assert_eq!(
            json(&r),
            json!({"status": 200, "body": "GET /w "}),
            "{name}"
        );
        assert!(r.usage.expect("usage").egress_bytes > 0, "{name}");
    }
}

#[tokio::test]
async fn a_response_over_the_limit_is_refused() {
    let (w, _) = worker().await;
    let hash = publisher().publish("wasi-http-hello");
    let r = w
        .execute(
            Call::new(&hash, "GET", "/hello")
                .max_response_bytes(8)
                .build(),
        )
        .await;
    assert_eq!(r.outcome, pb::Outcome::Rejected as i32, "{r:?}");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.error,
        "execute_failed: response body exceeds the limit of 8 bytes"
    );
}

#[tokio::test]
async fn a_component_without_the_manifests_world_is_refused_before_it_runs() {
    let p = Publisher::new();
    // The Alga hello guest under a manifest that says wasi-http.
    let manifest = json!({
        "name": "not-http", "publisher": "annex", "version": "0.1.0", "runtime": "wasi-http@0.2",
        "api": {"endpoints": [{"method": "GET", "path": "/hello", "handler": "dist/main"}]}
    });
    let bytes = pack(
        manifest.to_string().as_bytes(),
        &std::fs::read(guest("hello")).expect("hello"),
    );
    let hash = p.store(&bytes, &p.sign(&bytes, "not-http"));
    let w = TestWorker::start(test_settings(None), &p, None).await;
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.outcome, pb::Outcome::Rejected as i32, "{r:?}");
    assert_eq!(r.status, 500);
    assert!(
        r.error.starts_with("execute_failed: component sha256:")
            && r.error.contains("wasi-http world"),
        "{}",
        r.error
    );
}
