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
    /// `/api/ext`: `content-type`, `cache-control`, `etag` and `x-ext-*`
    /// (docs/design/differences.md).
    Ext,
    /// `/api/ext-proxy`: `content-type`, `cache-control`, `x-ext-request-id`,
    /// `x-ext-warning` (docs/design/alga-compatibility.md, "ext-proxy and the bridge").
    Proxy,
}

/// Most headers a guest answer may carry; more is a malformed answer (502).
pub(crate) const MAX_GUEST_HEADERS: usize = 128;
/// Most bytes (names and values) a guest answer's headers may hold.
pub(crate) const MAX_GUEST_HEADER_BYTES: usize = 64 * 1024;

/// Why a guest answer's headers are not relayed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("{count} headers (at most {MAX_GUEST_HEADERS})")]
    TooMany { count: usize },
    #[error("{bytes} bytes of headers (at most {MAX_GUEST_HEADER_BYTES})")]
    TooLarge { bytes: usize },
}

/// Filters the guest's response headers through `policy`. Names are
/// lower-cased; invalid names or values are dropped. An answer over the
/// count or size caps is refused whole (the edge never builds an unbounded
/// header map from guest data). `cache-control` is rewritten for an
/// authenticated answer ([`private_cache_control`]).
pub(crate) fn relay(
    guest: &HashMap<String, String>,
    policy: ResponsePolicy,
) -> Result<HeaderMap, RelayError> {
    if guest.len() > MAX_GUEST_HEADERS {
        return Err(RelayError::TooMany { count: guest.len() });
    }
    let bytes: usize = guest.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_GUEST_HEADER_BYTES {
        return Err(RelayError::TooLarge { bytes });
    }
    let mut out = HeaderMap::with_capacity(guest.len());
    let mut cache_control = None;
    for (name, value) in guest {
        let name = name.trim().to_ascii_lowercase();
        let allowed = match policy {
            ResponsePolicy::Ext => {
                matches!(name.as_str(), "content-type" | "etag") || name.starts_with("x-ext-")
            }
            ResponsePolicy::Proxy => matches!(
                name.as_str(),
                "content-type" | "x-ext-request-id" | "x-ext-warning"
            ),
        };
        if name == "cache-control" {
            cache_control = Some(value.as_str());
            continue;
        }
        if !allowed {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            // Within the caps above, so never at HeaderMap's own limit.
            let _ = out.try_insert(n, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&private_cache_control(cache_control)) {
        let _ = out.try_insert(http::header::CACHE_CONTROL, v);
    }
    Ok(out)
}

/// The `cache-control` of an authenticated answer: the guest's directives
/// without those that let a shared cache (or a year of browser cache) keep
/// it (`public`, `s-maxage`, `proxy-revalidate`, `immutable`), and
/// `private` unless the guest said `private` or `no-store` itself. Every
/// answer on these routes was made for one caller, whether the credential
/// was a header or a cookie.
pub(crate) fn private_cache_control(guest: Option<&str>) -> String {
    let kept: Vec<&str> = guest
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| {
            let name = d.split('=').next().unwrap_or_default().trim();
            !d.is_empty()
                && !["public", "immutable", "s-maxage", "proxy-revalidate"]
                    .iter()
                    .any(|bad| name.eq_ignore_ascii_case(bad))
        })
        .collect();
    let private = kept
        .iter()
        .any(|d| d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store"));
    let mut out = Vec::with_capacity(kept.len() + 1);
    if !private {
        out.push("private");
    }
    out.extend(kept);
    out.join(", ")
}

/// What every `/api/ext` and `/api/ext-proxy` answer carries, whatever the
/// guest said: the answer is data for a script, never a page or a style
/// sheet rendered on the edge's origin.
pub(crate) fn harden(response: &mut HeaderMap) {
    response.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(API_CSP),
    );
}

/// The content security policy of API answers: nothing loads, nothing
/// frames it, and a document opened from it runs sandboxed on an opaque
/// origin.
pub(crate) const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

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
    fn ext_policy_keeps_the_allowlist_and_never_lets_a_shared_cache_keep_it() {
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
        )
        .expect("relayed");
        assert_eq!(
            got.get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/plain"[..])
        );
        assert_eq!(
            got.get("cache-control").map(|v| v.as_bytes()),
            Some(&b"private, max-age=60"[..])
        );
        assert!(got.contains_key("etag"));
        assert!(got.contains_key("x-ext-trace"));
        assert!(!got.contains_key("set-cookie"));
        assert!(!got.contains_key("location"));
        assert!(!got.contains_key("x-ext-bad"));
        let only_immutable =
            relay(&map(&[("cache-control", "immutable")]), ResponsePolicy::Ext).expect("relayed");
        assert_eq!(only_immutable.len(), 1);
        assert_eq!(only_immutable["cache-control"], "private");
    }

    #[test]
    fn cache_control_is_always_private_or_no_store() {
        for (guest, want) in [
            (None, "private"),
            (
                Some("public, max-age=600, s-maxage=900"),
                "private, max-age=600",
            ),
            (Some("PUBLIC,Proxy-Revalidate"), "private"),
            (Some("no-store"), "no-store"),
            (Some("private, max-age=5"), "private, max-age=5"),
            (Some("no-cache"), "private, no-cache"),
        ] {
            assert_eq!(private_cache_control(guest), want, "{guest:?}");
        }
    }

    #[test]
    fn guest_header_floods_are_refused_not_mapped() {
        let many: HashMap<String, String> = (0..33_000)
            .map(|i| (format!("x-ext-{i}"), "v".to_owned()))
            .collect();
        assert_eq!(
            relay(&many, ResponsePolicy::Ext),
            Err(RelayError::TooMany { count: 33_000 })
        );
        let big = map(&[("x-ext-big", &"v".repeat(MAX_GUEST_HEADER_BYTES))]);
        assert!(matches!(
            relay(&big, ResponsePolicy::Proxy),
            Err(RelayError::TooLarge { .. })
        ));
        let at_cap: HashMap<String, String> = (0..MAX_GUEST_HEADERS)
            .map(|i| (format!("x-ext-{i}"), "v".to_owned()))
            .collect();
        assert_eq!(
            relay(&at_cap, ResponsePolicy::Ext)
                .expect("at the cap")
                .len(),
            MAX_GUEST_HEADERS + 1
        );
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
        )
        .expect("relayed");
        let names: Vec<&str> = got.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(got.contains_key("x-ext-warning") && got.contains_key("content-type"));
        assert_eq!(got["cache-control"], "private");
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
