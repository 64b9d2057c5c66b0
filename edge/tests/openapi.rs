//! The OpenAPI document a running edge serves: the committed
//! `docs/openapi.json`, and every method it lists is one the router takes
//! (and the fixed-method routes refuse the others with 405).

mod support;

use support::*;

const COMMITTED: &str = include_str!("../../docs/openapi.json");

/// Where `path` (OpenAPI's spelling) lands for the installed extension.
fn concrete(w: &World, path: &str) -> String {
    path.replace("{extension_id}", &w.ext.registry_id)
        .replace("{content_hash}", &w.ext.content_hash)
        .replace("{path}", "index.html")
        .replace("{route}", "hello")
        .replace("{file}", "host.js")
}

#[tokio::test]
async fn the_served_document_is_the_committed_one_and_lists_what_the_router_takes() {
    let w = World::start().await;
    let r = w.edge.send("GET", "/openapi.json", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.text() == COMMITTED,
        "the edge serves another document than docs/openapi.json; regenerate it with \
         `ANNEX_BLESS=1 cargo test -p annex-edge --lib openapi`"
    );
    let doc = r.json();
    let auth = bearer(&token(serde_json::json!({})));
    let all = ["get", "head", "post", "put", "patch", "delete", "options"];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let methods = item.as_object().expect("path item");
        let target = format!("{}?tenant={TENANT}", concrete(&w, path));
        for method in all {
            let r = w
                .edge
                .send(
                    &method.to_ascii_uppercase(),
                    &target,
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    b"",
                )
                .await;
            if methods.contains_key(method) {
                assert_ne!(
                    r.status, 405,
                    "{method} {path} is documented but not routed"
                );
                let statuses = methods[method]["responses"].as_object().expect("responses");
                assert!(
                    statuses.contains_key(&r.status.to_string())
                        || statuses.contains_key("default"),
                    "{method} {path} answered {} ({}), which it does not document",
                    r.status,
                    r.text()
                );
            } else if !path.starts_with("/api/ext/") && !path.starts_with("/api/ext-proxy/") {
                // HEAD is answered through GET wherever GET is routed.
                let want = if method == "head" && methods.contains_key("get") {
                    r.status
                } else {
                    405
                };
                assert_eq!(
                    r.status, want,
                    "{method} {path} is not documented but routed"
                );
            } else {
                // Any other method reaches the handler, which refuses it
                // (an answer to HEAD has no body).
                assert_eq!(r.status, 404, "{method} {path}");
                if method != "head" {
                    assert_eq!(r.json(), serde_json::json!({"error": "endpoint_not_found"}));
                }
            }
        }
    }
}

/// What fuzzing the document's parameters turned up: each answer is one the
/// document lists (a JSON refusal, or the route's own), never a 5xx or a
/// framework's text.
#[tokio::test]
async fn odd_queries_and_names_get_documented_answers() {
    let w = World::start().await;
    let auth = bearer(&token(serde_json::json!({})));
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let poll = async |query: String, body: String| {
        let r = w
            .edge
            .send(
                "POST",
                &format!("/api/ext-debug/stream?{query}"),
                &h,
                body.as_bytes(),
            )
            .await;
        (r.status, r.json())
    };
    let ext = format!("extensionId={}", w.ext.registry_id);
    let refusal = |code: &str| (400, serde_json::json!({"error": code}));
    // Past the log's positions (`i64::MAX` + 1, past `u64::MAX`).
    for id in ["9223372036854775808", "99999999999999999999"] {
        let body = format!(r#"{{"lastId":"{id}"}}"#);
        assert_eq!(poll(ext.clone(), body).await, refusal("invalid_last_id"));
    }
    // Filters no event can carry never reach the log's store.
    assert_eq!(
        poll(format!("{ext}&installId=a%00b"), "{}".into()).await,
        refusal("invalid_install_id")
    );
    assert_eq!(
        poll(format!("{ext}&requestId=a%20b"), "{}".into()).await,
        refusal("invalid_request_id")
    );
    // A repeated name: the last value wins (no framework text).
    let (status, body) = poll(format!("extensionId=x&{ext}"), "{}".into()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["events"].is_array());
    let ui = format!(
        "/ext-ui/{}/{}/index.html?tenant=nobody&tenant={TENANT}",
        w.ext.registry_id, w.ext.content_hash
    );
    assert_eq!(w.edge.send("GET", &ui, &[], b"").await.status, 200);
    // Names that are not UTF-8 name nothing; the route answers as for any
    // unknown name.
    let r = w.edge.send("GET", "/ext-bridge/%FF", &[], b"").await;
    assert_eq!((r.status, r.body.len()), (404, 0));
    for route in ["ext", "ext-proxy"] {
        let r = w
            .edge
            .send("GET", &format!("/api/{route}/%FF/hello"), &h, b"")
            .await;
        assert_eq!(
            (r.status, r.json()),
            (404, serde_json::json!({"error": "extension_not_available"})),
            "{route}"
        );
        assert!(r.header("x-request-id").is_some());
    }
    let r = w
        .edge
        .send(
            "GET",
            &format!(
                "/ext-ui/%FF/{}/index.html?tenant={TENANT}",
                w.ext.content_hash
            ),
            &[],
            b"",
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (400, "invalid extension"));
}
