//! Each host interface's success path and its missing-capability behaviour
//! (docs/design/alga-compatibility.md, "Capabilities"), through
//! `Worker.Execute` with the probe guest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use annex_proto::pb;
use annex_worker::testing::{Call, StubBackend, json};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{eventually, publisher, worker, worker_with};

async fn probe(call: impl FnOnce(Call) -> Call, method: &str, path: &str) -> serde_json::Value {
    let (w, _) = worker().await;
    let hash = publisher().publish("probe");
    let response = w
        .execute(call(Call::new(&hash, method, path)).build())
        .await;
    assert_eq!(response.outcome, pb::Outcome::Ok as i32, "{response:?}");
    json(&response)
}

#[tokio::test]
async fn context_returns_the_request_ids() {
    let body = probe(|c| c, "GET", "/context").await;
    assert_eq!(
        body,
        json!({"requestId": "req-1", "tenantId": "tenant-a", "extensionId": "ext-1",
               "installId": "install-1", "versionId": "version-1"})
    );
}

#[tokio::test]
async fn config_is_visible_through_the_config_interface() {
    let body = probe(
        |c| c.config("region", "eu").config("mode", "test"),
        "GET",
        "/config/list",
    )
    .await;
    assert_eq!(
        body,
        json!({"entries": [["mode", "test"], ["region", "eu"]]})
    );
    let body = probe(
        |c| c.config("region", "eu").query("key", "region"),
        "GET",
        "/config/get",
    )
    .await;
    assert_eq!(body, json!({"value": "eu"}));
    let body = probe(|c| c.query("key", "absent"), "GET", "/config/get").await;
    assert_eq!(body, json!({"value": null}));
}

#[tokio::test]
async fn guest_logs_reach_the_execution_log() {
    let backend = Arc::new(StubBackend::default());
    let w = worker_with(backend.clone()).await;
    let hash = publisher().publish("probe");
    let response = w
        .execute(
            Call::new(&hash, "GET", "/log")
                .query("msg", "hi there")
                .build(),
        )
        .await;
    assert_eq!(json(&response), json!({"logged": true}));
    let events = eventually(Duration::from_secs(5), || {
        let e = backend.logs_containing("hi there");
        (e.len() == 3).then_some(e)
    })
    .await;
    let levels: Vec<&str> = events.iter().map(|e| e.level.as_str()).collect();
    assert_eq!(levels, ["info", "warn", "error"]);
    assert!(
        events
            .iter()
            .all(|e| e.stream == "log" && e.tenant_id == "tenant-a" && e.request_id == "req-1")
    );
}

fn a_user() -> pb::User {
    pb::User {
        user_id: "u-1".into(),
        user_email: "u@example.com".into(),
        user_name: "U. Ser".into(),
        user_type: "internal".into(),
        client_name: "Acme MSP".into(),
        client_id: Some("c-9".into()),
        additional_fields: HashMap::from([
            ("zeta".into(), "1".into()),
            ("alpha".into(), "2".into()),
        ]),
    }
}

#[tokio::test]
async fn user_is_not_available_without_a_user_in_the_request() {
    assert_eq!(
        probe(|c| c, "GET", "/user").await,
        json!({"err": "not-available"})
    );
    assert_eq!(
        probe(|c| c, "GET", "/user-v2").await,
        json!({"err": "not-available"})
    );
}

#[tokio::test]
async fn user_and_user_v2_return_the_request_user() {
    let body = probe(|c| c.user(a_user()), "GET", "/user").await;
    assert_eq!(
        body,
        json!({"ok": {"tenantId": "tenant-a", "clientName": "Acme MSP", "userId": "u-1",
                      "userEmail": "u@example.com", "userName": "U. Ser", "userType": "internal"}})
    );
    let body = probe(|c| c.user(a_user()), "GET", "/user-v2").await;
    assert_eq!(body["ok"]["clientId"], json!("c-9"));
    // Additional fields are sorted by key.
    assert_eq!(
        body["ok"]["additionalFields"],
        json!([["alpha", "2"], ["zeta", "1"]])
    );
}

#[tokio::test]
async fn secrets_are_denied_and_list_is_empty_without_the_capability() {
    let body = probe(
        |c| c.secrets_version("v1").query("key", "API_KEY"),
        "GET",
        "/secrets/get",
    )
    .await;
    assert_eq!(body, json!({"err": "denied"}));
    let body = probe(|c| c.secrets_version("v1"), "GET", "/secrets/list").await;
    assert_eq!(body, json!({"keys": []}));
}

#[tokio::test]
async fn secrets_are_read_with_the_capability() {
    let backend = Arc::new(StubBackend {
        secrets: [
            ("ALGA_API_KEY".to_string(), "s3cret".to_string()),
            ("other".to_string(), "x".to_string()),
        ]
        .into(),
        ..Default::default()
    });
    let w = worker_with(backend).await;
    let hash = publisher().publish("probe");
    let call = |path: &str| {
        Call::new(&hash, "GET", path)
            .caps(&["cap:secrets.get"])
            .secrets_version("v1")
    };
    let r = w
        .execute(call("/secrets/get").query("key", "ALGA_API_KEY").build())
        .await;
    assert_eq!(json(&r), json!({"ok": "s3cret"}));
    let r = w
        .execute(call("/secrets/get").query("key", "nope").build())
        .await;
    assert_eq!(json(&r), json!({"err": "missing"}));
    let r = w.execute(call("/secrets/list").build()).await;
    assert_eq!(json(&r), json!({"keys": ["ALGA_API_KEY", "other"]}));
    // An install without secrets: missing.
    let r = w
        .execute(
            Call::new(&hash, "GET", "/secrets/get")
                .caps(&["cap:secrets.get"])
                .query("key", "ALGA_API_KEY")
                .build(),
        )
        .await;
    assert_eq!(json(&r), json!({"err": "missing"}));
}

#[tokio::test]
async fn host_backed_interfaces_are_denied_without_capability_or_install() {
    let (w, _) = worker().await;
    let hash = publisher().publish("probe");
    let cases: [(&str, serde_json::Value); 7] = [
        ("/storage/get", json!({"err": "denied"})),
        ("/storage/list", json!({"err": "denied"})),
        ("/scheduler/list", json!({"err": "denied"})),
        (
            "/scheduler/delete",
            json!({"success": false, "error": "Denied"}),
        ),
        ("/clients/list", json!({"err": "not-allowed"})),
        ("/services/get", json!({"err": "not-allowed"})),
        ("/ui-proxy", json!({"err": "denied"})),
    ];
    for (path, expected) in cases {
        let r = w
            .execute(Call::new(&hash, "GET", path).query("route", "/x").build())
            .await;
        assert_eq!(json(&r), expected, "{path} without capability");
    }
    let r = w
        .execute(Call::new(&hash, "GET", "/invoicing").build())
        .await;
    assert_eq!(
        json(&r)["error"],
        json!("Permission denied: cap:invoice.manual.create not granted")
    );
    // With the capability but no install id.
    let all = [
        "cap:storage.kv",
        "cap:scheduler.manage",
        "cap:invoice.manual.create",
        "cap:client.read",
    ];
    let r = w
        .execute(
            Call::new(&hash, "GET", "/storage/get")
                .caps(&all)
                .no_install()
                .build(),
        )
        .await;
    assert_eq!(json(&r), json!({"err": "denied"}));
    let r = w
        .execute(
            Call::new(&hash, "GET", "/scheduler/endpoints")
                .caps(&all)
                .no_install()
                .build(),
        )
        .await;
    assert_eq!(json(&r), json!({"err": "denied"}));
    let r = w
        .execute(
            Call::new(&hash, "GET", "/clients/list")
                .caps(&all)
                .no_install()
                .build(),
        )
        .await;
    assert_eq!(json(&r), json!({"err": "not-allowed"}));
    let r = w
        .execute(
            Call::new(&hash, "GET", "/invoicing")
                .caps(&all)
                .no_install()
                .build(),
        )
        .await;
    assert_eq!(
        json(&r)["error"],
        json!("Permission denied: install_id missing")
    );
}

#[tokio::test]
async fn unknown_capabilities_reject_the_request() {
    let (w, _) = worker().await;
    let hash = publisher().publish("probe");
    let r = w
        .execute(
            Call::new(&hash, "GET", "/context")
                .caps(&["cap:http.fetch", "cap:teleport"])
                .build(),
        )
        .await;
    assert_eq!(r.outcome, pb::Outcome::Rejected as i32);
    assert_eq!(r.status, 400);
    assert_eq!(r.error, "unknown_capabilities: cap:teleport");
}

/// A one-shot-per-connection HTTP/1.1 server on 127.0.0.1: `/redirect`
/// answers 302, anything else 200 echoing method, path and body.
pub(crate) async fn stub_http_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind stub");
    let addr = listener.local_addr().expect("stub addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body_start) = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&buf[..i]).to_string(), i + 4);
                    }
                };
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < body_start + len {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[body_start..]).to_string();
                let mut parts = head.lines().next().unwrap_or("").split(' ');
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let reply = if path == "/redirect" {
                    "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
                } else {
                    let text = format!("{method} {path} {body}");
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-stub: yes\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    )
                };
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

pub(crate) fn fetch_body(url: &str) -> Vec<u8> {
    json!({"method": "POST", "url": url, "headers": [["content-type", "text/plain"]], "body": "ping"})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn http_fetch_needs_the_capability() {
    let addr = stub_http_server().await;
    let body = probe(
        |c| {
            c.allow(&[addr.to_string().as_str()])
                .body(fetch_body(&format!("http://{addr}/x")))
        },
        "POST",
        "/fetch",
    )
    .await;
    assert_eq!(body, json!({"err": "not-allowed"}));
}

#[tokio::test]
async fn http_fetch_reaches_an_allowed_local_host() {
    let addr = stub_http_server().await;
    let body = probe(
        |c| {
            c.caps(&["cap:http.fetch"])
                .allow(&[addr.to_string().as_str()])
                .body(fetch_body(&format!("http://{addr}/x?q=1")))
        },
        "POST",
        "/fetch",
    )
    .await;
    assert_eq!(body["ok"]["status"], json!(200));
    assert_eq!(body["ok"]["body"], json!("POST /x?q=1 ping"));
    let headers = body["ok"]["headers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(headers.contains(&json!(["x-stub", "yes"])), "{headers:?}");
}

#[tokio::test]
async fn http_fetch_refuses_hosts_not_allowlisted_and_private_addresses_by_wildcard() {
    let addr = stub_http_server().await;
    let url = format!("http://{addr}/x");
    // Empty allowlist: deny by default.
    let body = probe(
        |c| c.caps(&["cap:http.fetch"]).body(fetch_body(&url)),
        "POST",
        "/fetch",
    )
    .await;
    assert_eq!(body, json!({"err": "not-allowed"}));
    // Another host allowed only.
    let body = probe(
        |c| {
            c.caps(&["cap:http.fetch"])
                .allow(&["example.com"])
                .body(fetch_body(&url))
        },
        "POST",
        "/fetch",
    )
    .await;
    assert_eq!(body, json!({"err": "not-allowed"}));
    // `localhost` is loopback: a wildcard entry does not admit it.
    let url = format!("http://api.localhost:{}/x", addr.port());
    let body = probe(
        |c| {
            c.caps(&["cap:http.fetch"])
                .allow(&["*.localhost"])
                .body(fetch_body(&url))
        },
        "POST",
        "/fetch",
    )
    .await;
    assert_ne!(
        body["ok"]["status"],
        json!(200),
        "a wildcard must not reach loopback: {body}"
    );
}

#[tokio::test]
async fn http_fetch_returns_redirects_without_following_them() {
    let addr = stub_http_server().await;
    let body = probe(
        |c| {
            c.caps(&["cap:http.fetch"])
                .allow(&[addr.to_string().as_str()])
                .body(fetch_body(&format!("http://{addr}/redirect")))
        },
        "POST",
        "/fetch",
    )
    .await;
    assert_eq!(body["ok"]["status"], json!(302));
    assert_eq!(body["ok"]["body"], json!(""));
}

#[tokio::test]
async fn http_fetch_reports_invalid_urls() {
    let body = probe(
        |c| {
            c.caps(&["cap:http.fetch"])
                .allow(&["127.0.0.1"])
                .body(fetch_body("not a url"))
        },
        "POST",
        "/fetch",
    )
    .await;
    assert_eq!(body, json!({"err": "invalid-url"}));
}

pub(crate) fn wasi_http_body(addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
    json!({"scheme": "http", "authority": addr.to_string(), "path": path})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn wasi_http_goes_through_the_same_egress_policy() {
    let addr = stub_http_server().await;
    // No capability: denied, even with the host allowlisted.
    let body = probe(
        |c| {
            c.allow(&[addr.to_string().as_str()])
                .body(wasi_http_body(addr, "/w"))
        },
        "POST",
        "/wasi-http",
    )
    .await;
    assert_eq!(body, json!({"err": "ErrorCode::HttpRequestDenied"}));
    // Capability but the host is not allowlisted: denied.
    let body = probe(
        |c| {
            c.caps(&["cap:http.fetch"])
                .allow(&["example.com"])
                .body(wasi_http_body(addr, "/w"))
        },
        "POST",
        "/wasi-http",
    )
    .await;
    assert_eq!(body, json!({"err": "ErrorCode::HttpRequestDenied"}));
    // Both: the request reaches the stub.
    let body = probe(
        |c| {
            c.caps(&["cap:http.fetch"])
                .allow(&[addr.to_string().as_str()])
                .body(wasi_http_body(addr, "/w?x=1"))
        },
        "POST",
        "/wasi-http",
    )
    .await;
    assert_eq!(body, json!({"ok": {"status": 200, "body": "GET /w?x=1 "}}));
    // Redirects come back as they are.
    let body = probe(
        |c| {
            c.caps(&["cap:http.fetch"])
                .allow(&[addr.to_string().as_str()])
                .body(wasi_http_body(addr, "/redirect"))
        },
        "POST",
        "/wasi-http",
    )
    .await;
    assert_eq!(body["ok"]["status"], json!(302));
}

#[tokio::test]
async fn usage_counts_cpu_time_and_egress_bytes_of_both_http_paths() {
    let addr = stub_http_server().await;
    let (w, _) = worker().await;
    let hash = publisher().publish("probe");
    let run = |path: &str, body: Vec<u8>| {
        Call::new(&hash, "POST", path)
            .caps(&["cap:http.fetch"])
            .allow(&[addr.to_string().as_str()])
            .body(body)
            .build()
    };
    // wasi:http: no request body; the stub answers "GET /w?x=1 " (11 bytes).
    let r = w
        .execute(run("/wasi-http", wasi_http_body(addr, "/w?x=1")))
        .await;
    assert_eq!(
        json(&r),
        json!({"ok": {"status": 200, "body": "GET /w?x=1 "}})
    );
    let usage = r.usage.expect("usage");
    assert_eq!(usage.egress_bytes, 11);
    assert!(usage.cpu_us > 0, "{usage:?}");
    assert!(usage.cpu_us <= usage.wall_us, "{usage:?}");
    assert!(usage.peak_memory_bytes > 0, "{usage:?}");
    // http.fetch: the request body and the response body both count.
    let r = w
        .execute(run("/fetch", fetch_body(&format!("http://{addr}/x"))))
        .await;
    assert_eq!(json(&r)["ok"]["body"], json!("POST /x ping"));
    let usage = r.usage.expect("usage");
    assert!(
        usage.egress_bytes >= ("ping".len() + "POST /x ping".len()) as u64,
        "{usage:?}"
    );
    // No egress, no egress bytes.
    let r = w.execute(Call::new(&hash, "GET", "/context").build()).await;
    assert_eq!(r.usage.expect("usage").egress_bytes, 0);
}

#[tokio::test]
async fn a_metering_worker_reports_the_fuel_an_execution_burnt() {
    let mut settings = annex_worker::testing::test_settings(None);
    settings.engine.fuel = true;
    let w = annex_worker::testing::TestWorker::start(settings, publisher(), None).await;
    let hash = publisher().publish("probe");
    let r = w.execute(Call::new(&hash, "GET", "/context").build()).await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    let usage = r.usage.expect("usage");
    assert!(usage.fuel_consumed > 0, "{usage:?}");
}
