//! The page `annex dev --watch` serves on `127.0.0.1:<ui-port>` to try the watched extension's
//! UI: a stand-in for the host application. It embeds the UI from the edge's `/ext-ui` in an
//! iframe with the edge's own bridge (`/ext-bridge/host.js`), exactly as a host page does
//! (docs/edge.md, "The iframe bridge"), and swaps the iframe whenever a new build is installed.
//!
//! The bridge's `apiproxy` calls go to this page's origin (`proxyBase: ''`), and
//! [`proxy`] forwards them to the edge's `/api/ext-proxy` with a dev JWT for tenant `dev`:
//! the part a host application's session cookie plays in production. Loopback only; this page
//! must never be the way a deployment serves UIs.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use tokio::sync::watch;

use super::super::token::{self, Claims};
use super::DEV_TENANT;
use super::release::Served;

/// Largest body forwarded to the edge; the edge applies its own, smaller limit.
const MAX_PROXY_BODY: usize = 16 * 1024 * 1024;

struct Host {
    edge: String,
    jwt_secret: Vec<u8>,
    served: watch::Receiver<Option<Served>>,
    client: reqwest::Client,
}

/// Serves the page until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    edge: String,
    jwt_secret: Vec<u8>,
    served: watch::Receiver<Option<Served>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?;
    let host = Arc::new(Host {
        edge: edge.trim_end_matches('/').to_owned(),
        jwt_secret,
        served,
        client,
    });
    let app = axum::Router::new()
        .route("/", get(page))
        .route("/__annex/current", get(current))
        .route("/api/ext-proxy/{*route}", any(proxy))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_PROXY_BODY))
        .with_state(host);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("serving the UI page: {e}"))
}

async fn page(State(host): State<Arc<Host>>) -> Response {
    let config = serde_json::json!({ "edge": host.edge, "tenant": DEV_TENANT });
    // `</` cannot appear in JSON we build from a URL and a tenant id, but escape it anyway so
    // the inline script can never be closed early.
    let config = config.to_string().replace("</", "<\\/");
    let html = PAGE
        .replace("{{edge}}", &html_attr(&host.edge))
        .replace("{{config}}", &config);
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// The release the page shows: 200 with [`Served`], or 503 before the first one.
async fn current(State(host): State<Arc<Host>>) -> Response {
    let served = host.served.borrow().clone();
    match served {
        Some(s) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(s)).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({ "building": true })),
        )
            .into_response(),
    }
}

/// Forwards a bridge call to the edge's `/api/ext-proxy` as the dev user.
async fn proxy(
    State(host): State<Arc<Host>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tail = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let token = match token::mint(&host.jwt_secret, &Claims::dev(DEV_TENANT)) {
        Ok(t) => t,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    };
    let Ok(method) = reqwest::Method::from_bytes(method.as_str().as_bytes()) else {
        return failure(StatusCode::METHOD_NOT_ALLOWED, "unsupported method");
    };
    let mut request = host
        .client
        .request(method, format!("{}{tail}", host.edge))
        .bearer_auth(token)
        .body(body);
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        request = request.header("content-type", ct);
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => return failure(StatusCode::BAD_GATEWAY, &format!("the edge: {e}")),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    match answer.bytes().await {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, content_type)],
            bytes.to_vec(),
        )
            .into_response(),
        Err(e) => failure(
            StatusCode::BAD_GATEWAY,
            &format!("reading the edge's answer: {e}"),
        ),
    }
}

fn failure(status: StatusCode, detail: &str) -> Response {
    tracing::warn!(%status, detail, "the dev UI page could not forward a bridge call");
    (
        status,
        axum::Json(serde_json::json!({ "error": "dev_proxy_failed", "detail": detail })),
    )
        .into_response()
}

fn html_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The host page. `{{edge}}` and `{{config}}` are filled in by [`page`].
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>annex dev</title>
<style>
  body { margin: 0; font-family: system-ui, sans-serif; background: #f6f8fa; }
  header { padding: 0.6rem 1rem; background: #24292f; color: #fff; font-size: 14px; }
  header span { opacity: 0.75; margin-left: 0.75rem; }
  #frame { margin: 1rem; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; }
  iframe { display: block; border: 0; width: 100%; min-height: 100px; }
  p { margin: 1rem; }
</style>
<script src="{{edge}}/ext-bridge/host.js"></script>
</head>
<body>
<header><strong id="title">annex dev</strong><span id="status">waiting for the first build</span></header>
<div id="frame"></div>
<script>
(function () {
  var config = {{config}};
  var shown = null;
  var cleanup = null;
  function status(text) { document.getElementById('status').textContent = text; }
  function show(s) {
    shown = s.contentHash;
    document.getElementById('title').textContent = s.slug + ' ' + s.version;
    var holder = document.getElementById('frame');
    if (cleanup) cleanup();
    holder.textContent = '';
    if (!s.uiEntry) {
      var p = document.createElement('p');
      p.textContent = 'This extension has no UI: add "ui": {"type": "iframe", "entry": "ui/index.html"} to manifest.json.';
      holder.appendChild(p);
    } else {
      var iframe = document.createElement('iframe');
      holder.appendChild(iframe);
      cleanup = AnnexBridge.bootstrapIframe({
        iframe: iframe,
        extensionId: s.registryId,
        proxyBase: '',
        src: AnnexBridge.buildSrc(config.edge, s.registryId, s.contentHash, { tenantId: config.tenant }),
      });
    }
    status('tenant ' + config.tenant + '; reloads when annex dev installs a new build');
  }
  function poll() {
    fetch('/__annex/current', { cache: 'no-store' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { if (s && s.contentHash !== shown) show(s); })
      .catch(function () { status('annex dev is not answering'); })
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
</script>
</body>
</html>
"#;
