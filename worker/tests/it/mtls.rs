//! The Worker service over mTLS: edge and control-plane certificates may
//! execute; a worker certificate, or no certificate, may not.

use std::sync::Arc;

use annex_ops::Role;
use annex_ops::devcerts::DevCa;
use annex_proto::pb;
use annex_proto::pb::worker_client::WorkerClient;
use annex_worker::backend::NoHostBackend;
use annex_worker::bundles::StaticTrust;
use annex_worker::metrics::Metrics;
use annex_worker::server::{self, Sources};
use annex_worker::testing::{Call, test_settings};
use tonic::transport::Channel;

use crate::support::{publisher, tmp_dir};

async fn client(addr: std::net::SocketAddr, ca: &DevCa, role: Role) -> WorkerClient<Channel> {
    let tls = ca.issue(role, "caller").expect("issue");
    let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("url")
        .tls_config(tls.client_config("localhost"))
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    WorkerClient::new(channel)
}

#[tokio::test]
async fn only_edge_and_control_plane_certificates_may_execute() {
    let ca = DevCa::generate().expect("ca");
    let server_tls = ca.issue(Role::Worker, "worker").expect("issue");
    let executor = server::build(
        &test_settings(Some(tmp_dir("worker-cache"))),
        Sources {
            backend: Arc::new(NoHostBackend),
            bundles: Arc::new(publisher().bundles.clone()),
            trust: Arc::new(StaticTrust(publisher().trust.clone())),
        },
        Metrics::unregistered(),
    )
    .expect("worker");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = server::serve_tls(executor, listener, &server_tls, std::future::pending()).await;
    });
    let hash = publisher().publish("hello");

    for role in [Role::Edge, Role::ControlPlane] {
        let r = client(addr, &ca, role)
            .await
            .execute(Call::new(&hash, "GET", "/hello").build())
            .await
            .expect("allowed role")
            .into_inner();
        assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{role}: {r:?}");
    }
    let err = client(addr, &ca, Role::Worker)
        .await
        .execute(Call::new(&hash, "GET", "/hello").build())
        .await
        .expect_err("worker role refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // No client certificate: the handshake or the call fails.
    let anonymous = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("url")
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca.ca_pem()))
                .domain_name("localhost"),
        )
        .expect("tls");
    let refused = match anonymous.connect().await {
        Err(_) => true,
        Ok(ch) => WorkerClient::new(ch).stats(pb::Empty {}).await.is_err(),
    };
    assert!(refused, "a caller without a certificate was served");
}
