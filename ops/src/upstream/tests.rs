use std::collections::BTreeMap;

use super::*;
use crate::Role;
use crate::devcerts::DevCa;

fn tls() -> Tls {
    crate::tls::install_crypto_provider();
    let ca = DevCa::generate().expect("ca");
    Tls::new(ca.issue(Role::Edge, "edge").expect("issue")).expect("tls")
}

/// A resolver answering from a map the test changes.
fn resolver(map: Arc<parking_lot::Mutex<BTreeMap<String, Vec<SocketAddr>>>>) -> Resolver {
    Arc::new(move |host, _port| {
        let found = map.lock().get(&host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

#[test]
fn urls_must_be_https_with_a_host() {
    let ok = parse_urls(&["https://cp-a:7443", " https://[::1]:7443 ", ""]).expect("valid");
    assert_eq!(ok.len(), 2);
    assert_eq!(parse_urls::<&str>(&[]), Err(UpstreamError::NoUrls));
    assert!(matches!(
        parse_urls(&["http://cp:7443"]),
        Err(UpstreamError::Url { .. })
    ));
    assert!(matches!(
        parse_urls(&["https://a b"]),
        Err(UpstreamError::Url { .. })
    ));
}

#[test]
fn the_server_name_is_the_configured_one_or_each_host() {
    let uri: http::Uri = "https://10.0.0.7:7443".parse().expect("uri");
    let own = target(&uri, None).expect("target");
    assert_eq!(own.host, "10.0.0.7");
    assert_eq!(own.port, 7443);
    let named = target(&uri, Some("annex-control-plane-headless.annex.svc")).expect("target");
    assert_eq!(
        format!("{:?}", named.name),
        format!(
            "{:?}",
            rustls::pki_types::ServerName::try_from("annex-control-plane-headless.annex.svc")
                .expect("name")
        )
    );
    let v6: http::Uri = "https://[::1]".parse().expect("uri");
    let t = target(&v6, None).expect("target");
    assert_eq!(
        (t.host.as_str(), t.port, t.authority.as_str()),
        ("::1", 443, "[::1]:443")
    );
}

#[tokio::test]
async fn one_name_fans_out_and_resolution_follows_the_name() {
    let map = Arc::new(parking_lot::Mutex::new(BTreeMap::from([(
        "cp.headless".to_owned(),
        vec![addr("10.1.0.1:7443"), addr("10.1.0.2:7443")],
    )])));
    let urls = parse_urls(&["https://cp.headless:7443"]).expect("url");
    let up = Upstream::with_resolver(
        UpstreamSettings::new(urls, None),
        tls(),
        resolver(map.clone()),
    )
    .expect("upstream");
    let Inner::Replicas(r) = &up.inner else {
        panic!("a replica set");
    };
    r.refresh().await;
    assert_eq!(
        up.addresses(),
        [addr("10.1.0.1:7443"), addr("10.1.0.2:7443")]
    );

    // Calls take turns.
    let firsts: Vec<SocketAddr> = (0..4).map(|_| r.order()[0].addr).collect();
    assert_eq!(
        firsts.iter().filter(|a| **a == firsts[0]).count(),
        2,
        "{firsts:?}"
    );

    // A replica that could not be reached is tried last while it is down.
    r.order()
        .into_iter()
        .find(|x| x.addr == addr("10.1.0.1:7443"))
        .expect("replica")
        .mark_down();
    for _ in 0..3 {
        let order: Vec<SocketAddr> = r.order().iter().map(|x| x.addr).collect();
        assert_eq!(order, [addr("10.1.0.2:7443"), addr("10.1.0.1:7443")]);
    }

    // A pod replaced: the name now lists another address.
    map.lock().insert(
        "cp.headless".into(),
        vec![addr("10.1.0.2:7443"), addr("10.1.0.3:7443")],
    );
    r.refresh().await;
    assert_eq!(
        up.addresses(),
        [addr("10.1.0.2:7443"), addr("10.1.0.3:7443")]
    );

    // A failed lookup keeps what was known.
    map.lock().clear();
    r.refresh().await;
    assert_eq!(
        up.addresses(),
        [addr("10.1.0.2:7443"), addr("10.1.0.3:7443")]
    );
}

#[test]
fn only_errors_before_the_server_took_the_call_count_as_never_sent() {
    let dial: BoxError = Box::new(DialError::new(
        "10.0.0.1:7443",
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
    ));
    assert!(never_sent(&*dial));
    let refused: BoxError = Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM));
    assert!(never_sent(&*refused));
    let reset: BoxError = Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR));
    assert!(!never_sent(&*reset));
    let io: BoxError = Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset mid-call",
    ));
    assert!(!never_sent(&*io));
    assert!(connection_lost(&*io));
    assert!(!connection_lost(&*reset));
}
