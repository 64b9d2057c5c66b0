use std::collections::BTreeSet;

use super::*;
use crate::server::ROUTES;

/// A path item's operations (its other keys are shared fields).
const ALL_METHODS: [&str; 8] = [
    "get", "head", "post", "put", "patch", "delete", "options", "trace",
];

/// The committed document, relative to this crate.
const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");

#[test]
fn the_committed_document_is_the_generated_one() {
    let generated = json().expect("the document serialises");
    if std::env::var("ANNEX_BLESS").as_deref() == Ok("1") {
        std::fs::write(COMMITTED, &generated).expect("writing docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the document the code generates; regenerate it with \
         `ANNEX_BLESS=1 cargo test -p annex-edge --lib openapi` and commit it"
    );
}

#[test]
fn every_route_of_the_router_is_documented_and_nothing_else() {
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let routed: BTreeSet<String> = ROUTES.iter().map(|r| openapi_path(r.path)).collect();
    assert_eq!(routed.len(), ROUTES.len(), "a route is registered twice");
    assert_eq!(documented, routed);
    for route in ROUTES {
        let item = &doc["paths"][openapi_path(route.path)];
        let methods: BTreeSet<&str> = item
            .as_object()
            .expect("path item")
            .keys()
            .map(String::as_str)
            .filter(|k| ALL_METHODS.contains(k))
            .collect();
        assert!(!methods.is_empty(), "{} documents no method", route.path);
        if let Some(kind) = route.any {
            let want: BTreeSet<&str> = kind
                .methods()
                .iter()
                .map(|m| match m {
                    utoipa::openapi::path::HttpMethod::Get => "get",
                    utoipa::openapi::path::HttpMethod::Head => "head",
                    utoipa::openapi::path::HttpMethod::Post => "post",
                    utoipa::openapi::path::HttpMethod::Put => "put",
                    utoipa::openapi::path::HttpMethod::Patch => "patch",
                    utoipa::openapi::path::HttpMethod::Delete => "delete",
                    utoipa::openapi::path::HttpMethod::Options => "options",
                    utoipa::openapi::path::HttpMethod::Trace => "trace",
                })
                .collect();
            assert_eq!(methods, want, "{}", route.path);
        }
        // Every path parameter is declared, on every operation.
        let path = openapi_path(route.path);
        let params: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|p| p.split_once('}').map(|(name, _)| name))
            .collect();
        let path_names = |params: &serde_json::Value| -> BTreeSet<String> {
            params
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let shared = path_names(&item["parameters"]);
        for (method, op) in item.as_object().expect("path item") {
            if !ALL_METHODS.contains(&method.as_str()) {
                continue;
            }
            let mut declared = path_names(&op["parameters"]);
            declared.extend(shared.iter().cloned());
            for name in &params {
                assert!(
                    declared.contains(*name),
                    "{method} {} lacks path parameter {name}",
                    route.path
                );
            }
        }
    }
}

#[test]
fn operation_ids_are_unique_and_errors_are_alga_bodies() {
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for (key, op) in item.as_object().expect("item") {
            if !ALL_METHODS.contains(&key.as_str()) {
                continue;
            }
            let id = op["operationId"].as_str().expect("operationId").to_owned();
            assert!(ids.insert(id.clone()), "{id} twice");
        }
    }
    let unauthorized = &doc["paths"]["/api/ext-debug/stream"]["post"]["responses"]["401"]["content"]
        ["application/json"]["schema"];
    assert_eq!(
        unauthorized["properties"]["error"]["enum"],
        serde_json::json!(["Unauthorized", "invalid_session", "unauthenticated"])
    );
    assert_eq!(unauthorized["additionalProperties"], false);
    // On the extension routes a status is the edge's refusal or the
    // extension's own answer.
    assert_eq!(
        doc["paths"]["/api/ext/{extension_id}/{path}"]["get"]["responses"]["502"]["$ref"],
        "#/components/responses/ext_502"
    );
    let gateway = &doc["components"]["responses"]["ext_502"]["content"]["application/json"]["schema"]
        ["anyOf"][0];
    assert_eq!(
        gateway["required"],
        serde_json::json!(["error", "requestId"])
    );
}
