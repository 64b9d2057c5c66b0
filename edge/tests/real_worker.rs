//! The edge in front of a real worker: the `hello` guest (built from
//! `examples/`) published signed to a real control plane, installed, and
//! executed on an in-process Wasmtime worker that fetches and verifies the
//! bundle itself, all over mTLS.

mod support;

use std::sync::Arc;
use std::time::Duration;

use annex_bundle::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_ops::Role;
use annex_proto::pb;
use serde_json::json;
use support::*;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Starts the real worker on 127.0.0.1:0 with the control plane as its
/// bundle, trust and host-service source, and keeps it registered.
async fn start_worker(
    cp: &Cp,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<()>,
    tempfile::TempDir,
) {
    let cache = tempfile::tempdir().expect("cache dir");
    let channel = cp.channel(Role::Worker).await;
    let sources = annex_worker::server::Sources {
        backend: Arc::new(annex_worker::backend::GrpcHostBackend::new(channel.clone())),
        bundles: Arc::new(annex_worker::bundles::GrpcBundleSource::new(
            channel.clone(),
        )),
        trust: Arc::new(annex_worker::bundles::GrpcTrust::new(
            channel,
            Duration::from_secs(10),
        )),
    };
    let settings = annex_worker::testing::test_settings(Some(cache.path().to_owned()));
    let metrics =
        annex_ops::admin::AdminState::new().with_registry(annex_worker::metrics::Metrics::register);
    let executor = annex_worker::server::build(&settings, sources, metrics).expect("worker");
    let tls = cp.ca.issue(Role::Worker, "real-worker").expect("cert");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = Server::builder()
            .tls_config(tls.server_config())
            .expect("tls")
            .add_service(InterceptedService::new(
                annex_worker::grpc::WorkerService::new(executor).into_server(),
                annex_ops::tls::authenticate(&[Role::Edge, Role::ControlPlane]),
            ))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    let heartbeat = cp.keep_registered_at("real-worker", addr);
    (addr, heartbeat, cache)
}

/// Publishes the `hello` guest signed by a trusted key and installs it.
async fn install_hello(cp: &Cp) -> pb::InstallInfo {
    let bytes = annex_worker::testing::pack_guest("hello");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(annex_worker::testing::examples_dir().join("hello/manifest.json"))
            .expect("manifest"),
    )
    .expect("json");
    let (publisher, name, version) = (
        manifest["publisher"]
            .as_str()
            .expect("publisher")
            .to_owned(),
        manifest["name"].as_str().expect("name").to_owned(),
        manifest["version"].as_str().expect("version").to_owned(),
    );
    let key = KeyPair::generate();
    pb::trust_client::TrustClient::new(cp.channel(Role::Operator).await)
        .add_key(pb::AddKeyRequest {
            publisher: publisher.clone(),
            public_key: key.public_key().to_pem(),
            ..Default::default()
        })
        .await
        .expect("trust");
    let signature = annex_bundle::signing::sign_bundle(
        &key,
        &ContentHash::of(&bytes),
        &publisher,
        &name,
        &version,
    );
    let mut parts = vec![pb::PublishRequest {
        part: Some(pb::publish_request::Part::Header(pb::PublishHeader {
            signature,
            ..Default::default()
        })),
    }];
    parts.extend(bytes.chunks(64 * 1024).map(|c| pb::PublishRequest {
        part: Some(pb::publish_request::Part::Chunk(c.to_vec())),
    }));
    pb::registry_client::RegistryClient::new(cp.channel(Role::Operator).await)
        .publish(futures::stream::iter(parts))
        .await
        .expect("publish");
    cp.installs()
        .await
        .install(pb::InstallRequest {
            tenant_id: TENANT.into(),
            extension: format!("{publisher}.{name}").to_lowercase(),
            ..Default::default()
        })
        .await
        .expect("install")
        .into_inner()
}

#[tokio::test]
async fn the_hello_guest_answers_through_the_edge() {
    let cp = Cp::start().await;
    let (_addr, _heartbeat, _cache) = start_worker(&cp).await;
    let install = install_hello(&cp).await;
    assert!(
        eventually(5, || async {
            cp.live_workers().await.is_ok_and(|w| !w.is_empty())
        })
        .await
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
    cp.installs()
        .await
        .disable(pb::InstallRef {
            tenant_id: TENANT.into(),
            extension: install.install_id.clone(),
        })
        .await
        .expect("disable");
    let path = format!("/api/ext/{}/hello", install.registry_id);
    assert!(
        eventually_ms(1000, || async {
            edge.send("GET", &path, &[("authorization", &auth)], b"")
                .await
                .status
                == 404
        })
        .await
    );
    edge.shutdown().await.expect("clean shutdown");
}
