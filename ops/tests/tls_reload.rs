//! Certificates rotated under a running server and client, the way a CA
//! rotation goes: a CA bundle holding the old and the new CA, then leaf
//! certificates from the new CA, then the old CA dropped. The established
//! connection keeps serving throughout; new connections present the new
//! certificates both ways (the server's is checked by a client trusting
//! only the new CA; the client's is read back by the server as the
//! caller's name and role).

mod support;

use std::path::Path;
use std::time::Duration;

use annex_ops::Role;
use annex_ops::devcerts::DevCa;
use annex_ops::tls::{Tls, TlsFiles, TlsMaterial};
use annex_ops::upstream::{Upstream, UpstreamSettings, parse_urls};
use annex_proto::pb;
use annex_proto::pb::trust_client::TrustClient;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use support::{Replica, who};

fn files(dir: &Path) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("mkdir");
    TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    }
}

fn write_leaf(f: &TlsFiles, m: &TlsMaterial) {
    std::fs::write(&f.cert, &m.cert_pem).expect("cert");
    std::fs::write(&f.key, &m.key_pem).expect("key");
}

fn write_ca(f: &TlsFiles, pems: &[&str]) {
    std::fs::write(&f.ca, pems.concat()).expect("ca");
}

async fn caller_seen(upstream: &Upstream) -> Result<String, tonic::Status> {
    TrustClient::new(upstream.clone())
        .list_keys(pb::ListKeysRequest::default())
        .await
        .map(|r| who(&r.into_inner()).1)
}

fn upstream(replica: &Replica, tls: Tls) -> Upstream {
    let urls = parse_urls(&[format!("https://127.0.0.1:{}", replica.addr.port())]).expect("url");
    Upstream::new(UpstreamSettings::new(urls, Some("localhost".into())), tls).expect("upstream")
}

#[tokio::test]
async fn a_rotation_reaches_new_connections_and_spares_established_ones() {
    annex_ops::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = (
        DevCa::generate().expect("ca"),
        DevCa::generate().expect("ca"),
    );
    let (server_files, client_files) = (
        files(&dir.path().join("server")),
        files(&dir.path().join("client")),
    );
    for (f, role, name) in [
        (&server_files, Role::ControlPlane, "cp-old"),
        (&client_files, Role::Edge, "edge-old"),
    ] {
        write_ca(f, &[old.ca_pem()]);
        write_leaf(f, &old.issue(role, name).expect("issue"));
    }
    let server_tls = Tls::new(server_files.load().expect("load")).expect("tls");
    let client_tls = Tls::new(client_files.load().expect("load")).expect("tls");
    let replica = Replica::start(
        "a",
        "127.0.0.1:0".parse().expect("addr"),
        server_tls.clone(),
    );
    let established = upstream(&replica, client_tls.clone());
    assert_eq!(caller_seen(&established).await.expect("call"), "edge-old");

    // 1. Everyone trusts both CAs.
    for (f, tls) in [(&server_files, &server_tls), (&client_files, &client_tls)] {
        write_ca(f, &[old.ca_pem(), new.ca_pem()]);
        assert!(tls.reload_now().await.expect("bundle"), "CA bundle taken");
    }
    // 2. New leaf certificates from the new CA.
    let server_leaf = new.issue(Role::ControlPlane, "cp-new").expect("issue");
    write_leaf(&server_files, &server_leaf);
    write_leaf(
        &client_files,
        &new.issue(Role::Edge, "edge-new").expect("issue"),
    );
    for tls in [&server_tls, &client_tls] {
        assert!(tls.reload_now().await.expect("leaf"), "leaf taken");
    }

    // The established connection was not dropped: it still carries calls,
    // authenticated as it was when it was made.
    assert_eq!(caller_seen(&established).await.expect("call"), "edge-old");
    // A new connection presents the client's new certificate...
    let fresh = upstream(&replica, client_tls.clone());
    assert_eq!(caller_seen(&fresh).await.expect("call"), "edge-new");
    // ...and the server presents its new one: a client that trusts only the
    // new CA completes the handshake and is shown exactly that certificate.
    let only_new = Tls::new(new.issue(Role::Edge, "probe").expect("issue")).expect("tls");
    let name = ServerName::try_from("localhost").expect("name");
    let stream = annex_ops::tls::dial(&only_new, replica.addr, &name, Duration::from_secs(5))
        .await
        .expect("handshake with a new-CA-only client");
    let shown = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("server certificate");
    let expected = CertificateDer::from_pem_slice(&server_leaf.cert_pem).expect("pem");
    assert_eq!(shown, expected);

    // 3. The old CA is dropped on the server: certificates it signed are
    // refused on new connections, while the client's new ones are served.
    write_ca(&server_files, &[new.ca_pem()]);
    assert!(server_tls.reload_now().await.expect("new CA only"));
    // (The stale client trusts both CAs, so only the server can refuse.)
    let stale = old.issue(Role::Edge, "edge-stale").expect("issue");
    let old_client = Tls::new(TlsMaterial::from_pem(
        [old.ca_pem(), new.ca_pem()].concat().into_bytes(),
        stale.cert_pem,
        stale.key_pem,
    ))
    .expect("tls");
    assert!(
        caller_seen(&upstream(&replica, old_client)).await.is_err(),
        "a certificate from the dropped CA was accepted"
    );
    assert_eq!(
        caller_seen(&upstream(&replica, client_tls))
            .await
            .expect("call"),
        "edge-new"
    );
}
