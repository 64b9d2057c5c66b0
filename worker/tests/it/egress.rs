//! The egress policy against a guest that aims at what it must not reach:
//! another service on the worker's machine through a plain name that
//! resolves to loopback, a port its entry does not name, and the cloud
//! metadata address, a platform listener, through `http.fetch` and
//! `wasi:http` alike.

use annex_proto::pb;
use annex_worker::testing::{Call, TestWorker, deny_egress, json, test_settings};
use serde_json::json;

use crate::interfaces::{fetch_body, stub_http_server, wasi_http_body};
use crate::support::{publisher, tmp_dir, worker};

/// What the probe guest's `http.fetch` got for `url` with `allow` as the
/// install's egress list.
async fn fetch(allow: &[&str], url: &str) -> serde_json::Value {
    let (w, _) = worker().await;
    let hash = publisher().publish("probe");
    let r = w
        .execute(
            Call::new(&hash, "POST", "/fetch")
                .caps(&["cap:http.fetch"])
                .allow(allow)
                .body(fetch_body(url))
                .timeout_ms(5_000)
                .build(),
        )
        .await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    json(&r)
}

/// The same through `wasi:http`.
async fn wasi_http(allow: &[&str], addr: std::net::SocketAddr, host: &str) -> serde_json::Value {
    let (w, _) = worker().await;
    let hash = publisher().publish("probe");
    let mut body: serde_json::Value =
        serde_json::from_slice(&wasi_http_body(addr, "/w")).expect("json");
    body["authority"] = json!(format!("{host}:{}", addr.port()));
    let r = w
        .execute(
            Call::new(&hash, "POST", "/wasi-http")
                .caps(&["cap:http.fetch"])
                .allow(allow)
                .body(body.to_string())
                .timeout_ms(5_000)
                .build(),
        )
        .await;
    assert_eq!(r.outcome, pb::Outcome::Ok as i32, "{r:?}");
    json(&r)
}

#[tokio::test]
async fn a_plain_name_that_resolves_to_loopback_reaches_nothing_local() {
    // The "other local service": a name the install lists exactly, whose
    // address is this machine's loopback.
    let local = stub_http_server().await;
    let url = format!("http://localhost:{}/admin/metrics", local.port());
    let port_entry = format!("localhost:{}", local.port());
    for allow in [&["localhost"][..], &[port_entry.as_str()][..]] {
        assert_eq!(
            fetch(allow, &url).await,
            json!({"err": "not-allowed"}),
            "{allow:?}"
        );
        assert_eq!(
            wasi_http(allow, local, "localhost").await,
            json!({"err": "ErrorCode::HttpRequestDenied"}),
            "{allow:?}"
        );
    }
    // Marked private, with its port, the same service is reachable.
    let private = format!("private:localhost:{}", local.port());
    let ok = fetch(&[private.as_str()], &url).await;
    assert_eq!(ok["ok"]["status"], json!(200), "{ok}");
    let ok = wasi_http(&[private.as_str()], local, "localhost").await;
    assert_eq!(ok["ok"]["status"], json!(200), "{ok}");
}

#[tokio::test]
async fn an_entry_without_a_port_allows_only_443_and_80() {
    let local = stub_http_server().await;
    let url = format!("http://{local}/x");
    assert_eq!(
        fetch(&["127.0.0.1"], &url).await,
        json!({"err": "not-allowed"})
    );
    assert_eq!(
        wasi_http(&["127.0.0.1"], local, "127.0.0.1").await,
        json!({"err": "ErrorCode::HttpRequestDenied"})
    );
    let with_port = local.to_string();
    let ok = fetch(&[with_port.as_str()], &url).await;
    assert_eq!(ok["ok"]["status"], json!(200), "{ok}");
    let other_port = format!("127.0.0.1:{}", local.port().wrapping_add(1).max(1));
    assert_eq!(
        fetch(&[other_port.as_str()], &url).await,
        json!({"err": "not-allowed"})
    );
}

#[tokio::test]
async fn metadata_and_link_local_addresses_are_refused_whatever_the_entry() {
    for (allow, url) in [
        (
            "169.254.169.254",
            "http://169.254.169.254/latest/meta-data/",
        ),
        ("private:169.254.169.254", "http://169.254.169.254/"),
        ("169.254.10.1:8080", "http://169.254.10.1:8080/"),
        ("[fd00:ec2::254]", "http://[fd00:ec2::254]/"),
        ("100.100.100.200", "http://100.100.100.200/"),
        (
            "[::ffff:169.254.169.254]",
            "http://[::ffff:169.254.169.254]/",
        ),
    ] {
        assert_eq!(
            fetch(&[allow], url).await,
            json!({"err": "not-allowed"}),
            "{allow} {url}"
        );
    }
}

#[tokio::test]
async fn the_platforms_own_listeners_are_refused_even_to_private_entries() {
    // The stub stands for a platform listener (the control plane's admin
    // port, an edge) named in --egress-deny.
    let listener = stub_http_server().await;
    let mut settings = test_settings(Some(tmp_dir("worker-cache")));
    deny_egress(&mut settings, &format!("localhost:{}", listener.port()));
    let w = TestWorker::start(settings, publisher(), None).await;
    let hash = publisher().publish("probe");
    let private = format!("private:localhost:{}", listener.port());
    let literal = listener.to_string();
    for (allow, url) in [
        (
            private.as_str(),
            format!("http://localhost:{}/metrics", listener.port()),
        ),
        (literal.as_str(), format!("http://{listener}/metrics")),
    ] {
        let r = w
            .execute(
                Call::new(&hash, "POST", "/fetch")
                    .caps(&["cap:http.fetch"])
                    .allow(&[allow])
                    .body(fetch_body(&url))
                    .build(),
            )
            .await;
        assert_eq!(json(&r), json!({"err": "not-allowed"}), "{allow}");
    }
}
