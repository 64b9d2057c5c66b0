//! The attacks of the hardening review (issue 17) replayed against the real
//! edge, with a real control plane and a scripted worker in process: each
//! test sends what the attacker sent and checks the edge refuses it or
//! stays bounded, and that everyone else keeps being served.

mod support;

use std::time::Duration;

use serde_json::json;
use support::attack::{closed_within, metric, partial};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn ext_path(w: &World, tail: &str) -> String {
    format!("/api/ext/{}{tail}", w.ext.registry_id)
}

fn ui_path(ext: &Installed, tenant: &str) -> String {
    format!(
        "/ext-ui/{}/{}/index.html?tenant={tenant}",
        ext.registry_id,
        ext.content_hash.replace(':', "%3A")
    )
}

/// Finding 1: `a%00b` went into an audit row Postgres refuses, and the
/// shipper retried it forever. The path is refused before anything runs or
/// is written down, and traffic and audit rows keep flowing for everyone.
#[tokio::test]
async fn a_control_character_in_the_path_is_refused_before_dispatch() {
    let w = World::start().await;
    let other = install(&w.cp, "hello-other", OTHER_TENANT, false).await;
    let auth = bearer(&token(json!({})));
    for path in [
        ext_path(&w, "/a%00b"),
        ext_path(&w, "/items/%0d%0a"),
        format!("/api/ext-proxy/{}/a%00b", w.ext.registry_id),
    ] {
        let r = w
            .edge
            .send("GET", &path, &[("authorization", &auth)], b"")
            .await;
        assert_eq!(
            (r.status, r.json()),
            (400, json!({"error": "invalid_path"})),
            "{path}"
        );
    }
    assert!(
        w.worker.calls().is_empty(),
        "nothing reached a worker: {:?}",
        w.worker.calls()
    );
    // Everyone else is served and audited.
    let other_auth = bearer(&token(json!({"tenant": OTHER_TENANT})));
    for _ in 0..5 {
        assert_eq!(w.call("GET", "/hello").await.status, 200);
        let r = w
            .edge
            .send(
                "GET",
                &format!("/api/ext/{}/hello", other.registry_id),
                &[("authorization", &other_auth)],
                b"",
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        eventually(10, || async { w.audit_rows().await.len() >= 5 }).await,
        "audit rows stopped arriving"
    );
    assert!(
        w.audit_rows()
            .await
            .iter()
            .all(|r| !r.metrics.to_string().contains("\\u0000")),
        "no control character was audited"
    );
}

/// Finding 3: 33,000 `x-ext-*` headers from a guest panicked `HeaderMap`.
#[tokio::test]
async fn a_guest_flooding_headers_gets_a_502_and_the_edge_keeps_serving() {
    let w = World::start().await;
    let r = w.call("GET", "/items/many-headers").await;
    assert_eq!(r.status, 502, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(body["requestId"].as_str(), r.header("x-request-id"));
    assert_eq!(w.call("GET", "/hello").await.status, 200);
    assert_eq!(
        metric(w.edge.admin, "annex_edge_guest_answers_refused_total").await,
        Some(1.0)
    );
    let audited = eventually(5, || async {
        w.audit_rows()
            .await
            .iter()
            .any(|r| r.error.as_deref() == Some("invalid_response"))
    })
    .await;
    assert!(audited, "the refused answer is audited as invalid_response");
}

/// Finding 10: a tenant claim with a leading space answered 502.
#[tokio::test]
async fn identity_claims_are_checked_strictly_at_authentication() {
    let w = World::start().await;
    for (claims, code) in [
        (json!({"tenant": format!(" {TENANT}")}), "invalid_session"),
        (
            json!({"tenant": format!("{TENANT}\u{0}")}),
            "invalid_session",
        ),
        (json!({"tenant": "t".repeat(129)}), "invalid_session"),
        (json!({"sub": "user\u{0}1"}), "unauthenticated"),
        (json!({"email": "a@b\r\nx-injected: 1"}), "unauthenticated"),
    ] {
        let r = w
            .edge
            .send(
                "GET",
                &ext_path(&w, "/hello"),
                &[("authorization", &bearer(&token(claims.clone())))],
                b"",
            )
            .await;
        assert_eq!(
            (r.status, r.json()),
            (401, json!({"error": code})),
            "{claims}"
        );
    }
}

fn limits(f: impl FnOnce(&mut Limits)) -> EdgeOptions {
    let mut opts = EdgeOptions::default();
    f(&mut opts.limits);
    opts
}

/// Finding 4: each new `?tenant=` cost a control-plane call and a cache
/// entry, the cache was bounded by count and then wiped whole.
#[tokio::test]
async fn ui_lookups_for_made_up_tenants_are_refused_or_bounded_and_real_entries_stay() {
    const BOUND: usize = 64 * 1024;
    let w = World::start_with(limits(|l| {
        l.install_cache_max_bytes = BOUND;
        l.client_ip_header = Some("x-forwarded-for");
        l.lookups = annex_edge::LookupSettings {
            burst: 20,
            per_sec: 0.01,
        };
    }))
    .await;
    let real = get(w.edge.http, &ui_path(&w.ext, TENANT), &[]).await;
    assert_eq!((real.status, real.body.as_slice()), (200, INDEX_HTML));

    // Tenants no tenant id can be: refused before any lookup.
    let long = "t".repeat(60 * 1024);
    for i in 0..300 {
        let r = get(w.edge.http, &ui_path(&w.ext, &format!("{long}{i}")), &[]).await;
        assert_eq!((r.status, r.text().as_str()), (400, "invalid tenant"));
    }
    // Well-formed tenants from one client: a burst of lookups, then 429.
    let mut statuses = Vec::new();
    for i in 0..60 {
        let r = get(
            w.edge.http,
            &ui_path(&w.ext, &format!("made-up-{i}")),
            &[("x-forwarded-for", "203.0.113.7")],
        )
        .await;
        statuses.push(r.status);
    }
    assert!(statuses[..20].iter().all(|s| *s == 404), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    // From many clients: every lookup is made, and the cache stays bounded.
    for i in 0..1500 {
        let ip = format!("198.51.{}.{}", i / 250, i % 250);
        let r = get(
            w.edge.http,
            &ui_path(&w.ext, &format!("spread-{i}")),
            &[("x-forwarded-for", &ip)],
        )
        .await;
        assert_eq!(r.status, 404);
    }
    let bytes = metric(w.edge.admin, "annex_edge_install_cache_bytes")
        .await
        .expect("cache bytes metric");
    assert!(
        bytes > 0.0 && bytes <= (BOUND + BOUND / 8) as f64,
        "{bytes}"
    );
    assert!(
        metric(w.edge.admin, "annex_edge_lookup_refusals_total")
            .await
            .is_some_and(|n| n >= 40.0)
    );
    // The real install was never pushed out: it answers from the cache with
    // the control plane gone.
    let mut w = w;
    w.cp.stop();
    let again = get(w.edge.http, &ui_path(&w.ext, TENANT), &[]).await;
    assert_eq!((again.status, again.body.as_slice()), (200, INDEX_HTML));
}

/// Finding 4, the API-key half: every unknown key was a control-plane call
/// and a cache entry, and the cache was wiped whole when full.
#[tokio::test]
async fn api_key_floods_are_refused_or_bounded_and_a_real_key_keeps_working() {
    const BOUND: usize = 16 * 1024;
    let w = World::start_with(limits(|l| {
        l.api_key_cache_max_bytes = BOUND;
        l.client_ip_header = Some("x-forwarded-for");
        l.lookups = annex_edge::LookupSettings {
            burst: 5,
            per_sec: 0.01,
        };
    }))
    .await;
    let key =
        w.cp.installs(annex_ops::Role::Operator)
            .await
            .create_api_key(annex_proto::pb::CreateApiKeyRequest {
                tenant_id: TENANT.into(),
                name: "svc".into(),
                permissions: vec!["extension:read".into()],
            })
            .await
            .expect("key")
            .into_inner()
            .secret;
    let hello = ext_path(&w, "/hello");
    let with_key = |k: String, ip: String| {
        let path = hello.clone();
        let addr = w.edge.http;
        async move {
            send(
                addr,
                "GET",
                &path,
                &[("x-api-key", &k), ("x-forwarded-for", &ip)],
                b"",
            )
            .await
        }
    };
    assert_eq!(with_key(key.clone(), "192.0.2.1".into()).await.status, 200);
    // Not shaped like a key: 401 without a lookup, however many.
    for i in 0..200 {
        let r = with_key(format!("annex_nope_{i}"), "192.0.2.9".into()).await;
        assert_eq!(r.status, 401);
    }
    // Shaped like keys, from one client: a burst, then 429.
    let made_up = |i: usize| format!("annex_{:032x}_{}", i, "A".repeat(43));
    let mut statuses = Vec::new();
    for i in 0..15 {
        statuses.push(with_key(made_up(i), "192.0.2.9".into()).await.status);
    }
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // From many clients: bounded.
    for i in 0..600 {
        let ip = format!("198.51.{}.{}", i / 250, i % 250);
        assert_eq!(with_key(made_up(1000 + i), ip).await.status, 401);
    }
    let bytes = metric(w.edge.admin, "annex_edge_api_key_cache_bytes")
        .await
        .expect("cache bytes metric");
    assert!(
        bytes > 0.0 && bytes <= (BOUND + BOUND / 4) as f64,
        "{bytes}"
    );
    // The real key is still cached: it works with the control plane gone.
    let mut w = w;
    w.cp.stop();
    let r = send(
        w.edge.http,
        "GET",
        &hello,
        &[("x-api-key", &key), ("x-forwarded-for", "192.0.2.1")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Finding 7: a cross-origin `text/plain` POST and a form POST with
/// `?__method=GET` reached the guest on the strength of the cookie.
#[tokio::test]
async fn cookie_sessions_refuse_cross_site_requests() {
    let w = World::start().await;
    let cookie = format!("annex_session={}", token(json!({})));
    let echo = ext_path(&w, "/echo");
    let proxy_get = format!("/api/ext-proxy/{}/hello?__method=GET", w.ext.registry_id);
    let calls_before = w.worker.calls().len();
    let refused = [
        (
            echo.as_str(),
            vec![
                ("origin", "https://evil.example"),
                ("content-type", "text/plain"),
            ],
            "origin_not_allowed",
        ),
        (
            proxy_get.as_str(),
            vec![
                ("origin", "https://evil.example"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "origin_not_allowed",
        ),
        (
            echo.as_str(),
            vec![
                ("sec-fetch-site", "cross-site"),
                ("content-type", "text/plain"),
            ],
            "origin_not_allowed",
        ),
        (
            proxy_get.as_str(),
            vec![("content-type", "application/x-www-form-urlencoded")],
            "content_type_not_allowed",
        ),
        (
            echo.as_str(),
            vec![("origin", ORIGIN), ("content-type", "text/plain")],
            "content_type_not_allowed",
        ),
    ];
    for (path, headers, code) in refused {
        let mut h = vec![("cookie", cookie.as_str())];
        h.extend(headers.iter().copied());
        let r = w.edge.send("POST", path, &h, b"a=1").await;
        assert_eq!(
            (r.status, r.json()),
            (403, json!({"error": code})),
            "{path} {headers:?}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    assert_eq!(
        w.worker.calls().len(),
        calls_before,
        "nothing reached the guest"
    );
    // The host page's own JSON call, and the bridge's octet-stream one, pass.
    for ct in ["application/json", "application/octet-stream"] {
        let r = w
            .edge
            .send(
                "POST",
                &echo,
                &[
                    ("cookie", &cookie),
                    ("origin", ORIGIN),
                    ("content-type", ct),
                ],
                b"{}",
            )
            .await;
        assert_eq!(r.status, 200, "{ct}: {}", r.text());
    }
    // Bearer tokens are not the browser's to attach: unaffected.
    let r = w
        .edge
        .send(
            "POST",
            &echo,
            &[
                ("authorization", &bearer(&token(json!({})))),
                ("origin", "https://evil.example"),
                ("content-type", "text/plain"),
            ],
            b"ping",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A cross-site debug stream is refused too.
    let r = get(
        w.edge.http,
        &format!("/api/ext-debug/stream?extensionId={}", w.ext.registry_id),
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"error": "origin_not_allowed"}))
    );
}

/// Finding 8: a guest's `text/html` was served on the edge's origin with
/// the guest's `cache-control: public`.
#[tokio::test]
async fn api_answers_are_never_pages_nor_publicly_cached() {
    let w = World::start().await;
    let auth = bearer(&token(json!({})));
    let proxy_html = format!("/api/ext-proxy/{}/items/html", w.ext.registry_id);
    for path in [ext_path(&w, "/items/html"), proxy_html] {
        let r = w
            .edge
            .send("GET", &path, &[("authorization", &auth)], b"")
            .await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            r.header("content-security-policy"),
            Some("default-src 'none'; frame-ancestors 'none'; sandbox")
        );
        assert_eq!(
            r.header("cache-control"),
            Some("private, max-age=3600"),
            "{path}"
        );
    }
    let refused = w
        .edge
        .send("GET", &ext_path(&w, "/items/html"), &[], b"")
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("x-content-type-options"), Some("nosniff"));
}

/// Finding 8: every UI shared the edge's origin. With a host pattern each
/// UI is served on its own host only, and nothing else is served there.
#[tokio::test]
async fn per_extension_ui_origins_serve_each_ui_on_its_own_host_only() {
    let pattern = annex_edge::UiHostPattern::parse("{extension}.ext.test").expect("pattern");
    let w = World::start_with(limits(|l| l.ui_hosts = Some(pattern))).await;
    let own = format!("{}.ext.test", w.ext.registry_id);
    let path = ui_path(&w.ext, TENANT);
    let r = get(w.edge.http, &path, &[("host", &own)]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, INDEX_HTML));
    for host in ["localhost", "other.ext.test", "edge.test"] {
        let r = get(w.edge.http, &path, &[("host", host)]).await;
        assert_eq!(r.status, 404, "{host}");
    }
    // The API is not reachable on a UI's origin...
    let auth = bearer(&token(json!({})));
    let api = w
        .edge
        .send(
            "GET",
            &ext_path(&w, "/hello"),
            &[("authorization", &auth), ("host", &own)],
            b"",
        )
        .await;
    assert_eq!(api.status, 404);
    // ...but is on the edge's own.
    assert_eq!(w.call("GET", "/hello").await.status, 200);
    // The bridge scripts: the SDK on the UI's host, the host script with the pattern.
    let sdk = get(w.edge.http, "/ext-bridge/sdk.js", &[("host", &own)]).await;
    assert_eq!(sdk.status, 200);
    let host_js = get(w.edge.http, "/ext-bridge/host.js", &[]).await;
    assert!(host_js.text().contains("\"{extension}.ext.test\""));
}

/// Finding 9: a connection sending a partial head stayed open 45 s+.
#[tokio::test]
async fn slow_and_silent_connections_are_closed() {
    let w = World::start_with(limits(|l| {
        l.connections = annex_edge::ConnectionSettings {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(2),
            ..annex_edge::ConnectionSettings::default()
        };
    }))
    .await;
    let mut slow = partial(w.edge.http, b"GET /api/ext/x/hello HTTP/1.1\r\nhost: a\r\n").await;
    let mut silent = partial(w.edge.http, b"").await;
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).await,
        "partial head"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "silent"
    );
    // A kept-alive connection that goes quiet after a request is closed too.
    let mut kept = partial(
        w.edge.http,
        b"GET /ext-bridge/sdk.js HTTP/1.1\r\nhost: a\r\n\r\n",
    )
    .await;
    assert!(
        closed_within(&mut kept, Duration::from_secs(10)).await,
        "idle"
    );
    assert_eq!(w.call("GET", "/hello").await.status, 200);
}

/// Finding 9: there was no cap on connections.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let w = World::start_with(limits(|l| {
        l.connections = annex_edge::ConnectionSettings {
            max_connections: 4,
            ..annex_edge::ConnectionSettings::default()
        };
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(partial(w.edge.http, b"").await);
    }
    let open = eventually(5, || async {
        metric(w.edge.admin, "annex_edge_connections").await == Some(4.0)
    })
    .await;
    assert!(open, "four connections open");
    let mut extra = partial(
        w.edge.http,
        b"GET /ext-bridge/sdk.js HTTP/1.1\r\nhost: a\r\n\r\n",
    )
    .await;
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await);
    assert_eq!(
        metric(w.edge.admin, "annex_edge_connections_refused_total").await,
        Some(1.0)
    );
    drop(held);
    assert!(
        eventually(5, || async {
            metric(w.edge.admin, "annex_edge_connections").await == Some(0.0)
        })
        .await
    );
    assert_eq!(w.call("GET", "/hello").await.status, 200);
}

/// Opens a debug stream by hand and returns it with its status line.
async fn open_stream(w: &World, sub: &str) -> (tokio::net::TcpStream, String) {
    let mut conn = tokio::net::TcpStream::connect(w.edge.http)
        .await
        .expect("connect");
    let req = format!(
        "GET /api/ext-debug/stream?extensionId={} HTTP/1.1\r\nhost: localhost\r\nauthorization: {}\r\n\r\n",
        w.ext.registry_id,
        bearer(&token(
            json!({"sub": sub, "permissions": ["extension:read"]})
        ))
    );
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default().to_owned();
    (conn, status)
}

/// Finding 9: one read-only user held 300 debug streams.
#[tokio::test]
async fn debug_streams_are_capped_per_user_and_per_tenant() {
    let w = World::start_with(limits(|l| {
        l.debug_streams = annex_edge::StreamSettings {
            per_tenant: 3,
            per_user: 2,
            ..annex_edge::StreamSettings::default()
        };
    }))
    .await;
    let (first, s1) = open_stream(&w, "ann").await;
    let (_second, s2) = open_stream(&w, "ann").await;
    assert!(s1.contains(" 200") && s2.contains(" 200"), "{s1} {s2}");
    let (_, s3) = open_stream(&w, "ann").await;
    assert!(s3.contains(" 429"), "the user's third: {s3}");
    let (_bob, s4) = open_stream(&w, "bob").await;
    assert!(s4.contains(" 200"), "{s4}");
    let (_, s5) = open_stream(&w, "cid").await;
    assert!(s5.contains(" 429"), "the tenant's fourth: {s5}");
    // Closing a stream gives its place back.
    drop(first);
    let reopened = eventually(10, || async {
        open_stream(&w, "ann").await.1.contains(" 200")
    })
    .await;
    assert!(reopened);
}

/// Finding 10: the UI cache trusted whatever its directory held at start,
/// and served files as they were on disk.
#[tokio::test]
async fn forged_or_tampered_ui_files_are_never_served() {
    let root = tempfile::tempdir().expect("tempdir");
    let hash = annex_bundle::ContentHash::of(&bundle(&manifest("hello", false)));
    let forged = root.path().join(hash.hex()).join("ui");
    std::fs::create_dir_all(&forged).expect("mkdir");
    std::fs::write(forged.join("index.html"), "forged").expect("write");
    let w = World::start_with(limits(|l| l.ui_dir = Some(root.path().to_owned()))).await;
    assert_eq!(
        w.ext.content_hash,
        hash.to_string(),
        "the bundle is deterministic"
    );
    let r = get(w.edge.http, &ui_path(&w.ext, TENANT), &[]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, INDEX_HTML));
    // Change every cached copy on disk behind the edge's back.
    let mut stack = vec![root.path().to_owned()];
    let mut changed = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "index.html") {
                std::fs::write(&p, "tampered").expect("write");
                changed += 1;
            }
        }
    }
    assert!(changed >= 1);
    let r = get(w.edge.http, &ui_path(&w.ext, TENANT), &[]).await;
    assert_ne!(r.text(), "tampered");
    assert_eq!(r.status, 500);
    // The bundle is fetched again and served as it was published.
    let r = get(w.edge.http, &ui_path(&w.ext, TENANT), &[]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, INDEX_HTML));
}
