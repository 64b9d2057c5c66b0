//! Per-extension UI origins (`ANNEX_EDGE_UI_HOST_PATTERN`, e.g.
//! `{extension}.ext.example.com`): each extension's UI is served only on its
//! own host, named by its registry id, so one extension's script never runs
//! on the origin of another extension's UI or of the API. On such a host the
//! edge serves `/ext-ui` (that extension's only) and the bridge scripts and
//! nothing else; `/ext-ui` is not served on any other host. Without a
//! pattern every UI shares the edge's origin (development). This module
//! matches hosts; it must not resolve installs.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri, header};
use std::sync::Arc;

use crate::state::EdgeState;

/// The placeholder a pattern holds once, as a whole DNS label.
const PLACEHOLDER: &str = "{extension}";

/// A validated host pattern: the text around `{extension}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiHostPattern {
    prefix: String,
    suffix: String,
}

impl UiHostPattern {
    /// Parses `host[:port]` holding `{extension}` once as a whole label.
    pub fn parse(pattern: &str) -> Result<UiHostPattern, String> {
        let p = pattern.trim().to_ascii_lowercase();
        let Some((prefix, suffix)) = p.split_once(PLACEHOLDER) else {
            return Err(format!("{pattern:?} holds no {PLACEHOLDER}"));
        };
        if suffix.contains(PLACEHOLDER) {
            return Err(format!("{pattern:?} holds {PLACEHOLDER} more than once"));
        }
        let whole_label = (prefix.is_empty() || prefix.ends_with('.')) && suffix.starts_with('.');
        let host_chars = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        };
        if !whole_label || !host_chars(prefix) || !host_chars(suffix) || suffix.len() < 2 {
            return Err(format!(
                "{pattern:?} must be a host name with {PLACEHOLDER} as one whole label, \
                 e.g. {PLACEHOLDER}.ext.example.com"
            ));
        }
        Ok(UiHostPattern {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// The pattern as configured (lower case), for the bridge script.
    pub(crate) fn as_text(&self) -> String {
        format!("{}{PLACEHOLDER}{}", self.prefix, self.suffix)
    }

    fn has_port(&self) -> bool {
        self.suffix.contains(':')
    }

    /// The extension label of `host` when it is a UI host.
    fn label<'a>(&self, host: &'a str) -> Option<&'a str> {
        let label = host
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        (!label.is_empty() && !label.contains('.')).then_some(label)
    }

    /// Whether `host` (as the request names it) is a UI host at all.
    pub(crate) fn is_ui_host(&self, host: &str) -> bool {
        self.label(&self.comparable(host)).is_some()
    }

    /// Whether `host` is the UI host of the extension with `registry_id`.
    pub(crate) fn is_host_of(&self, host: &str, registry_id: &str) -> bool {
        self.label(&self.comparable(host))
            .is_some_and(|l| l.eq_ignore_ascii_case(registry_id))
    }

    /// Lower case, without the port unless the pattern has one.
    fn comparable(&self, host: &str) -> String {
        let host = host.trim().to_ascii_lowercase();
        if self.has_port() {
            return host;
        }
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
            _ => host,
        }
    }
}

/// The host a request names: the URI's authority (HTTP/2), else `Host`.
pub(crate) fn request_host(uri: &Uri, headers: &HeaderMap) -> String {
    uri.authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Keeps UI hosts to UI files and the bridge scripts: any other route asked
/// on an extension's host answers 404, so a UI's own script cannot reach the
/// API on its origin.
pub(crate) async fn guard(
    State(state): State<Arc<EdgeState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(pattern) = &state.ui_policy.hosts {
        let host = request_host(req.uri(), req.headers());
        let path = req.uri().path();
        let ui_route = path.starts_with("/ext-ui/") || path.starts_with("/ext-bridge/");
        if pattern.is_ui_host(&host) && !ui_route {
            return (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")]).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_hold_one_whole_label() {
        let p = UiHostPattern::parse("{extension}.ext.example.com").expect("valid");
        assert_eq!(p.as_text(), "{extension}.ext.example.com");
        let id = "0f9e6b8c-3d7a-4c11-9a57-1c2d3e4f5a6b";
        assert!(p.is_host_of(&format!("{id}.ext.example.com"), id));
        assert!(p.is_host_of(&format!("{}.EXT.example.com:443", id.to_uppercase()), id));
        assert!(!p.is_host_of("other.ext.example.com", id));
        assert!(!p.is_host_of(&format!("x.{id}.ext.example.com"), id));
        assert!(p.is_ui_host("anything.ext.example.com"));
        assert!(!p.is_ui_host("edge.example.com"));
        assert!(!p.is_ui_host("ext.example.com"));
        let ported =
            UiHostPattern::parse("ui-{extension}.localhost:8443").expect_err("not a label");
        assert!(ported.contains("whole label"));
        let ported = UiHostPattern::parse("{extension}.localhost:8443").expect("valid");
        assert!(ported.is_ui_host("abc.localhost:8443"));
        assert!(!ported.is_ui_host("abc.localhost:9000"));
        for bad in [
            "ext.example.com",
            "{extension}",
            "{extension}.{extension}.x",
            "a{extension}.x",
            "{extension}.x/y",
        ] {
            assert!(UiHostPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
