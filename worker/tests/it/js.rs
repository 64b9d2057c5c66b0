//! The JavaScript guest (jco componentize, WASI clocks and random on) answers Alga's
//! echo case exactly as Alga's runner test
//! `executes_dynamic_component_in_process` expects
//! (docs/design/alga-compatibility.md, "Handler mapping").

use annex_proto::pb;
use annex_worker::testing::{Call, json};
use serde_json::json;

use crate::support::{publisher, worker};

#[tokio::test]
async fn js_component_echoes_like_alga() {
    let (w, _) = worker().await;
    let hash = publisher().publish("js-echo");
    let r = w
        .execute(
            Call::new(&hash, "POST", "/dynamic/echo")
                .query("foo", "bar")
                .header("content-type", "application/octet-stream")
                .body(vec![1u8, 2, 3, 250])
                .timeout_ms(5_000)
                .build(),
        )
        .await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        r.headers.get("x-generated-by").map(String::as_str),
        Some("js-component")
    );
    assert_eq!(
        json(&r),
        json!({"ok": true, "tenantId": "tenant-a", "extensionId": "ext-1", "method": "POST",
               "path": "/dynamic/echo?foo=bar", "echo": [1, 2, 3, 250]})
    );
}
