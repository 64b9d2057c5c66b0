//! Two control-plane replicas behind one `Upstream`: calls are spread over
//! both; when one is killed every later call is answered by the other (none
//! fails), and the stream channel reconnects to the survivor. The
//! certificates name `localhost` and are reached by IP: the configured
//! server name is what is checked.

mod support;

use std::time::Duration;

use annex_ops::Role;
use annex_ops::devcerts::DevCa;
use annex_ops::tls::Tls;
use annex_ops::upstream::{Upstream, UpstreamSettings, parse_urls};
use annex_proto::pb;
use annex_proto::pb::trust_client::TrustClient;
use support::{Replica, who};

async fn call<T>(client: &mut TrustClient<T>) -> Result<(String, String), tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    client
        .list_keys(pb::ListKeysRequest::default())
        .await
        .map(|r| who(&r.into_inner()))
}

#[tokio::test]
async fn calls_spread_over_replicas_and_survive_one_being_killed() {
    annex_ops::tls::install_crypto_provider();
    let ca = DevCa::generate().expect("ca");
    let server = || Tls::new(ca.issue(Role::ControlPlane, "cp").expect("issue")).expect("tls");
    let any = "127.0.0.1:0".parse().expect("addr");
    let mut a = Replica::start("a", any, server());
    let mut b = Replica::start("b", any, server());
    let urls = parse_urls(&[
        format!("https://127.0.0.1:{}", a.addr.port()),
        format!("https://127.0.0.1:{}", b.addr.port()),
    ])
    .expect("urls");
    let client_tls = Tls::new(ca.issue(Role::Edge, "edge-1").expect("issue")).expect("tls");
    let upstream = Upstream::new(
        UpstreamSettings::new(urls, Some("localhost".into())),
        client_tls,
    )
    .expect("upstream");
    let mut unary = TrustClient::new(upstream.clone());
    let mut stream = TrustClient::new(upstream.stream_channel());

    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..20 {
        let (replica, caller) = call(&mut unary).await.expect("call");
        assert_eq!(
            caller, "edge-1",
            "the replica read the caller's role certificate"
        );
        *served.entry(replica).or_default() += 1;
    }
    assert_eq!(served.len(), 2, "both replicas take calls: {served:?}");
    let (on, _) = call(&mut stream).await.expect("stream channel");

    // Kill the replica the stream channel is on (and with it half the
    // unary connections): no unary call fails.
    // (A call racing the death itself may fail: it may have been taken.)
    let survivor = if on == "a" {
        a.kill();
        a.gone().await;
        "b"
    } else {
        b.kill();
        b.gone().await;
        "a"
    };
    for i in 0..40 {
        let (replica, _) = call(&mut unary)
            .await
            .unwrap_or_else(|e| panic!("call {i} after the kill failed: {e:?}"));
        assert_eq!(replica, survivor);
    }
    // The stream channel's connection broke with its replica; its owner
    // calls again (as the routes and heartbeat loops do) and lands on the
    // survivor.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match call(&mut stream).await {
            Ok((replica, _)) => {
                assert_eq!(replica, survivor);
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "the stream channel never reconnected: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
