//! Annex's `storage-v2` through the real edge, worker and control plane on
//! Postgres, driven by the probe guest: TTLs, JSON values, namespace schemas
//! that refuse what does not match (saying why), and bulk puts that store
//! all of their entries or none.

use annex_e2e::stack::PUBLISHER;
use annex_e2e::{Stack, send};
use annex_ops::Role;
use annex_proto::pb;
use serde_json::{Value, json};

struct Probe<'a> {
    s: &'a Stack,
    id: String,
    auth: String,
}

impl Probe<'_> {
    async fn call(&self, method: &str, path: &str, body: &[u8]) -> Value {
        let r = send(
            self.s.edge.http,
            method,
            &format!("/api/ext/{}{path}", self.id),
            &[("authorization", &self.auth)],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    }

    async fn put(&self, query: &str, body: &str) -> Value {
        self.call(
            "POST",
            &format!("/storage/put-with?{query}"),
            body.as_bytes(),
        )
        .await
    }

    async fn get(&self, ns: &str, key: &str) -> Value {
        self.call("GET", &format!("/storage/get?ns={ns}&key={key}"), b"")
            .await
    }
}

#[tokio::test]
async fn storage_v2_stores_json_with_ttls_checks_schemas_and_puts_in_bulk() {
    let s = Stack::start().await;
    let probe = std::fs::read(annex_worker::testing::guest("probe"))
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let manifest = json!({
        "name": "com.annex.e2e.storage-v2", "publisher": PUBLISHER, "version": "1.0.0",
        "runtime": "wasm-rust@1", "capabilities": ["cap:storage.kv"],
        "api": {"endpoints": [
            {"method": "POST", "path": "/storage/put-with", "handler": "dist/main"},
            {"method": "POST", "path": "/storage/bulk-put", "handler": "dist/main"},
            {"method": "POST", "path": "/storage/put", "handler": "dist/main"},
            {"method": "GET", "path": "/storage/get", "handler": "dist/main"}
        ]}
    });
    let installed = s.publish_and_install(&manifest, &probe).await;
    let p = Probe {
        s: &s,
        id: installed.registry_id.clone(),
        auth: s.bearer(&json!({})),
    };

    // A JSON value with a TTL; it reads back as its JSON text.
    let put = p
        .put("ns=orders&key=o1&json=1&ttl=120", r#"{"id": 1}"#)
        .await;
    assert_eq!(put["ok"]["revision"], 1, "{put}");
    assert_eq!(p.get("orders", "o1").await["ok"]["value"], r#"{"id":1}"#);
    let bad_ttl = p.put("ns=orders&key=o2&ttl=5", "x").await;
    assert_eq!(bad_ttl["err"], "internal");
    assert!(
        bad_ttl["message"]
            .as_str()
            .unwrap_or("")
            .contains("ttlSeconds"),
        "{bad_ttl}"
    );
    let not_json = p.put("ns=orders&key=o2&json=1", "{nope").await;
    assert!(
        not_json["message"]
            .as_str()
            .unwrap_or("")
            .contains("not JSON"),
        "{not_json}"
    );

    // An operator gives the namespace a schema.
    let mut installs = pb::installs_client::InstallsClient::new(s.channel(Role::Operator).await);
    let install = pb::InstallRef {
        tenant_id: annex_e2e::stack::TENANT.into(),
        extension: installed.registry_id.clone(),
    };
    let schema = installs
        .add_storage_schema(pb::AddStorageSchemaRequest {
            install: Some(install.clone()),
            namespace: "orders".into(),
            schema_json: json!({
                "type": "object", "required": ["id"],
                "properties": {"id": {"type": "integer"}}
            })
            .to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("add schema: {e}"))
        .into_inner();
    assert_eq!(schema.version, 1);
    let refused = installs
        .add_storage_schema(pb::AddStorageSchemaRequest {
            install: Some(install.clone()),
            namespace: "orders".into(),
            schema_json: r#"{"$ref": "https://example.com/s.json"}"#.into(),
        })
        .await
        .expect_err("a schema that reaches outside itself");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let mismatch = p.put("ns=orders&key=o2&json=1", r#"{"id": "two"}"#).await;
    assert_eq!(mismatch["err"], "internal");
    let why = mismatch["message"].as_str().unwrap_or("");
    assert!(
        why.contains("schema version 1") && why.contains("/id"),
        "{mismatch}"
    );
    assert_eq!(p.get("orders", "o2").await["err"], "missing");
    let matches = p.put("ns=orders&key=o2&json=1", r#"{"id": 2}"#).await;
    assert_eq!(matches["ok"]["revision"], 1, "{matches}");
    // Alga's plain put stores base64 text, which an object schema refuses,
    // as Alga's storage service does.
    let plain = p
        .call("POST", "/storage/put?ns=orders&key=o3", b"raw")
        .await;
    assert_eq!(plain["err"], "internal", "{plain}");
    let unknown = p
        .put("ns=orders&key=o4&json=1&schema=7", r#"{"id": 4}"#)
        .await;
    assert!(
        unknown["message"]
            .as_str()
            .unwrap_or("")
            .contains("no schema version 7"),
        "{unknown}"
    );

    // Bulk: one bad entry and nothing is stored; all good, all stored.
    let bulk = |items: Value| {
        let p = &p;
        async move {
            p.call(
                "POST",
                "/storage/bulk-put?ns=orders&json=1",
                items.to_string().as_bytes(),
            )
            .await
        }
    };
    let half = bulk(json!([
        {"key": "b1", "value": r#"{"id": 10}"#},
        {"key": "b2", "value": r#"{"id": "eleven"}"#}
    ]))
    .await;
    assert_eq!(half["err"], "internal", "{half}");
    assert_eq!(p.get("orders", "b1").await["err"], "missing");
    let all = bulk(json!([
        {"key": "b1", "value": r#"{"id": 10}"#},
        {"key": "o1", "value": r#"{"id": 11}"#, "rev": 1}
    ]))
    .await;
    let revisions: Vec<_> = all["ok"]
        .as_array()
        .unwrap_or_else(|| panic!("{all}"))
        .iter()
        .map(|e| (e["key"].clone(), e["revision"].clone()))
        .collect();
    assert_eq!(
        revisions,
        [(json!("b1"), json!(1)), (json!("o1"), json!(2))]
    );
    assert_eq!(p.get("orders", "o1").await["ok"]["value"], r#"{"id":11}"#);
    let too_many: Vec<Value> = (0..21)
        .map(|n| json!({"key": format!("k{n}"), "value": format!("{{\"id\": {n}}}")}))
        .collect();
    let over = bulk(Value::Array(too_many)).await;
    assert!(
        over["message"].as_str().unwrap_or("").contains("1 to 20"),
        "{over}"
    );

    let listed = installs
        .list_storage_schemas(install)
        .await
        .unwrap_or_else(|e| panic!("list schemas: {e}"))
        .into_inner();
    assert_eq!(listed.schemas.len(), 1);
    assert_eq!(listed.schemas[0].namespace, "orders");
}
