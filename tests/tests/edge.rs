//! The edge's public contract against the real binaries: control plane on
//! PostgreSQL, a Wasmtime worker running the guests, the edge, all over
//! mTLS with generated certificates and free ports.

use annex_e2e::stack::{OTHER_TENANT, TENANT};
use annex_e2e::{Stack, eventually_ms, get};
use serde_json::json;

/// Method, path, headers, body, and the status and JSON body it must get.
type Refusal<'a> = (
    &'a str,
    String,
    Vec<(&'a str, String)>,
    Vec<u8>,
    u16,
    serde_json::Value,
);

#[tokio::test]
async fn the_gateway_serves_refuses_and_audits_through_the_real_binaries() {
    let s = Stack::start().await;
    let hello = format!("/api/ext/{}", s.hello.registry_id);
    let auth = s.bearer(&json!({}));
    let edge = s.edge.http;

    // A successful call with the extension's own headers relayed.
    let r = annex_e2e::send(
        edge,
        "POST",
        &format!("/api/ext/{}/echo", s.hello.slug),
        &[
            ("authorization", &auth),
            ("content-type", "text/plain"),
            ("x-request-id", "e2e-1"),
        ],
        b"through the edge",
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "through the edge"),
        "{}",
        s.logs()
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-request-id"), Some("e2e-1"));
    let r = get(edge, &format!("{hello}/hello"), &[("authorization", &auth)]).await;
    assert_eq!(
        r.json(),
        json!({"message": "hello", "tenantId": TENANT, "path": "/hello"})
    );

    // Every refusal of the gateway pipeline with its status and exact body
    // (docs/design/alga-compatibility.md, "Gateway").
    let cases: Vec<Refusal> = vec![
        (
            "GET",
            format!("{hello}/hello"),
            vec![],
            vec![],
            401,
            json!({"error": "Unauthorized"}),
        ),
        (
            "GET",
            format!("{hello}/hello"),
            vec![("authorization", s.bearer(&json!({"tenant": ""})))],
            vec![],
            401,
            json!({"error": "invalid_session"}),
        ),
        (
            "GET",
            format!("{hello}/hello"),
            vec![("authorization", s.bearer(&json!({"sub": null})))],
            vec![],
            401,
            json!({"error": "unauthenticated"}),
        ),
        (
            "GET",
            format!("{hello}/hello"),
            vec![
                ("authorization", auth.clone()),
                ("x-alga-tenant", OTHER_TENANT.into()),
            ],
            vec![],
            403,
            json!({"error": "tenant_mismatch"}),
        ),
        (
            "GET",
            "/api/ext/annex%20e2e.nothing/hello".into(),
            vec![("authorization", auth.clone())],
            vec![],
            404,
            json!({"error": "extension_not_available"}),
        ),
        (
            "GET",
            format!("{hello}/undeclared"),
            vec![("authorization", auth.clone())],
            vec![],
            404,
            json!({"error": "endpoint_not_found"}),
        ),
        (
            "PUT",
            format!("{hello}/hello"),
            vec![("authorization", auth.clone())],
            vec![],
            404,
            json!({"error": "endpoint_not_found"}),
        ),
        (
            "GET",
            format!("{hello}/hello"),
            vec![("authorization", s.bearer(&json!({"permissions": []})))],
            vec![],
            403,
            json!({"error": "forbidden"}),
        ),
        (
            "POST",
            format!("{hello}/echo"),
            vec![(
                "authorization",
                s.bearer(&json!({"permissions": ["extension:read"]})),
            )],
            vec![],
            403,
            json!({"error": "forbidden"}),
        ),
        (
            "GET",
            format!("{hello}/hello"),
            vec![(
                "authorization",
                s.bearer(&json!({"user_type": "client", "client_id": "c1"})),
            )],
            vec![],
            403,
            json!({"error": "forbidden"}),
        ),
        (
            "POST",
            format!("{hello}/echo"),
            vec![("authorization", auth.clone())],
            vec![b'x'; 65_537],
            413,
            json!({"error": "payload_too_large"}),
        ),
    ];
    for (method, path, headers, body, status, want) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = annex_e2e::send(edge, method, &path, &h, &body).await;
        assert_eq!(
            (r.status, r.json()),
            (status, want.clone()),
            "{method} {path}"
        );
        assert!(r.header("x-request-id").is_some());
    }

    // A guest that runs past its time: 504; one that panics: 502 with the request id.
    let spin = format!("/api/ext/{}/loop", s.misbehave.registry_id);
    let r = get(edge, &spin, &[("authorization", &auth)]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "gateway_timeout");
    let r = get(
        edge,
        &format!("/api/ext/{}/panic", s.misbehave.registry_id),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"error": "bad_gateway", "requestId": r.header("x-request-id").unwrap_or_default()})
    );

    // The ext-proxy method override: POST ?__method=DELETE is a DELETE, and needs write.
    let proxy = format!(
        "/api/ext-proxy/{}/echo?__method=DELETE",
        s.hello.registry_id
    );
    let reader = s.bearer(&json!({"permissions": ["extension:read"]}));
    let r = annex_e2e::send(edge, "POST", &proxy, &[("authorization", &reader)], b"").await;
    assert_eq!((r.status, r.json()), (403, json!({"error": "forbidden"})));
    let r = annex_e2e::send(edge, "POST", &proxy, &[("authorization", &auth)], b"").await;
    // The hello guest answers 404 to anything but GET and POST /echo: the
    // guest saw a DELETE.
    assert_eq!((r.status, r.json()), (404, json!({"error": "not_found"})));

    // 429 with Retry-After from an edge with a small bucket.
    let tight = s
        .spawn_edge(
            "edge-tight",
            &[
                ("ANNEX_EDGE_RATE_CAPACITY".into(), "2".into()),
                ("ANNEX_EDGE_RATE_REFILL_PER_SEC".into(), "0.01".into()),
            ],
        )
        .await;
    let hello_path = format!("{hello}/hello");
    let headers = [("authorization", auth.as_str())];
    let statuses: Vec<u16> =
        futures::future::join_all((0..3).map(|_| get(tight.http, &hello_path, &headers)))
            .await
            .iter()
            .map(|r| r.status)
            .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
    let r = get(
        tight.http,
        &format!("{hello}/hello"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (429, json!({"error": "rate_limited"}))
    );
    assert!(
        r.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1)
    );

    // Audit rows for allowed and denied calls, written by the control plane to Postgres.
    let audited = eventually_ms(10_000, || async {
        let rows = s.audit_rows(&s.hello.registry_id).await;
        rows.iter()
            .any(|r| r.status == "ok" && r.request_id.as_deref() == Some("e2e-1"))
            && rows
                .iter()
                .any(|r| r.status == "policy_denied" && r.metrics["http_status"] == 403)
            && rows
                .iter()
                .any(|r| r.status == "policy_denied" && r.metrics["http_status"] == 429)
    })
    .await;
    assert!(
        audited,
        "audit rows: {:?}",
        s.audit_rows(&s.hello.registry_id).await
    );
    let spins = s.audit_rows(&s.misbehave.registry_id).await;
    assert!(spins.iter().any(|r| r.status == "timeout"), "{spins:?}");
    assert!(spins.iter().any(|r| r.status == "error"), "{spins:?}");

    // A disabled install stops answering within a second.
    pb_disable(&s).await;
    let stopped = eventually_ms(1000, || async {
        let r = get(edge, &format!("{hello}/hello"), &[("authorization", &auth)]).await;
        r.status == 404 && r.json() == json!({"error": "extension_not_available"})
    })
    .await;
    assert!(stopped, "still served a second after Disable");
}

async fn pb_disable(s: &Stack) {
    use annex_proto::pb;
    pb::installs_client::InstallsClient::new(s.channel(annex_ops::Role::Operator).await)
        .disable(pb::InstallRef {
            tenant_id: TENANT.into(),
            extension: s.hello.install_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("disable: {e}"));
}

#[tokio::test]
async fn ext_ui_serves_the_installed_bundle_and_refuses_the_rest() {
    let s = Stack::start().await;
    let base = format!(
        "/ext-ui/{}/{}",
        s.hello.registry_id,
        s.hello.content_hash.replace(':', "%3A")
    );
    let edge = s.edge.http;
    let index = get(edge, &format!("{base}/index.html?tenant={TENANT}"), &[]).await;
    assert_eq!(index.status, 200, "{}", s.logs());
    assert_eq!(index.text(), annex_e2e::stack::UI_INDEX);
    assert_eq!(index.header("content-type"), Some("text/html"));
    assert_eq!(
        index.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));
    assert!(
        index
            .header("content-security-policy")
            .is_some_and(|c| c.contains("script-src 'self'"))
    );
    let etag = index.header("etag").unwrap_or_default().to_owned();
    assert!(etag.starts_with("\"sha256-") && etag.len() == 73, "{etag}");

    let r = get(
        edge,
        &format!("{base}/index.html?tenant={TENANT}"),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = get(
        edge,
        &format!("{base}/some/client/route?tenant={TENANT}"),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, annex_e2e::stack::UI_INDEX),
        "SPA fallback"
    );
    let r = get(edge, &format!("{base}/app.js?tenant={TENANT}"), &[]).await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/javascript"))
    );
    assert_eq!(r.header("content-security-policy"), None);
    for bad in [
        "../../etc/passwd",
        "..%2f..%2fsecret.js",
        ".hidden/x.js",
        "notes.txt",
    ] {
        let r = get(edge, &format!("{base}/{bad}?tenant={TENANT}"), &[]).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, "invalid path"),
            "{bad}"
        );
    }
    assert_eq!(
        get(
            edge,
            &format!("{base}/index.html?tenant={OTHER_TENANT}"),
            &[]
        )
        .await
        .status,
        404
    );
    // Without `?tenant=`, Alga's runner falls back to the tenant that last
    // loaded this (extension, hash): subresources such as `app.js` resolve.
    assert_eq!(
        get(edge, &format!("{base}/index.html"), &[]).await.status,
        200
    );
    let never_loaded = format!(
        "/ext-ui/{}/{}/index.html",
        s.misbehave.registry_id, s.misbehave.content_hash
    );
    assert_eq!(
        get(edge, &never_loaded, &[]).await.status,
        404,
        "no tenant and no tenant hint"
    );
    let other = format!(
        "/ext-ui/{}/{}/index.html?tenant={TENANT}",
        s.misbehave.registry_id, s.hello.content_hash
    );
    assert_eq!(
        get(edge, &other, &[]).await.status,
        404,
        "a hash must belong to the extension's install"
    );
    assert!(s.edge_ready().await);
}
