//! CORS for the gateway routes. Origins come from configuration; a matching
//! `Origin` is echoed with credentials allowed, anything else gets no CORS
//! headers at all. Never a blind echo (Alga's `/api/ext` echoes any origin
//! with credentials; Annex uses the allowlist of its ext-proxy for both,
//! docs/design/differences.md).

use http::{HeaderMap, HeaderValue, Method, StatusCode};

#[derive(Debug, Clone, Default)]
pub(crate) struct Cors {
    /// Exact origins (`https://app.example.com`); `*` is refused at start-up.
    pub allowed_origins: Vec<String>,
}

const ALLOW_METHODS: &str = "GET,POST,PUT,PATCH,DELETE,OPTIONS";
const ALLOW_HEADERS: &str = "content-type,x-request-id,x-idempotency-key";

impl Cors {
    /// The request's `Origin` if it is allowed.
    pub(crate) fn allowed<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(http::header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(text))
            .then_some(origin)
    }

    /// Adds the echo headers to a response when the origin is allowed.
    pub(crate) fn decorate(&self, request: &HeaderMap, response: &mut HeaderMap) {
        response.append(http::header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allowed(request) {
            response.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            response.insert(
                http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            response.insert(
                http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("x-request-id,retry-after,x-idempotent-replay"),
            );
        }
    }

    /// The 204 answer to a preflight (the pipeline's first step), with no
    /// authentication.
    pub(crate) fn preflight(&self, request: &HeaderMap) -> (StatusCode, HeaderMap) {
        let mut h = HeaderMap::new();
        if let Some(origin) = self.allowed(request) {
            h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.insert(
                http::header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            h.insert(
                http::header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                http::header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("180"),
            );
        }
        h.insert(
            http::header::VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Headers"),
        );
        (StatusCode::NO_CONTENT, h)
    }

    pub(crate) fn is_preflight(method: &Method) -> bool {
        method == Method::OPTIONS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ORIGIN,
            HeaderValue::from_str(origin).expect("origin"),
        );
        h
    }

    #[test]
    fn only_configured_origins_are_echoed() {
        let cors = Cors {
            allowed_origins: vec!["https://app.example.com".into()],
        };
        let (status, h) = cors.preflight(&req("https://app.example.com"));
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            h[http::header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(h[http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[http::header::ACCESS_CONTROL_MAX_AGE], "180");
        let (_, h) = cors.preflight(&req("https://evil.example"));
        assert!(!h.contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!h.contains_key(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let mut resp = HeaderMap::new();
        cors.decorate(&req("https://evil.example"), &mut resp);
        assert!(!resp.contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
