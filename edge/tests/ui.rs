//! `/ext-ui` (docs/design/alga-compatibility.md, "UI hosting"): tenant validation against the active install's bundle,
//! path sanitising, SPA fallback, strong ETags and 304, CSP and nosniff,
//! immutable caching, oversized assets; and the bridge scripts.

mod support;

use support::*;

fn ui_path(ext: &Installed, tail: &str, tenant: Option<&str>) -> String {
    let hash = ext.content_hash.replace(':', "%3A");
    match tenant {
        Some(t) => format!(
            "/ext-ui/{}/{hash}/{tail}?tenant={t}&path=/ignored",
            ext.registry_id
        ),
        None => format!("/ext-ui/{}/{hash}/{tail}", ext.registry_id),
    }
}

#[tokio::test]
async fn ui_files_are_served_with_etag_csp_and_immutable_caching() {
    let w = World::start().await;
    let index = get(
        w.edge.http,
        &ui_path(&w.ext, "index.html", Some(TENANT)),
        &[],
    )
    .await;
    assert_eq!(index.status, 200, "{}", index.text());
    assert_eq!(index.body, INDEX_HTML);
    assert_eq!(index.header("content-type"), Some("text/html"));
    assert_eq!(
        index.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));
    let csp = index.header("content-security-policy").expect("csp");
    assert!(
        csp.starts_with("default-src 'self'; script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("frame-ancestors"));
    let etag = index.header("etag").expect("etag").to_owned();
    use sha2::Digest as _;
    assert_eq!(
        etag,
        format!(
            "\"sha256-{}\"",
            hex::encode(sha2::Sha256::digest(INDEX_HTML))
        )
    );

    // 304 for a matching If-None-Match (any listed value, or *), with the CSP.
    for inm in [etag.clone(), format!("\"other\", {etag}"), "*".to_owned()] {
        let r = get(
            w.edge.http,
            &ui_path(&w.ext, "index.html", Some(TENANT)),
            &[("if-none-match", &inm)],
        )
        .await;
        assert_eq!(r.status, 304, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert!(r.header("content-security-policy").is_some());
    }

    // JavaScript: nosniff, no CSP; the tenant may come from x-tenant-id.
    let js = get(
        w.edge.http,
        &ui_path(&w.ext, "assets/app.js", None),
        &[("x-tenant-id", TENANT)],
    )
    .await;
    assert_eq!(js.status, 200);
    assert_eq!(js.body, APP_JS);
    assert_eq!(js.header("content-type"), Some("text/javascript"));
    assert_eq!(js.header("content-security-policy"), None);

    // SPA fallback: unknown routes, directories and missing assets get index.html.
    for tail in ["deep/client/route", "assets", "assets/missing.js"] {
        let r = get(w.edge.http, &ui_path(&w.ext, tail, Some(TENANT)), &[]).await;
        assert_eq!((r.status, r.body.as_slice()), (200, INDEX_HTML), "{tail}");
        assert!(r.header("content-security-policy").is_some(), "{tail}");
    }
}

#[tokio::test]
async fn bad_paths_hashes_and_tenants_are_refused() {
    let w = World::start().await;
    let cases: Vec<(String, u16, &str)> = vec![
        (
            ui_path(&w.ext, "../secret.txt", Some(TENANT)),
            400,
            "invalid path",
        ),
        (
            ui_path(&w.ext, "%2e%2e/%2e%2e/etc/passwd", Some(TENANT)),
            400,
            "invalid path",
        ),
        (
            ui_path(&w.ext, "assets/.secret/x.js", Some(TENANT)),
            400,
            "invalid path",
        ),
        (
            ui_path(&w.ext, "file.txt", Some(TENANT)),
            400,
            "invalid path",
        ),
        (
            ui_path(&w.ext, "a%5Cb.js", Some(TENANT)),
            400,
            "invalid path",
        ),
        (
            format!(
                "/ext-ui/{}/md5:abc/index.html?tenant={TENANT}",
                w.ext.registry_id
            ),
            400,
            "invalid content hash",
        ),
        (
            format!(
                "/ext-ui/{}/sha256:xyz/index.html?tenant={TENANT}",
                w.ext.registry_id
            ),
            400,
            "invalid content hash",
        ),
        (ui_path(&w.ext, "index.html", None), 404, ""),
        (ui_path(&w.ext, "index.html", Some(OTHER_TENANT)), 404, ""),
        (
            format!(
                "/ext-ui/{}/sha256%3A{}/index.html?tenant={TENANT}",
                w.ext.registry_id,
                "ab".repeat(32)
            ),
            404,
            "",
        ),
        (
            ui_path(&w.ext, "big.json", Some(TENANT)),
            413,
            "asset too large",
        ),
    ];
    for (path, status, body) in cases {
        let r = get(w.edge.http, &path, &[]).await;
        assert_eq!((r.status, r.text().as_str()), (status, body), "{path}");
    }
}

#[tokio::test]
async fn the_bridge_scripts_are_served() {
    let w = World::start().await;
    for (file, needle) in [
        ("host.js", "bootstrapIframe"),
        ("sdk.js", "callHandlerJson"),
    ] {
        let r = get(w.edge.http, &format!("/ext-bridge/{file}"), &[]).await;
        assert_eq!(r.status, 200, "{file}");
        assert_eq!(r.header("content-type"), Some("text/javascript"));
        assert!(r.text().contains(needle), "{file}");
        let etag = r.header("etag").expect("etag").to_owned();
        let again = get(
            w.edge.http,
            &format!("/ext-bridge/{file}"),
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(again.status, 304);
    }
    assert_eq!(
        get(w.edge.http, "/ext-bridge/other.js", &[]).await.status,
        404
    );
}

#[tokio::test]
async fn the_admin_listener_reports_liveness_readiness_and_metrics() {
    let w = World::start().await;
    assert_eq!(w.call("GET", "/hello").await.status, 200);
    assert_eq!(get(w.edge.admin, "/live", &[]).await.status, 200);
    assert_eq!(get(w.edge.admin, "/ready", &[]).await.status, 200);
    let metrics = get(w.edge.admin, "/metrics", &[]).await.text();
    assert!(
        metrics.contains("annex_edge_requests_total{route=\"ext\",class=\"2xx\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("annex_edge_request_duration_seconds"),
        "{metrics}"
    );
    assert!(!metrics.contains(TENANT));
}
