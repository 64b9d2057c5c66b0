//! The edge in front of a real worker: the `hello` guest (built from
//! `examples/`) published signed to a real control plane, installed, and
//! executed on an in-process Wasmtime worker (started through its own `run`,
//! registered by its own heartbeats) that fetches and verifies the bundle
//! itself, all over mTLS.

mod support;

use std::time::Duration;

use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::{Worker, WorkerOptions};
use serde_json::json;
use support::*;

/// Publishes the `hello` guest (its own manifest, built component) signed
/// by a trusted key and installs it for [`TENANT`].
async fn install_hello(cp: &ControlPlane) -> Installed {
    let bytes = annex_worker::testing::pack_guest("hello");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(annex_worker::testing::examples_dir().join("hello/manifest.json"))
            .expect("manifest"),
    )
    .expect("json");
    cp.publish_and_install(&manifest, &bytes, TENANT).await
}

#[tokio::test]
async fn the_hello_guest_answers_through_the_edge() {
    let cp = ControlPlane::start().await;
    let _worker = Worker::start(&cp, WorkerOptions::default()).await;
    let install = install_hello(&cp).await;
    assert_eventually!(
        Duration::from_secs(5),
        async || cp.live_workers().await.is_ok_and(|w| !w.is_empty()),
        "the worker to register with the control plane"
    );
    let edge = Edge::start(
        &cp,
        EdgeOptions {
            timeout: Duration::from_secs(20),
            ..EdgeOptions::default()
        },
    )
    .await;
    let auth = bearer(&token(json!({})));

    let r = edge
        .send(
            "GET",
            &format!("/api/ext/{}/hello", install.registry_id),
            &[("authorization", &auth)],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"message": "hello", "tenantId": TENANT, "path": "/hello"})
    );

    let r = edge
        .send(
            "POST",
            &format!("/api/ext/{}/echo", install.slug.replace(' ', "%20")),
            &[("authorization", &auth), ("content-type", "text/plain")],
            b"round trip",
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (200, "round trip"));
    assert_eq!(r.header("content-type"), Some("text/plain"));

    // The install is disabled: the edge stops answering within a second.
    cp.installs(Role::Operator)
        .await
        .disable(pb::InstallRef {
            tenant_id: TENANT.into(),
            extension: install.install_id.clone(),
        })
        .await
        .expect("disable");
    let path = format!("/api/ext/{}/hello", install.registry_id);
    assert_eventually!(
        Duration::from_secs(1),
        async || {
            edge.send("GET", &path, &[("authorization", &auth)], b"")
                .await
                .status
                == 404
        },
        "the edge to stop answering for the disabled install"
    );
    edge.shutdown().await.expect("clean shutdown");
}
