//! A control plane in the caller's own process (`annex dev`'s worker calling
//! its control plane) is reached through its services, with nothing
//! listening at the address dialled, and with the same role checks as over
//! mTLS: the role is the one the caller names, as its certificate would.

use annex_ops::Role;
use annex_ops::in_process::Endpoints;
use annex_ops::upstream::{Upstream, UpstreamSettings};
use annex_proto::pb;
use annex_testkit::{ControlPlane, ControlPlaneOptions};

/// An upstream whose only URL has nothing listening, preferring the control
/// plane registered in `endpoints` as a caller with `role`.
fn upstream(cp: &ControlPlane, endpoints: &Endpoints, role: Role) -> Upstream {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let tls = annex_ops::tls::Tls::new(cp.ca.issue(role, "caller").expect("issue")).expect("tls");
    Upstream::new(
        UpstreamSettings::new(vec![url.parse().expect("url")], Some("localhost".into())),
        tls,
    )
    .expect("upstream")
    .prefer_in_process(endpoints.clone(), &cp.addr.to_string(), role)
}

#[tokio::test]
async fn in_process_calls_reach_the_services_with_the_callers_role_checked() {
    let endpoints = Endpoints::default();
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        in_process: Some(endpoints.clone()),
        ..Default::default()
    })
    .await;

    let worker = upstream(&cp, &endpoints, Role::Worker);
    pb::trust_client::TrustClient::new(worker.clone())
        .list_keys(pb::ListKeysRequest::default())
        .await
        .expect("a worker may list the trust keys, in-process");
    let refused = pb::installs_client::InstallsClient::new(worker)
        .list_installs(pb::ListInstallsRequest {
            tenant_id: "t".into(),
        })
        .await
        .expect_err("workers may not call Installs, in-process either");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    let operator = upstream(&cp, &endpoints, Role::Operator);
    let installs = pb::installs_client::InstallsClient::new(operator)
        .list_installs(pb::ListInstallsRequest {
            tenant_id: "t".into(),
        })
        .await
        .expect("an operator may")
        .into_inner();
    assert!(installs.installs.is_empty());

    // Once the control plane has stopped, its registration is gone and the
    // same upstream dials the (closed) network address.
    let after = upstream(&cp, &endpoints, Role::Worker);
    drop(cp);
    let gone = annex_testkit::assert_eventually!(
        std::time::Duration::from_secs(10),
        async || {
            pb::trust_client::TrustClient::new(after.clone())
                .list_keys(pb::ListKeysRequest::default())
                .await
                .err()
        },
        "calls to fail once the control plane stopped"
    );
    assert_eq!(gone.code(), tonic::Code::Unavailable, "{gone:?}");
}
