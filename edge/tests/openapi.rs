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
                assert_eq!(
                    (r.status, r.json()),
                    (404, serde_json::json!({"error": "endpoint_not_found"})),
                    "{method} {path}"
                );
            }
        }
    }
}
