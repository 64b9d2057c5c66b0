//! The postMessage bridge (docs/design/alga-compatibility.md, "ext-proxy and the bridge") as
//! two scripts the edge serves: the host
//! side (`/ext-bridge/host.js`, embeds and answers an extension iframe) and
//! the child SDK (`/ext-bridge/sdk.js`, loaded by the extension's UI). Both
//! are compiled into the binary; their ETag is the SHA-256 of their text.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::state::EdgeState;
use crate::ui_hosts::UiHostPattern;

pub(crate) const HOST_JS: &str = include_str!("bridge/host.js");
pub(crate) const SDK_JS: &str = include_str!("bridge/sdk.js");

/// Where `host.js` learns the per-extension UI host pattern, if any.
const HOST_PATTERN_SLOT: &str = "/*ANNEX_UI_HOST_PATTERN*/null";

/// `host.js` as this edge serves it: with the UI host pattern filled in
/// when per-extension UI origins are configured, so `buildSrc` points each
/// iframe at its extension's own host.
pub(crate) fn host_js(pattern: Option<&UiHostPattern>) -> String {
    match pattern {
        Some(p) => HOST_JS.replacen(
            HOST_PATTERN_SLOT,
            &serde_json::Value::String(p.as_text()).to_string(),
            1,
        ),
        None => HOST_JS.to_owned(),
    }
}

/// One of the bridge scripts.
#[utoipa::path(
    get,
    path = "/ext-bridge/{file}",
    operation_id = "bridge_script",
    tag = "bridge",
    params(
        ("file" = String, Path, description = "`host.js` or `sdk.js`"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer"),
    ),
    responses(
        (status = 200, description = "The script, with `ETag: \"sha256-<hex>\"`, \
            `Cache-Control: public, max-age=300`, `nosniff` and `Access-Control-Allow-Origin: *`",
            body = String, content_type = "text/javascript"),
        (status = 304, description = "`If-None-Match` names the script's ETag"),
        (status = 404, description = "No such script (empty body)"),
        (status = 500, description = "`{\"error\":\"internal_error\"}`: a bug in the edge (logged)",
            body = serde_json::Value, content_type = "application/json"),
    ),
)]
pub(crate) async fn handle(
    State(state): State<Arc<EdgeState>>,
    uri: http::Uri,
    headers: HeaderMap,
) -> Response {
    // Any other name (one that is not UTF-8 included) is simply not a script.
    let file = crate::gateway::path_segment(&uri, "/ext-bridge/", 0);
    let text: Cow<'static, str> = match file.as_str() {
        "host.js" => Cow::Owned(host_js(state.ui_policy.hosts.as_ref())),
        "sdk.js" => Cow::Borrowed(SDK_JS),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    use sha2::Digest as _;
    let etag = format!(
        "\"sha256-{}\"",
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    );
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Not immutable: the URL does not change when the script does.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if matches {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Any origin may load the scripts (the host page and extension UIs differ).
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    (StatusCode::OK, h, text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_script_carries_the_ui_host_pattern_when_there_is_one() {
        assert!(HOST_JS.contains(HOST_PATTERN_SLOT));
        assert_eq!(host_js(None), HOST_JS);
        let p = UiHostPattern::parse("{extension}.ext.example.com").expect("pattern");
        let js = host_js(Some(&p));
        assert!(js.contains("var UI_HOST_PATTERN = \"{extension}.ext.example.com\";"));
    }
}
