//! Cross-site request forgery checks for calls authenticated by the session
//! cookie, the one credential a browser attaches to a request another site
//! makes it send. Bearer tokens and API keys are never sent that way and
//! pass untouched. It must not authenticate (`auth` does) or answer CORS
//! (`cors` does).
//!
//! A cookie call is served only when:
//! - its `Origin`, when present, is on the route's origin allowlist (the
//!   same list CORS answers from); without `Origin`, its `Sec-Fetch-Site`,
//!   when present, is `same-origin` or `none` (a sibling subdomain is
//!   `same-site` and is refused: with per-extension UI origins every
//!   extension's UI is one);
//! - a write (any method but GET and HEAD, the ext-proxy override
//!   notwithstanding: the transport method decides) carries a body only as
//!   JSON (`application/json`, `*+json`) or as the bridge's
//!   `application/octet-stream`. Neither can be sent cross-site without a
//!   CORS preflight, which the allowlist answers; an HTML form can only send
//!   `application/x-www-form-urlencoded`, `multipart/form-data` or
//!   `text/plain`.

use http::{HeaderMap, Method, header};

use crate::auth::{Credential, Principal};
use crate::cors::Cors;
use crate::error::ApiError;

/// Refuses a cookie-authenticated request another site may have made.
pub(crate) fn check(
    principal: &Principal,
    cors: &Cors,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if principal.via != Credential::Cookie {
        return Ok(());
    }
    check_origin(cors, headers)?;
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    check_body_type(headers)
}

fn check_origin(cors: &Cors, headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(header::ORIGIN) {
        return match cors.allowed(headers) {
            Some(_) => Ok(()),
            None => {
                tracing::info!(origin = ?headers.get(header::ORIGIN), "cookie call from an origin outside the allowlist");
                Err(ApiError::ORIGIN_NOT_ALLOWED)
            }
        };
    }
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        None | Some(b"same-origin" | b"none") => Ok(()),
        Some(other) => {
            tracing::info!(sec_fetch_site = %String::from_utf8_lossy(other), "cookie call from another site");
            Err(ApiError::ORIGIN_NOT_ALLOWED)
        }
    }
}

fn check_body_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        // No type: acceptable only without a body.
        let empty = !headers.contains_key(header::TRANSFER_ENCODING)
            && headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        return if empty {
            Ok(())
        } else {
            Err(ApiError::CONTENT_TYPE_NOT_ALLOWED)
        };
    };
    let essence = ct
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json || essence == "application/octet-stream" {
        Ok(())
    } else {
        tracing::info!(content_type = %essence, "cookie write with a body type a form could send");
        Err(ApiError::CONTENT_TYPE_NOT_ALLOWED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Permissions, PrincipalKind};

    fn principal(via: Credential) -> Principal {
        Principal {
            tenant: "t".into(),
            kind: PrincipalKind::ApiKey { key_id: "k".into() },
            permissions: Permissions::default(),
            via,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cookie_calls_need_an_allowed_origin_and_a_preflighted_body_type() {
        let cors = Cors {
            allowed_origins: vec!["https://app.example.com".into()],
        };
        let cookie = principal(Credential::Cookie);
        let json = ("content-type", "application/json; charset=utf-8");
        let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
        let origin_refused = Some(ApiError::ORIGIN_NOT_ALLOWED);
        let type_refused = Some(ApiError::CONTENT_TYPE_NOT_ALLOWED);
        type Case<'a> = (
            &'a Method,
            Vec<(&'static str, &'static str)>,
            Option<ApiError>,
        );
        let cases: Vec<Case> = vec![
            (
                &post,
                vec![("origin", "https://app.example.com"), json],
                None,
            ),
            (
                &post,
                vec![("origin", "https://evil.example"), json],
                origin_refused.clone(),
            ),
            (
                &post,
                vec![("origin", "null"), json],
                origin_refused.clone(),
            ),
            (
                &get,
                vec![("sec-fetch-site", "cross-site")],
                origin_refused.clone(),
            ),
            (
                &get,
                vec![("sec-fetch-site", "same-site")],
                origin_refused.clone(),
            ),
            (&get, vec![("sec-fetch-site", "same-origin")], None),
            (&get, vec![("sec-fetch-site", "none")], None),
            (&get, vec![], None),
            (
                &post,
                vec![("content-type", "text/plain")],
                type_refused.clone(),
            ),
            (
                &post,
                vec![("content-type", "application/x-www-form-urlencoded")],
                type_refused.clone(),
            ),
            (
                &post,
                vec![("content-type", "multipart/form-data; boundary=x")],
                type_refused.clone(),
            ),
            (
                &post,
                vec![("content-type", "application/octet-stream")],
                None,
            ),
            (
                &post,
                vec![("content-type", "application/vnd.api+json")],
                None,
            ),
            (&post, vec![("content-length", "4")], type_refused.clone()),
            (&post, vec![("content-length", "0")], None),
            (&delete, vec![], None),
        ];
        for (method, h, want) in cases {
            let got = check(&cookie, &cors, method, &headers(&h)).err();
            assert_eq!(got, want, "{method} {h:?}");
        }
        // Bearer and API-key calls are not the browser's to forge.
        let evil = headers(&[
            ("origin", "https://evil.example"),
            ("content-type", "text/plain"),
        ]);
        for via in [Credential::Bearer, Credential::ApiKey] {
            assert_eq!(check(&principal(via), &cors, &post, &evil), Ok(()));
        }
    }
}
