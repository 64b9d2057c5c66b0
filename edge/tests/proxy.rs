//! `/api/ext-proxy` (docs/design/alga-compatibility.md, "ext-proxy and the bridge"): the method override, its authorisation by the
//! effective method, the narrower header allowlists and CORS allowlist.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn the_method_override_decides_method_and_authorisation() {
    let w = World::start().await;
    let base = format!("/api/ext-proxy/{}", w.ext.registry_id);
    let writer = bearer(&token(json!({})));
    let reader = bearer(&token(json!({"permissions": ["extension:read"]})));

    // __method in the query wins and is removed; the body field is removed too.
    let r = w
        .edge
        .send(
            "POST",
            &format!("{base}/items/7?__method=delete&keep=1"),
            &[
                ("authorization", &writer),
                ("content-type", "application/json"),
            ],
            br#"{"__method":"PUT","x":1}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["method"], "DELETE");
    assert_eq!(body["trigger"], "proxy");
    assert_eq!(body["query"], json!({"keep": "1"}));
    assert_eq!(body["body"], r#"{"x":1}"#);
    assert!(
        body["headers"]["x-idempotency-key"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    assert_eq!(
        body["idempotency_key"], "",
        "ext-proxy sends no transport key"
    );

    // The body field alone; an emptied body is dropped.
    let r = w
        .edge
        .send(
            "POST",
            &format!("{base}/items/7"),
            &[("authorization", &writer)],
            br#"{"__method":"put"}"#,
        )
        .await;
    assert_eq!(
        (r.json()["method"].as_str(), r.json()["body"].is_null()),
        (Some("PUT"), true)
    );

    // An effective GET drops the body and needs only read.
    let r = w
        .edge
        .send(
            "POST",
            &format!("{base}/items/7?__method=GET"),
            &[("authorization", &reader)],
            br#"{"a":1}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["method"].as_str(), r.json()["body"].is_null()),
        (Some("GET"), true)
    );

    // An override to DELETE needs write.
    let r = w
        .edge
        .send(
            "POST",
            &format!("{base}/items/7?__method=DELETE"),
            &[("authorization", &reader)],
            b"",
        )
        .await;
    assert_eq!((r.status, r.json()), (403, json!({"error": "forbidden"})));

    // A plain POST to a GET-only endpoint is not declared.
    let r = w
        .edge
        .send(
            "POST",
            &format!("{base}/hello"),
            &[("authorization", &writer)],
            b"",
        )
        .await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "endpoint_not_found"}))
    );
}

#[tokio::test]
async fn proxy_relays_only_its_response_headers_and_allowed_origins() {
    let w = World::start().await;
    let auth = bearer(&token(json!({})));
    let r = w
        .edge
        .send(
            "GET",
            &format!("/api/ext-proxy/{}/headers", w.ext.registry_id),
            &[
                ("authorization", &auth),
                ("origin", ORIGIN),
                ("x-alga-extension", "forged"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-ext-request-id"), Some("guest-1"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(
        r.header("x-ext-foo"),
        None,
        "not on the ext-proxy allowlist"
    );
    assert_eq!(r.header("etag"), None);
    assert_eq!(r.header("set-cookie"), None);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    let calls = w.worker.calls();
    let headers = &calls
        .last()
        .expect("call")
        .http
        .as_ref()
        .expect("http")
        .headers;
    assert_eq!(
        headers.get("x-alga-extension"),
        Some(&w.ext.registry_id),
        "overwritten, not forwarded"
    );

    let evil = w
        .edge
        .send(
            "GET",
            &format!("/api/ext-proxy/{}/hello", w.ext.registry_id),
            &[("authorization", &auth), ("origin", "https://evil.example")],
            b"",
        )
        .await;
    assert_eq!(evil.status, 200);
    assert_eq!(evil.header("access-control-allow-origin"), None);
    let failed = w
        .edge
        .send(
            "GET",
            &format!("/api/ext-proxy/{}/trap", w.ext.registry_id),
            &[("authorization", &auth)],
            b"",
        )
        .await;
    assert_eq!(failed.status, 502);
    assert_eq!(failed.json()["error"], "bad_gateway");
}

#[tokio::test]
async fn the_proxy_passes_the_sessions_additional_user_fields_and_api_ext_does_not() {
    let w = World::start().await;
    let session = bearer(&token(json!({
        "contactId": 42, "username": "ann", "locale": "de-CH", "timezone": "Europe/Zurich",
    })));
    let r = w
        .edge
        .send(
            "GET",
            &format!("/api/ext-proxy/{}/hello", w.ext.registry_id),
            &[("authorization", &session)],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["user"]["additional_fields"],
        json!({
            "contact_id": "42", "contactId": "42", "username": "ann",
            "locale": "de-CH", "timezone": "Europe/Zurich",
        })
    );

    // Alga's gateway sends none on /api/ext.
    let r = w
        .edge
        .send(
            "GET",
            &format!("/api/ext/{}/hello", w.ext.registry_id),
            &[("authorization", &session)],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["user"]["additional_fields"], json!({}));

    // Absent or blank claims add nothing; a claim that is neither a string
    // nor a number is ignored rather than refusing the session.
    let plain = bearer(&token(json!({"username": " ", "locale": {"x": 1}})));
    // Both spellings of the contact id: the snake-case one wins.
    let both = bearer(&token(json!({"contact_id": "c-1", "contactId": "c-2"})));
    let r = w
        .edge
        .send(
            "GET",
            &format!("/api/ext-proxy/{}/hello", w.ext.registry_id),
            &[("authorization", &both)],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["user"]["additional_fields"],
        json!({"contact_id": "c-1", "contactId": "c-1"})
    );
    let r = w
        .edge
        .send(
            "GET",
            &format!("/api/ext-proxy/{}/hello", w.ext.registry_id),
            &[("authorization", &plain)],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["user"]["additional_fields"], json!({}));

    // Control characters are refused like any identity claim.
    let bad = bearer(&token(json!({"username": "a\u{0}b"})));
    let r = w
        .edge
        .send(
            "GET",
            &format!("/api/ext-proxy/{}/hello", w.ext.registry_id),
            &[("authorization", &bad)],
            b"",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
}
