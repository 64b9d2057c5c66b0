//! `/ext-ui/{extensionId}/{contentHash}/{*path}` (docs/design/alga-compatibility.md, "UI hosting"): an extension's iframe
//! UI, from the bundle with that content hash, only for a tenant with an
//! active install of exactly that bundle (strict validation, always on).
//! Paths are sanitised before they touch the disk; unknown paths fall back
//! to `index.html` (single-page apps); every file carries a strong ETag,
//! immutable caching and `nosniff`, and HTML the content security policy.

use std::sync::Arc;
use std::time::Instant;

use annex_bundle::ContentHash;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

use crate::clients::{Client, ClientKey};
use crate::endpoints::percent_decode;
use crate::identifiers;
use crate::installs::ResolveError;
use crate::state::EdgeState;
use crate::ui_store::{UiBundle, UiStoreError};

/// Alga's default policy (docs/design/alga-compatibility.md, "UI hosting");
/// `frame-ancestors` only when configured.
pub(crate) const DEFAULT_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// File extensions that may be served (case-insensitive).
const EXTENSIONS: &[&str] = &[
    "html", "js", "css", "json", "map", "svg", "png", "jpg", "jpeg", "webp", "woff", "woff2",
];

#[derive(Debug, Clone)]
pub struct UiPolicy {
    /// The full `Content-Security-Policy` for HTML.
    pub csp: String,
    /// Largest file served; larger is 413.
    pub max_file_bytes: Option<u64>,
    /// Per-extension UI hosts ([`crate::ui_hosts`]); `None`: every UI on
    /// the edge's own origin.
    pub hosts: Option<crate::ui_hosts::UiHostPattern>,
}

impl UiPolicy {
    pub fn new(
        csp: Option<String>,
        frame_ancestors: Option<String>,
        max_file_bytes: Option<u64>,
    ) -> UiPolicy {
        let mut csp = csp.unwrap_or_else(|| DEFAULT_CSP.to_owned());
        if let Some(fa) = frame_ancestors.filter(|f| !f.trim().is_empty()) {
            csp.push_str("; frame-ancestors ");
            csp.push_str(fa.trim());
        }
        UiPolicy {
            csp,
            max_file_bytes,
            hosts: None,
        }
    }
}

/// The query `/ext-ui` reads (for a repeated name the last value wins).
#[derive(Debug)]
pub(crate) struct UiQuery {
    tenant: Option<String>,
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

/// A UI file of the installed bundle.
#[utoipa::path(
    get,
    path = "/ext-ui/{extension_id}/{content_hash}/{path}",
    operation_id = "ext_ui",
    tag = "ui",
    params(
        ("extension_id" = String, Path, description = "The install id, the registry id or the slug"),
        ("content_hash" = String, Path,
            description = "The installed bundle's content hash: `sha256:` and 64 hex digits"),
        ("path" = String, Path, description = "The file under the bundle's `ui/`; it may hold \
            `/`; a missing file or a directory is `index.html`"),
        ("tenant" = Option<String>, Query, description = "The tenant (else `x-tenant-id`, else \
            the tenant that last loaded this extension and hash on this edge)"),
        ("x-tenant-id" = Option<String>, Header, description = "The tenant, when `tenant` is absent"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer, or `*`"),
    ),
    responses(
        (status = 200, description = "The file, with `ETag: \"sha256-<hex>\"`, \
            `Cache-Control: public, max-age=31536000, immutable`, `nosniff`, and for HTML the \
            UI's `Content-Security-Policy`", content(
            (String = "text/html"),
            (String = "text/javascript"),
            (String = "text/css"),
            (serde_json::Value = "application/json"),
            (String = "text/plain"),
            (String = "image/svg+xml"),
            (Vec<u8> = "image/png"),
            (Vec<u8> = "image/jpeg"),
            (Vec<u8> = "image/webp"),
            (Vec<u8> = "application/font-woff"),
            (Vec<u8> = "font/woff2"),
        )),
        (status = 304, description = "`If-None-Match` names the file's ETag"),
        crate::openapi::UiErrors,
    ),
)]
pub(crate) async fn handle(
    State(state): State<Arc<EdgeState>>,
    Client(client): Client,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let query = UiQuery {
        tenant: crate::gateway::query_map(&uri).remove("tenant"),
    };
    let started = Instant::now();
    let extension = crate::gateway::path_segment(&uri, "/ext-ui/", 0);
    let hash = crate::gateway::path_segment(&uri, "/ext-ui/", 1);
    let req = UiRequest {
        extension: &extension,
        hash: &hash,
        uri: &uri,
        query: &query,
        headers: &headers,
        client,
    };
    let resp = serve(&state, &req).await;
    state.metrics.observe(
        "ui",
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// One `/ext-ui` request as the route received it.
struct UiRequest<'a> {
    extension: &'a str,
    hash: &'a str,
    uri: &'a Uri,
    query: &'a UiQuery,
    headers: &'a HeaderMap,
    client: ClientKey,
}

/// The request's tenant: `?tenant=`, else `x-tenant-id` (blank ones ignored).
fn claimed_tenant(req: &UiRequest<'_>) -> Option<String> {
    req.query
        .tenant
        .clone()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| {
            req.headers
                .get("x-tenant-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .filter(|t| !t.trim().is_empty())
        })
}

async fn serve(state: &EdgeState, req: &UiRequest<'_>) -> Response {
    // Exactly `sha256:` and 64 hex digits: anything else names no bundle.
    let Some(hex) = req
        .hash
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return text(StatusCode::BAD_REQUEST, "invalid content hash");
    };
    // The tail, still encoded: everything after /ext-ui/{ext}/{hash}/.
    let raw = req.uri.path().splitn(5, '/').nth(4).unwrap_or("");
    let Some(rel) = percent_decode(raw).and_then(|p| sanitize(&p)) else {
        return text(StatusCode::BAD_REQUEST, "invalid path");
    };
    if !identifiers::is_extension(req.extension) {
        return text(StatusCode::BAD_REQUEST, "invalid extension");
    }
    let host = crate::ui_hosts::request_host(req.uri, req.headers);
    if let Some(pattern) = &state.ui_policy.hosts
        && !pattern.is_ui_host(&host)
    {
        // Per-extension origins: UI files never on the API's origin.
        return not_found();
    }
    // Alga's runner remembers the tenant that loaded (extension, hash), so the
    // page's relative subresources (`app.js`), which carry no `?tenant=`,
    // resolve too. They are validated again like any request.
    let tenant = match claimed_tenant(req) {
        Some(t) if !identifiers::is_tenant(t.trim()) => {
            return text(StatusCode::BAD_REQUEST, "invalid tenant");
        }
        Some(t) => t.trim().to_owned(),
        None => match state.ui_tenants.get(req.extension, hex) {
            Some(t) => t,
            None => return not_found(),
        },
    };
    // Strict validation: an active install of exactly this bundle. The
    // tenant is only claimed, so a miss spends the client's lookup budget.
    let resolved = state
        .installs
        .resolve_unverified(&tenant, req.extension, &state.clients, req.client)
        .await;
    match resolved {
        Ok(install) if install.content_hash == req.hash => {
            if let Some(pattern) = &state.ui_policy.hosts
                && !pattern.is_host_of(&host, &install.registry_id)
            {
                return not_found();
            }
        }
        Ok(_) | Err(ResolveError::NotFound) => return not_found(),
        Err(ResolveError::Limited(retry_after)) => {
            let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many lookups");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            return r;
        }
        Err(e) => {
            tracing::warn!(error = %e, "validating an ext-ui request failed");
            return not_found();
        }
    }
    state.ui_tenants.remember(req.extension, hex, &tenant);
    let Ok(content_hash) = ContentHash::from_hex(hex) else {
        return not_found();
    };
    let bundle = match state.ui.bundle(&content_hash).await {
        Ok(b) => b,
        Err(e) => return store_failure(e),
    };
    file_response(state, &bundle, &rel, req.headers).await
}

fn store_failure(e: UiStoreError) -> Response {
    match e {
        UiStoreError::HashMismatch { expected, actual } => {
            tracing::error!(%expected, %actual, "bundle bytes do not match their content hash");
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(serde_json::json!({"code": "archive_hash_mismatch"})),
            )
                .into_response()
        }
        UiStoreError::NotFound => not_found(),
        e => {
            tracing::error!(error = %e, "filling the UI cache failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"code": "extract_failed"})),
            )
                .into_response()
        }
    }
}

/// Serves `rel` from the bundle (a missing file or a directory: the
/// bundle's `index.html`), only as the bundle held it.
async fn file_response(
    state: &EdgeState,
    bundle: &UiBundle,
    rel: &str,
    headers: &HeaderMap,
) -> Response {
    let rel = if bundle.files.contains_key(rel) {
        rel
    } else {
        "index.html"
    };
    let Some(file) = bundle.files.get(rel) else {
        return not_found();
    };
    if state
        .ui_policy
        .max_file_bytes
        .is_some_and(|max| file.len > max)
    {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "asset too large");
    }
    let content_type = content_type(std::path::Path::new(rel));
    let html = content_type == "text/html";
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&file.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    if html && let Ok(v) = HeaderValue::from_str(&state.ui_policy.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    if if_none_match(headers, &file.etag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    let bytes = match bundle.read(rel).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "a cached UI file is not what the bundle held; dropping the bundle");
            state.ui.forget(bundle);
            return store_failure(e);
        }
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    (StatusCode::OK, h, bytes).into_response()
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == etag || t == "*")
}

/// The content type by extension: the first of `mime_guess`'s table, as
/// Alga's runner answers (no charset parameter); a name with no known type
/// is `application/octet-stream` (docs/design/maintained-crates.md).
fn content_type(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    mime_guess::from_ext(&ext)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

/// Alga's path rules (docs/design/alga-compatibility.md, "UI hosting") on a
/// decoded tail: no leading `/`, no control
/// characters, no `\`, no `.`/`..` or hidden segments, repeated slashes
/// collapsed, and a final segment with an extension only from the
/// allowlist. `None` means 400.
pub(crate) fn sanitize(path: &str) -> Option<String> {
    if path.starts_with('/') || path.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| s.starts_with('.')) {
        return None;
    }
    if let Some(last) = segments.last() {
        if last.ends_with('.') {
            return None;
        }
        if let Some((_, ext)) = last.rsplit_once('.')
            && !EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext))
        {
            return None;
        }
    }
    Some(segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_extension_has_its_content_type() {
        let want = [
            ("html", "text/html"),
            ("js", "text/javascript"),
            ("css", "text/css"),
            ("json", "application/json"),
            ("map", "text/plain"),
            ("svg", "image/svg+xml"),
            ("png", "image/png"),
            ("jpg", "image/jpeg"),
            ("jpeg", "image/jpeg"),
            ("webp", "image/webp"),
            ("woff", "application/font-woff"),
            ("woff2", "font/woff2"),
        ];
        assert_eq!(want.len(), EXTENSIONS.len());
        for (ext, ty) in want {
            assert!(EXTENSIONS.contains(&ext), "{ext}");
            let upper = format!("a/B.{}", ext.to_ascii_uppercase());
            assert_eq!(
                content_type(std::path::Path::new(&format!("a/b.{ext}"))),
                ty
            );
            assert_eq!(content_type(std::path::Path::new(&upper)), ty);
        }
        assert_eq!(
            content_type(std::path::Path::new("deep/route")),
            "application/octet-stream"
        );
    }

    #[test]
    fn sanitising_follows_the_runner() {
        let ok = [
            ("index.html", "index.html"),
            ("assets//app.JS", "assets/app.JS"),
            ("deep/route", "deep/route"),
            ("", ""),
            ("a/b/", "a/b"),
        ];
        for (input, want) in ok {
            assert_eq!(sanitize(input).as_deref(), Some(want), "{input}");
        }
        let bad = [
            "../secret.txt",
            "a/../b.js",
            "./x.js",
            "assets/.secret/x.txt",
            ".env",
            "/etc/passwd",
            "a\\b.js",
            "file.txt",
            "x.",
            "a\u{0}b",
            "a\nb",
        ];
        for input in bad {
            assert_eq!(sanitize(input), None, "{input:?}");
        }
    }

    #[test]
    fn csp_is_default_or_replaced_with_optional_frame_ancestors() {
        assert_eq!(UiPolicy::new(None, None, None).csp, DEFAULT_CSP);
        let p = UiPolicy::new(
            Some("default-src 'none'".into()),
            Some("https://host".into()),
            None,
        );
        assert_eq!(p.csp, "default-src 'none'; frame-ancestors https://host");
    }

    #[test]
    fn if_none_match_accepts_lists_and_star() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", \"sha256-x\""),
        );
        assert!(if_none_match(&h, "\"sha256-x\""));
        assert!(!if_none_match(&h, "\"sha256-y\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, "\"anything\""));
    }
}

/// The tenant that last loaded each (extension, content hash) UI: Alga's
/// process-lifetime hint map, bounded (cleared when full).
#[derive(Debug, Default)]
pub(crate) struct TenantHints {
    map: parking_lot::Mutex<std::collections::HashMap<(String, String), String>>,
}

impl TenantHints {
    const MAX_ENTRIES: usize = 10_000;

    pub(crate) fn get(&self, extension: &str, hash_hex: &str) -> Option<String> {
        self.map
            .lock()
            .get(&(extension.to_owned(), hash_hex.to_owned()))
            .cloned()
    }

    pub(crate) fn remember(&self, extension: &str, hash_hex: &str, tenant: &str) {
        let mut map = self.map.lock();
        if map.len() >= Self::MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            (extension.to_owned(), hash_hex.to_owned()),
            tenant.to_owned(),
        );
    }
}
