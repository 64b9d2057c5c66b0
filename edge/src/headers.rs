//! Header allowlists, in both directions. What reaches the guest and what
//! reaches the client is a short named list, never "everything minus a few":
//! the caller's `Authorization`, cookies and API key never travel further.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};

/// `/api/ext` request headers forwarded to the guest
/// (docs/design/alga-compatibility.md, "Gateway").
pub(crate) const EXT_REQUEST: &[&str] = &[
    "x-request-id",
    "accept",
    "content-type",
    "accept-encoding",
    "user-agent",
];

/// `/api/ext-proxy` request headers forwarded to the guest
/// (docs/design/alga-compatibility.md, "ext-proxy and the bridge").
pub(crate) const PROXY_REQUEST: &[&str] = &[
    "accept",
    "content-type",
    "accept-encoding",
    "user-agent",
    "x-request-id",
    "x-alga-tenant",
    "x-alga-extension",
    "x-idempotency-key",
];

/// The request headers of `allow`, names lower-case; a repeated header is
/// joined with `, `.
pub(crate) fn forward(headers: &HeaderMap, allow: &[&str]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for name in allow {
        let values: Vec<&str> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            out.insert((*name).to_owned(), values.join(", "));
        }
    }
    out
}

/// Which of the extension's response headers the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponsePolicy {
    /// `/api/ext`: `content-type`, `cache-control` (never `immutable`),
    /// `etag` and `x-ext-*` (docs/design/differences.md).
    Ext,
    /// `/api/ext-proxy`: `content-type`, `cache-control`, `x-ext-request-id`,
    /// `x-ext-warning` (docs/design/alga-compatibility.md, "ext-proxy and the bridge").
    Proxy,
}

/// Filters the guest's response headers through `policy`. Names are
/// lower-cased; invalid names or values are dropped.
pub(crate) fn relay(guest: &HashMap<String, String>, policy: ResponsePolicy) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in guest {
        let name = name.trim().to_ascii_lowercase();
        let allowed = match policy {
            ResponsePolicy::Ext => {
                matches!(name.as_str(), "content-type" | "cache-control" | "etag")
                    || name.starts_with("x-ext-")
            }
            ResponsePolicy::Proxy => matches!(
                name.as_str(),
                "content-type" | "cache-control" | "x-ext-request-id" | "x-ext-warning"
            ),
        };
        if !allowed {
            continue;
        }
        let value = if name == "cache-control" && policy == ResponsePolicy::Ext {
            let kept: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && !d.eq_ignore_ascii_case("immutable"))
                .collect();
            if kept.is_empty() {
                continue;
            }
            kept.join(", ")
        } else {
            value.clone()
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.insert(n, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ext_policy_keeps_the_allowlist_and_strips_immutable() {
        let got = relay(
            &map(&[
                ("Content-Type", "text/plain"),
                ("cache-control", "public, max-age=60, immutable"),
                ("etag", "\"x\""),
                ("X-Ext-Trace", "1"),
                ("set-cookie", "a=b"),
                ("location", "https://evil"),
                ("x-ext-bad", "line\nbreak"),
            ]),
            ResponsePolicy::Ext,
        );
        assert_eq!(
            got.get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/plain"[..])
        );
        assert_eq!(
            got.get("cache-control").map(|v| v.as_bytes()),
            Some(&b"public, max-age=60"[..])
        );
        assert!(got.contains_key("etag"));
        assert!(got.contains_key("x-ext-trace"));
        assert!(!got.contains_key("set-cookie"));
        assert!(!got.contains_key("location"));
        assert!(!got.contains_key("x-ext-bad"));
        let only_immutable = relay(&map(&[("cache-control", "immutable")]), ResponsePolicy::Ext);
        assert!(only_immutable.is_empty());
    }

    #[test]
    fn proxy_policy_is_narrower() {
        let got = relay(
            &map(&[
                ("etag", "x"),
                ("x-ext-warning", "w"),
                ("x-ext-other", "o"),
                ("content-type", "a/b"),
            ]),
            ResponsePolicy::Proxy,
        );
        let names: Vec<&str> = got.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(got.contains_key("x-ext-warning") && got.contains_key("content-type"));
    }

    #[test]
    fn forwarding_drops_credentials() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        h.insert("cookie", HeaderValue::from_static("s=1"));
        h.insert("x-api-key", HeaderValue::from_static("k"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        let got = forward(&h, EXT_REQUEST);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got.get("accept").map(String::as_str),
            Some("application/json")
        );
    }
}
