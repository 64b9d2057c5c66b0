//! `/api/ext` end to end inside one process: real control plane (mTLS,
//! in-memory store), a scripted worker over mTLS, the edge on 127.0.0.1:0.

mod support;

use std::time::Duration;

use annex_ops::Role;
use serde_json::json;
use support::*;

/// One request and the status and body it must get.
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    error: Option<&'static str>,
}

fn case(
    what: &'static str,
    method: &'static str,
    path: impl Into<String>,
    status: u16,
    error: Option<&'static str>,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        headers: vec![],
        body: vec![],
        status,
        error,
    }
}

impl Case {
    fn auth(mut self, claims: serde_json::Value) -> Case {
        self.headers.push(("authorization", bearer(&token(claims))));
        self
    }
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Case {
        self.headers.push((k, v.into()));
        self
    }
    fn body(mut self, b: impl Into<Vec<u8>>) -> Case {
        self.body = b.into();
        self
    }
}

async fn check(edge: &Edge, cases: Vec<Case>) {
    for c in cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = edge.send(c.method, &c.path, &headers, &c.body).await;
        assert_eq!(resp.status, c.status, "{}: {}", c.what, resp.text());
        assert!(
            resp.header("x-request-id").is_some_and(|v| !v.is_empty()),
            "{}: x-request-id",
            c.what
        );
        if let Some(code) = c.error {
            let body = resp.json();
            assert_eq!(body["error"], code, "{}", c.what);
            let keys = body.as_object().map(|o| o.len()).unwrap_or_default();
            let want_keys = if matches!(code, "bad_gateway" | "gateway_timeout") {
                2
            } else {
                1
            };
            assert_eq!(keys, want_keys, "{}: {body}", c.what);
            if want_keys == 2 {
                assert_eq!(
                    body["requestId"].as_str(),
                    resp.header("x-request-id"),
                    "{}",
                    c.what
                );
            }
        }
    }
}

#[tokio::test]
async fn a_call_reaches_the_guest_with_only_allowlisted_headers_both_ways() {
    let w = World::start().await;
    let auth = bearer(&token(json!({"client_name": "Acme Corp"})));
    let resp = w
        .edge
        .send(
            "GET",
            &format!("/api/ext/{}/items/42?a=1&a=2&b=x%20y", w.ext.slug),
            &[
                ("authorization", &auth),
                ("x-request-id", "req-123"),
                ("accept", "application/json"),
                ("cookie", "annex_session=whatever"),
                ("x-custom", "dropped"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
            b"",
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-request-id"), Some("req-123"));
    let body = resp.json();
    assert_eq!(body["path"], "/items/42");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["query"], json!({"a": "2", "b": "x y"}));
    assert_eq!(body["tenant"], TENANT);
    assert_eq!(body["extension"], w.ext.registry_id.as_str());
    assert_eq!(body["install"], w.ext.install_id.as_str());
    assert_eq!(body["trigger"], "http");
    assert_eq!(body["has_grant"], true);
    assert_eq!(body["timeout_ms"], 1000);
    assert_eq!(body["idempotency_key"], "");
    assert_eq!(body["user"]["id"], "user-1");
    assert_eq!(body["user"]["type"], "internal");
    assert_eq!(body["user"]["name"], "Ann Example");
    let headers = body["headers"].as_object().expect("headers");
    let mut names: Vec<&str> = headers.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "x-alga-extension",
            "x-alga-tenant",
            "x-request-id"
        ]
    );
    assert_eq!(headers["x-alga-tenant"], TENANT);
    let sent = w.worker.calls().last().cloned().expect("call");
    assert_eq!(
        sent.traceparent,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );

    // The extension's own headers come back through the allowlist.
    let resp = w.call("GET", "/headers").await;
    assert_eq!(resp.status, 201);
    assert_eq!(resp.text(), "hello");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("x-ext-foo"), Some("bar"));
    assert_eq!(resp.header("etag"), Some("\"v1\""));
    // Never publicly cacheable: every answer here was made for one caller.
    assert_eq!(resp.header("cache-control"), Some("private, max-age=60"));
    assert_eq!(resp.header("set-cookie"), None);
    assert_eq!(resp.header("location"), None);

    // A guest error status passes through as the guest's answer.
    let resp = w.call("GET", "/teapot").await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (418, "short and stout")
    );
}

#[tokio::test]
async fn every_refusal_has_its_status_and_body() {
    let w = World::start().await;
    let ext = format!("/api/ext/{}", w.ext.registry_id);
    let expired = json!({"exp": 1_000_000});
    let forged = {
        let t = token(json!({}));
        format!("Bearer {}x", &t[..t.len() - 1])
    };
    check(
        &w.edge,
        vec![
            case(
                "no credentials",
                "GET",
                format!("{ext}/hello"),
                401,
                Some("Unauthorized"),
            ),
            case(
                "forged signature",
                "GET",
                format!("{ext}/hello"),
                401,
                Some("Unauthorized"),
            )
            .header("authorization", forged),
            case(
                "expired session",
                "GET",
                format!("{ext}/hello"),
                401,
                Some("Unauthorized"),
            )
            .auth(expired),
            case(
                "wrong audience",
                "GET",
                format!("{ext}/hello"),
                401,
                Some("Unauthorized"),
            )
            .auth(json!({"aud": "other"})),
            case(
                "unknown API key",
                "GET",
                format!("{ext}/hello"),
                401,
                Some("Unauthorized"),
            )
            .header("x-api-key", "annex_nope_nope"),
            case(
                "blank tenant",
                "GET",
                format!("{ext}/hello"),
                401,
                Some("invalid_session"),
            )
            .auth(json!({"tenant": ""})),
            case(
                "no user type",
                "GET",
                format!("{ext}/hello"),
                401,
                Some("unauthenticated"),
            )
            .auth(json!({"user_type": null})),
            case(
                "no user id",
                "GET",
                format!("{ext}/hello"),
                401,
                Some("unauthenticated"),
            )
            .auth(json!({"sub": null})),
            case(
                "tenant header differs",
                "GET",
                format!("{ext}/hello"),
                403,
                Some("tenant_mismatch"),
            )
            .auth(json!({}))
            .header("x-alga-tenant", OTHER_TENANT),
            case(
                "x-tenant-id differs",
                "GET",
                format!("{ext}/hello"),
                403,
                Some("tenant_mismatch"),
            )
            .auth(json!({}))
            .header("x-tenant-id", OTHER_TENANT),
            case(
                "unroutable method",
                "TRACE",
                format!("{ext}/hello"),
                404,
                Some("endpoint_not_found"),
            )
            .auth(json!({})),
            case(
                "not installed",
                "GET",
                "/api/ext/acme.unknown/hello",
                404,
                Some("extension_not_available"),
            )
            .auth(json!({})),
            case(
                "other tenant's install",
                "GET",
                format!("{ext}/hello"),
                404,
                Some("extension_not_available"),
            )
            .auth(json!({"tenant": OTHER_TENANT})),
            case(
                "undeclared path",
                "GET",
                format!("{ext}/nope"),
                404,
                Some("endpoint_not_found"),
            )
            .auth(json!({})),
            case(
                "wrong method",
                "POST",
                format!("{ext}/hello"),
                404,
                Some("endpoint_not_found"),
            )
            .auth(json!({})),
            case(
                "segment count",
                "GET",
                format!("{ext}/items/1/2"),
                404,
                Some("endpoint_not_found"),
            )
            .auth(json!({})),
            case(
                "read without extension:read",
                "GET",
                format!("{ext}/hello"),
                403,
                Some("forbidden"),
            )
            .auth(json!({"permissions": ["extension:write"]})),
            case(
                "write without extension:write",
                "DELETE",
                format!("{ext}/items/1"),
                403,
                Some("forbidden"),
            )
            .auth(json!({"permissions": ["extension:read"]})),
            case(
                "client user without portal opt-in",
                "GET",
                format!("{ext}/hello"),
                403,
                Some("forbidden"),
            )
            .auth(json!({"user_type": "client", "client_id": "c1"})),
            case(
                "body over the cap",
                "POST",
                format!("{ext}/echo"),
                413,
                Some("payload_too_large"),
            )
            .auth(json!({}))
            .body(vec![b'x'; 64 * 1024 + 1]),
            case(
                "execution over the deadline",
                "GET",
                format!("{ext}/slow"),
                504,
                Some("gateway_timeout"),
            )
            .auth(json!({})),
            case(
                "guest timeout",
                "GET",
                format!("{ext}/guest-timeout"),
                504,
                Some("gateway_timeout"),
            )
            .auth(json!({})),
            case(
                "guest trap",
                "GET",
                format!("{ext}/trap"),
                502,
                Some("bad_gateway"),
            )
            .auth(json!({})),
            case("HEAD is a read", "HEAD", format!("{ext}/hello"), 200, None)
                .auth(json!({"permissions": ["extension:read"]})),
            case(
                "a cookie session works",
                "GET",
                format!("{ext}/hello"),
                200,
                None,
            )
            .header(
                "cookie",
                format!("other=1; annex_session={}", token(json!({}))),
            ),
        ],
    )
    .await;
    // The guest's internal error text never reaches the client.
    let resp = w.call("GET", "/trap").await;
    assert!(!resp.text().contains("secret internal detail"));
}

#[tokio::test]
async fn client_users_need_the_portal_opt_in_and_a_client_id() {
    let w = World::start().await;
    let portal = install(&w.cp, "portal", TENANT, true).await;
    let path = format!("/api/ext/{}/items/9", portal.registry_id);
    check(
        &w.edge,
        vec![
            case("client with client id", "DELETE", path.clone(), 200, None)
                .auth(json!({"user_type": "client", "client_id": "c1", "permissions": []})),
            case(
                "client without client id",
                "GET",
                path.clone(),
                403,
                Some("forbidden"),
            )
            .auth(json!({"user_type": "client", "permissions": ["extension:read"]})),
        ],
    )
    .await;
    let calls = w.worker.calls();
    let last = calls.last().and_then(|c| c.user.clone()).expect("user");
    assert_eq!(
        (last.user_type.as_str(), last.client_id.as_deref()),
        ("client", Some("c1"))
    );
}

#[tokio::test]
async fn writes_carry_the_clients_idempotency_key_and_no_made_up_one() {
    let w = World::start().await;
    let auth = bearer(&token(json!({})));
    let path = format!("/api/ext/{}/echo", w.ext.registry_id);
    let resp = w
        .edge
        .send(
            "POST",
            &path,
            &[
                ("authorization", &auth),
                ("x-idempotency-key", "k-1"),
                ("content-type", "text/plain"),
            ],
            b"ping",
        )
        .await;
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(
        (body["idempotency_key"].as_str(), body["body"].as_str()),
        (Some("k-1"), Some("ping"))
    );
    // A write whose client sent no key carries none (the edge invents no
    // key: a made-up one could never be repeated).
    let resp = w
        .edge
        .send(
            "POST",
            &path,
            &[("authorization", &auth), ("x-request-id", "rid-7")],
            b"",
        )
        .await;
    assert_eq!(resp.json()["idempotency_key"], "");
    assert_eq!(resp.json()["body"], "");
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let w = World::start_with(EdgeOptions {
        rate: annex_edge::RateSettings {
            capacity: 2,
            refill_per_sec: 0.01,
        },
        ..EdgeOptions::default()
    })
    .await;
    assert_eq!(w.call("GET", "/hello").await.status, 200);
    assert_eq!(w.call("GET", "/hello").await.status, 200);
    let resp = w.call("GET", "/hello").await;
    assert_eq!(resp.status, 429);
    assert_eq!(resp.json(), json!({"error": "rate_limited"}));
    let retry: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!(retry >= 1, "{retry}");
}

#[tokio::test]
async fn a_tenant_quota_from_the_snapshot_answers_429_and_lifts_without_restart() {
    let w = World::start().await;
    let other = install(&w.cp, "hello-other", OTHER_TENANT, false).await;
    let mut ops = w.cp.installs(Role::Operator).await;
    let quota = |rps: u32| annex_proto::pb::SetQuotaRequest {
        quota: Some(annex_proto::pb::QuotaRef {
            tenant_id: TENANT.into(),
            extension: String::new(),
        }),
        max_concurrency: 0,
        requests_per_second: rps,
    };
    // One request per second for the fleet (this edge and the control plane:
    // a share of 1 each). Once the snapshot carries it, a burst is refused.
    ops.set_quota(quota(1)).await.expect("set quota");
    let resp = assert_eventually!(
        Duration::from_secs(10),
        async || Some(w.call("GET", "/hello").await).filter(|r| r.status == 429),
        "the quota to reach the edge (a 429)"
    );
    assert_eq!(resp.json(), json!({"error": "rate_limited"}));
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    // The refusal is audited like the gateway's other denials.
    assert_eventually!(
        Duration::from_secs(5),
        async || {
            w.audit_rows()
                .await
                .iter()
                .any(|r| r.status == "policy_denied" && r.metrics["http_status"] == json!(429))
        },
        "a policy_denied audit row for the quota refusal"
    );
    // And counted for operators.
    let metrics = get(w.edge.admin, "/metrics", &[]).await.text();
    let refusals = metrics
        .lines()
        .find_map(|l| l.strip_prefix("annex_edge_quota_refusals_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(refusals.is_some_and(|n| n >= 1), "{metrics}");
    // Another tenant is not limited.
    let other_auth = bearer(&token(json!({"tenant": OTHER_TENANT})));
    let path = format!("/api/ext/{}/hello", other.registry_id);
    for _ in 0..3 {
        let r = w
            .edge
            .send("GET", &path, &[("authorization", &other_auth)], b"")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Lifted: bursts pass again, with no restart.
    ops.delete_quota(annex_proto::pb::QuotaRef {
        tenant_id: TENANT.into(),
        extension: String::new(),
    })
    .await
    .expect("remove quota");
    assert_eventually!(
        Duration::from_secs(10),
        async || {
            let mut all_ok = true;
            for _ in 0..3 {
                all_ok &= w.call("GET", "/hello").await.status == 200;
            }
            all_ok
        },
        "a burst to pass once the quota is lifted"
    );
}

#[tokio::test]
async fn preflight_echoes_only_configured_origins() {
    let w = World::start().await;
    let path = format!("/api/ext/{}/hello", w.ext.registry_id);
    let ok = w
        .edge
        .send("OPTIONS", &path, &[("origin", ORIGIN)], b"")
        .await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        ok.header("access-control-allow-headers"),
        Some("content-type,x-request-id,x-idempotency-key")
    );
    let evil = w
        .edge
        .send("OPTIONS", &path, &[("origin", "https://evil.example")], b"")
        .await;
    assert_eq!(evil.status, 204);
    assert_eq!(evil.header("access-control-allow-origin"), None);
    assert_eq!(evil.header("access-control-allow-credentials"), None);
    // Errors carry the echo too, for allowed origins only.
    let denied = w.edge.send("GET", &path, &[("origin", ORIGIN)], b"").await;
    assert_eq!(
        (denied.status, denied.header("access-control-allow-origin")),
        (401, Some(ORIGIN))
    );
}

#[tokio::test]
async fn a_disabled_install_stops_answering_within_a_second() {
    let w = World::start().await;
    assert_eq!(w.call("GET", "/hello").await.status, 200);
    w.cp.installs(Role::Operator)
        .await
        .disable(annex_proto::pb::InstallRef {
            tenant_id: TENANT.into(),
            extension: w.ext.registry_id.clone(),
        })
        .await
        .expect("disable");
    assert_eventually!(
        Duration::from_secs(1),
        async || {
            let r = w.call("GET", "/hello").await;
            r.status == 404 && r.json()["error"] == "extension_not_available"
        },
        "the edge to stop serving the disabled install"
    );
}

#[tokio::test]
async fn audit_rows_record_allowed_and_denied_calls() {
    let w = World::start().await;
    assert_eq!(w.call("GET", "/hello").await.status, 200);
    let denied = bearer(&token(json!({"permissions": []})));
    let path = format!("/api/ext/{}/hello", w.ext.registry_id);
    let resp = w
        .edge
        .send(
            "GET",
            &path,
            &[("authorization", &denied), ("x-request-id", "denied-1")],
            b"",
        )
        .await;
    assert_eq!(resp.status, 403);
    assert_eq!(w.call("GET", "/teapot").await.status, 418);
    assert_eq!(w.call("GET", "/slow").await.status, 504);
    let rows = assert_eventually!(
        Duration::from_secs(5),
        async || Some(w.audit_rows().await).filter(|rows| rows.len() >= 4),
        "four audit rows: {:?}",
        w.audit_rows().await
    );
    let by_status = |s: &str| rows.iter().find(|r| r.status == s).cloned();
    let ok = by_status("ok").expect("ok row");
    assert_eq!(ok.metrics["method"], "GET");
    assert_eq!(ok.metrics["path"], "/hello");
    assert_eq!(ok.metrics["endpoint_template"], "/hello");
    assert_eq!(ok.metrics["principal_kind"], "user");
    assert_eq!(ok.metrics["user_id"], "user-1");
    assert_eq!(ok.metrics["http_status"], 200);
    let denied = by_status("policy_denied").expect("denied row");
    assert_eq!(denied.request_id.as_deref(), Some("denied-1"));
    assert_eq!(denied.metrics["http_status"], 403);
    let upstream = by_status("upstream_error").expect("upstream row");
    assert_eq!(upstream.error.as_deref(), Some("extension_error_status"));
    let timeout = by_status("timeout").expect("timeout row");
    assert_eq!(timeout.error.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn api_keys_authenticate_service_clients() {
    let w = World::start().await;
    let created =
        w.cp.installs(Role::Operator)
            .await
            .create_api_key(annex_proto::pb::CreateApiKeyRequest {
                tenant_id: TENANT.into(),
                name: "reader".into(),
                permissions: vec!["extension:read".into()],
            })
            .await
            .expect("create key")
            .into_inner();
    let ext = format!("/api/ext/{}", w.ext.registry_id);
    check(
        &w.edge,
        vec![
            case("read with key", "GET", format!("{ext}/hello"), 200, None)
                .header("x-api-key", created.secret.clone()),
            case(
                "write with read key",
                "DELETE",
                format!("{ext}/items/1"),
                403,
                Some("forbidden"),
            )
            .header("x-api-key", created.secret.clone()),
        ],
    )
    .await;
    let last = w.worker.calls().last().cloned().expect("call");
    assert!(last.user.is_none(), "a service client has no user");
    assert!(!last.http.expect("http").headers.contains_key("x-api-key"));
}

#[tokio::test]
async fn an_unavailable_worker_is_retried_once_on_another() {
    let w = World::start().await;
    let second = ScriptedWorker::start(&w.cp.ca, "worker-2").await;
    let _hb = w.cp.keep_registered(&second.id, second.addr);
    // Wait until the edge routes to both workers.
    assert_eventually!(
        Duration::from_secs(10),
        async || {
            let r = w.call("GET", "/hello").await;
            r.status == 200 && r.json()["worker"] == "worker-2"
        },
        "the edge to route to worker-2"
    );
    w.worker
        .script
        .unavailable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..6 {
        let r = w.call("GET", "/hello").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["worker"], "worker-2");
    }
    second
        .script
        .unavailable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = w.call("GET", "/hello").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad_gateway");
}

#[tokio::test]
async fn a_control_plane_outage_keeps_traffic_flowing_until_the_audit_buffer_fills() {
    let mut w = World::start_with(EdgeOptions {
        audit_buffer: 2,
        audit_batch: 1,
        ..EdgeOptions::default()
    })
    .await;
    assert_eq!(w.call("GET", "/hello").await.status, 200);
    w.cp.stop();
    // Served from the last snapshot and the cached install while audit rows
    // still fit; then refused rather than served unaudited.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(w.call("GET", "/hello").await.status);
    }
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert_eq!(*statuses.last().expect("last"), 503, "{statuses:?}");
    let r = w.call("GET", "/hello").await;
    assert_eq!(r.json(), json!({"error": "access_policy_unavailable"}));
}
