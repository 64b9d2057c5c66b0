//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`,
//! never in a default build): the edge's path and query decoding, its header
//! allowlists in both directions, session-token verification and the mapping
//! of a worker's answer to the client's response. Each function runs the real
//! code on the input and panics when a property the rest of the edge relies
//! on does not hold; a panic is a finding. Nothing here does I/O or keeps
//! state, and no service code calls it.

use std::collections::HashMap;

use annex_proto::pb;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::{JwtVerifier, principal_from_claims};
use crate::endpoints::{self, Endpoint};
use crate::headers::{self, ResponsePolicy};
use crate::jwt::JwtKey;
use crate::{ext_proxy, ext_ui, gateway};

/// The HS256 secret the token targets sign and verify with.
pub const HS256_SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-fuzzing";
/// The audience the token targets require.
pub const AUDIENCE: &str = "annex";

/// Response headers the client may ever see from a guest, by policy.
fn relayable(name: &str, policy: ResponsePolicy) -> bool {
    match policy {
        ResponsePolicy::Ext => {
            matches!(name, "content-type" | "cache-control" | "etag") || name.starts_with("x-ext-")
        }
        ResponsePolicy::Proxy => matches!(
            name,
            "content-type" | "cache-control" | "x-ext-request-id" | "x-ext-warning"
        ),
    }
}

/// One request target (`/path?query`) through every decoder the routes use:
/// percent decoding, Alga's request path, endpoint matching, the UI path
/// rules, the query map and the ext-proxy method override.
pub fn path_and_query(target: &str) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some(decoded) = endpoints::percent_decode(path) {
        check_request_path(path, &decoded);
        check_ui_path(&decoded);
        let declared = [
            Endpoint {
                method: "GET".into(),
                path: "/items/:id".into(),
            },
            Endpoint {
                method: "POST".into(),
                path: "/".into(),
            },
        ];
        for method in ["GET", "HEAD", "POST", "DELETE"] {
            if let Some(e) = endpoints::find(&declared, method, &decoded) {
                let want = decoded.split('/').filter(|s| !s.is_empty()).count();
                let have = e.path.split('/').filter(|s| !s.is_empty()).count();
                assert_eq!(want, have, "{method} {decoded:?} matched {e:?}");
            }
        }
    }
    if let Ok(uri) = http::Uri::try_from(format!("/x?{query}")) {
        let map = gateway::query_map(&uri);
        for method in ["GET", "POST", "PUT"] {
            check_override(method, map.clone(), Some(query.as_bytes().to_vec()));
        }
    }
}

fn check_request_path(raw: &str, decoded: &str) {
    let p = match endpoints::request_path(raw) {
        Ok(p) => p,
        // Refused with 400 before anything runs: never a control
        // character in what reaches a guest or the audit trail.
        Err(endpoints::PathError::ControlCharacter) => {
            assert!(decoded.chars().any(char::is_control), "{raw:?} refused");
            return;
        }
        Err(endpoints::PathError::Malformed) => {
            panic!("{raw:?} decodes but has no request path")
        }
    };
    assert!(!p.chars().any(char::is_control), "{p:?}");
    assert!(p.starts_with('/'), "{p:?}");
    assert!(!p.contains("//"), "{p:?}");
    assert!(p == "/" || !p.ends_with('/'), "{p:?}");
    let want: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    assert_eq!(p, format!("/{}", want.join("/")));
}

fn check_ui_path(decoded: &str) {
    let Some(clean) = ext_ui::sanitize(decoded) else {
        return;
    };
    assert!(!clean.starts_with('/'), "{clean:?}");
    assert!(
        !clean.chars().any(|c| c.is_control() || c == '\\'),
        "{clean:?}"
    );
    for segment in clean.split('/').filter(|_| !clean.is_empty()) {
        assert!(
            !segment.is_empty() && !segment.starts_with('.'),
            "{clean:?} has segment {segment:?}"
        );
    }
}

fn check_override(method: &str, query: HashMap<String, String>, body: Option<Vec<u8>>) {
    let o = ext_proxy::apply_override(method, query, body);
    assert!(!o.query.contains_key("__method"), "{:?}", o.query);
    if method != "POST" {
        assert_eq!(o.method, method);
    }
    assert!(
        matches!(
            o.method.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
        ),
        "{}",
        o.method
    );
    if o.method == "GET" {
        assert!(o.body.is_none());
    }
}

/// The guest's response headers through both response policies, and the
/// same pairs as a client's request headers through both request
/// allowlists. Credentials never pass; only listed names come out.
pub fn header_mapping(pairs: &[(String, String)]) {
    let guest: HashMap<String, String> = pairs.iter().cloned().collect();
    for policy in [ResponsePolicy::Ext, ResponsePolicy::Proxy] {
        match headers::relay(&guest, policy) {
            Ok(out) => check_relayed(&out, policy, guest.len()),
            Err(_) => check_over_caps(&guest),
        }
    }
    let mut request = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            request.append(n, v);
        }
    }
    for allow in [headers::EXT_REQUEST, headers::PROXY_REQUEST] {
        let out = headers::forward(&request, allow);
        for name in out.keys() {
            assert!(allow.contains(&name.as_str()), "{name} forwarded");
        }
    }
    let id = gateway::request_id(&request);
    assert!(
        !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()),
        "{id:?}"
    );
    let tp = gateway::traceparent(&request);
    assert!(tp.is_empty() || tp.len() == 55, "{tp:?}");
}

/// Only listed names come out, at most one more than went in (the edge
/// always sets `cache-control`), and never a directive that lets a shared
/// cache keep an authenticated answer.
fn check_relayed(out: &HeaderMap, policy: ResponsePolicy, input: usize) {
    assert!(
        out.len() <= input + 1,
        "{} headers out of {input}",
        out.len()
    );
    for (name, value) in out {
        assert!(relayable(name.as_str(), policy), "{name} relayed");
        if name == "cache-control" {
            let v = value.to_str().unwrap_or_default().to_ascii_lowercase();
            assert!(
                !v.split(',')
                    .any(|d| matches!(d.trim(), "immutable" | "public")),
                "{v}"
            );
        }
    }
}

/// A guest's headers the edge refused whole must be over a cap.
fn check_over_caps(guest: &HashMap<String, String>) {
    let bytes: usize = guest.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(
        guest.len() > headers::MAX_GUEST_HEADERS || bytes > headers::MAX_GUEST_HEADER_BYTES,
        "{} headers, {bytes} bytes refused",
        guest.len()
    );
}

/// The verifier the token targets use: one HS256 secret and one Ed25519 key.
fn verifier() -> Option<JwtVerifier> {
    let ed = crate::jwt::SigningKey::ed25519(&[9u8; 32]).ok()?;
    Some(JwtVerifier {
        keys: vec![JwtKey::hs256(HS256_SECRET).ok()?, ed.verifying()],
        audience: AUDIENCE.into(),
        issuers: vec![],
        leeway_secs: 30,
        jwks: None,
    })
}

/// The current time in Unix seconds (token expiry is checked against it).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A session token as it arrives: verification and the principal it maps
/// to must answer, never panic.
pub fn session_token(token: &str) {
    if let Some(Ok(claims)) = verifier().map(|v| v.verify(token)) {
        let _ = principal_from_claims(claims);
    }
}

/// Claims signed with the edge's own signer must verify to the same claims
/// when `exp` and `aud` are acceptable, and never when the signature is
/// touched.
pub fn session_roundtrip(claims: &serde_json::Value) {
    let (Some(v), Ok(signer)) = (verifier(), crate::jwt::SigningKey::hs256(HS256_SECRET)) else {
        return;
    };
    let Ok(token) = signer.sign(claims) else {
        return;
    };
    let verified = v.verify(&token);
    let now = now();
    let acceptable = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .is_some_and(|e| e >= now)
        && claims.get("nbf").is_none()
        && claims.get("aud").and_then(serde_json::Value::as_str) == Some(AUDIENCE);
    if acceptable && let Ok(c) = &verified {
        let sub = claims.get("sub").and_then(serde_json::Value::as_str);
        if let Some(sub) = sub {
            assert_eq!(c.sub, sub);
        }
    }
    if verified.is_ok() {
        let (body, sig) = token.rsplit_once('.').unwrap_or((token.as_str(), ""));
        let flipped: String = sig
            .chars()
            .rev()
            .map(|c| if c == 'A' { 'B' } else { 'A' })
            .collect();
        let forged = format!("{body}.{flipped}");
        assert!(
            v.verify(&forged).is_err(),
            "a touched signature verified: {forged}"
        );
    }
}

/// A worker's `Ok` answer mapped to the client's response on both routes:
/// the status is 200–599 or the call is a 502, headers over the caps are a
/// 502, 204 and 304 carry no body, and only allowlisted headers reach the
/// client.
pub fn guest_response(status: u32, pairs: &[(String, String)], body: Option<Vec<u8>>) {
    let headers: HashMap<String, String> = pairs.iter().cloned().collect();
    for policy in [ResponsePolicy::Ext, ResponsePolicy::Proxy] {
        let Some(code) = gateway::guest_status(status, policy) else {
            assert!(
                !((200..=599).contains(&status)
                    || (status == 0 && policy == ResponsePolicy::Proxy)),
                "status {status} refused"
            );
            continue;
        };
        assert!((200..=599).contains(&code.as_u16()), "{code}");
        let outcome = pb::ExecuteResponse {
            status,
            headers: headers.clone(),
            body: body.clone(),
            outcome: pb::Outcome::Ok as i32,
            ..Default::default()
        };
        let Ok(resp) = gateway::guest_response(code, outcome, policy) else {
            check_over_caps(&headers);
            continue;
        };
        assert_eq!(resp.status(), code);
        if matches!(code.as_u16(), 204 | 304) {
            use axum::body::HttpBody as _;
            assert_eq!(resp.body().size_hint().exact(), Some(0));
        }
        check_relayed(resp.headers(), policy, headers.len());
    }
}
