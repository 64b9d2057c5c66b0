//! The iframe bridge in headless Chromium: a host page on its own origin
//! embeds the extension's UI from `/ext-ui` with the edge's `host.js`; the
//! UI's button calls its handler through `apiproxy` (the SDK →
//! postMessage → host → `/api/ext-proxy` → worker) and the answer appears
//! inside the iframe.

use std::net::SocketAddr;
use std::time::Duration;

use annex_e2e::stack::TENANT;
use annex_e2e::webdriver::Driver;
use annex_e2e::{Stack, StackOptions};
use annex_testkit::assert_eventually;

fn host_page(edge: SocketAddr, registry_id: &str, content_hash: &str) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>host</title></head><body>
<h1>Host application</h1>
<iframe id="ext" style="width: 600px; height: 300px"></iframe>
<script src="http://{edge}/ext-bridge/host.js"></script>
<script>
  var edge = 'http://{edge}';
  var iframe = document.getElementById('ext');
  AnnexBridge.bootstrapIframe({{
    iframe: iframe,
    extensionId: '{registry_id}',
    proxyBase: edge,
    src: AnnexBridge.buildSrc(edge, '{registry_id}', '{content_hash}', {{ tenantId: '{TENANT}' }}),
  }});
</script></body></html>"#
    )
}

#[tokio::test]
async fn an_iframe_ui_calls_its_handler_through_the_bridge() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    // The host application: its own origin (another port), allowed by the edge.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let host_addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let s = Stack::start_with(StackOptions {
        edge_env: vec![(
            "ANNEX_EDGE_PROXY_ALLOWED_ORIGINS".into(),
            format!("http://{host_addr}"),
        )],
        ..StackOptions::default()
    })
    .await;
    let page = host_page(s.edge.http, &s.hello.registry_id, &s.hello.content_hash);
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || async move { axum::response::Html(page) }),
        );
        let _ = axum::serve(listener, app).await;
    });

    // The session cookie the host application would have set (cookies are
    // per host, not per port, so the edge receives it too).
    driver
        .goto(&format!("http://{}/ext-bridge/sdk.js", s.edge.http))
        .await;
    driver
        .add_cookie("annex_session", &s.token(&serde_json::json!({})))
        .await;
    driver.goto(&format!("http://{host_addr}/")).await;
    let frame = driver.find("#ext", 10_000).await;
    driver.switch_to_frame(&frame).await;
    let button = driver.find("#call", 20_000).await;
    let out = driver.find("#out", 5_000).await;
    // Click only once the UI's script has wired the button.
    assert_eventually!(
        Duration::from_secs(20),
        async || driver.text(&out).await == "ready",
        "the extension UI to become ready: {:?}\n{}",
        driver.text(&out).await,
        s.logs()
    );
    driver.click(&button).await;
    let want = format!("answer: hello for {TENANT}");
    assert_eventually!(
        Duration::from_secs(20),
        async || driver.text(&out).await == want,
        "the iframe's answer {want:?}, shown: {:?}\n{}",
        driver.text(&out).await,
        s.logs()
    );
    driver.quit().await;
}
