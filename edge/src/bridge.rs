//! The postMessage bridge (docs/design/alga-compatibility.md, "ext-proxy and the bridge") as
//! two scripts the edge serves: the host
//! side (`/ext-bridge/host.js`, embeds and answers an extension iframe) and
//! the child SDK (`/ext-bridge/sdk.js`, loaded by the extension's UI). Both
//! are compiled into the binary; their ETag is the SHA-256 of their text.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

pub(crate) const HOST_JS: &str = include_str!("bridge/host.js");
pub(crate) const SDK_JS: &str = include_str!("bridge/sdk.js");

pub(crate) async fn handle(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let text = match file.as_str() {
        "host.js" => HOST_JS,
        "sdk.js" => SDK_JS,
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
