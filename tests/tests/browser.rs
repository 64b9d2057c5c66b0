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

/// The host application's origin (its own port, allowed by the edge) and
/// the stack it embeds extensions from.
struct Host {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    stack: Stack,
}

impl Host {
    async fn start() -> Host {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let stack = Stack::start_with(StackOptions {
            edge_env: vec![(
                "ANNEX_EDGE_PROXY_ALLOWED_ORIGINS".into(),
                format!("http://{addr}"),
            )],
            ..StackOptions::default()
        })
        .await;
        Host {
            listener,
            addr,
            stack,
        }
    }

    /// Serves `page` at `/` and opens it in `driver` with the session
    /// cookie the host application would have set (cookies are per host,
    /// not per port, so the edge receives it too); returns the stack.
    async fn open(self, driver: &Driver, page: String) -> Stack {
        let listener = self.listener;
        tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/",
                axum::routing::get(move || async move { axum::response::Html(page) }),
            );
            let _ = axum::serve(listener, app).await;
        });
        let s = self.stack;
        driver
            .goto(&format!("http://{}/ext-bridge/sdk.js", s.edge.http))
            .await;
        driver
            .add_cookie("annex_session", &s.token(&serde_json::json!({})))
            .await;
        driver.goto(&format!("http://{}/", self.addr)).await;
        s
    }
}

#[tokio::test]
async fn an_iframe_ui_calls_its_handler_through_the_bridge() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let host = Host::start().await;
    let s = &host.stack;
    let page = host_page(s.edge.http, &s.hello.registry_id, &s.hello.content_hash);
    let s = host.open(&driver, page).await;
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

/// A host page that hands the bridge a session and themes its root with
/// `--alga-primary`.
fn alga_host_page(edge: SocketAddr, registry_id: &str, content_hash: &str) -> String {
    format!(
        r#"<!doctype html><html style="--alga-primary: #112233"><head><meta charset="utf-8"><title>host</title></head><body>
<iframe id="ext" style="width: 600px; height: 300px"></iframe>
<script src="http://{edge}/ext-bridge/host.js"></script>
<script>
  var edge = 'http://{edge}';
  AnnexBridge.bootstrapIframe({{
    iframe: document.getElementById('ext'),
    extensionId: '{registry_id}',
    proxyBase: edge,
    session: {{ token: 'session-token-1', expires_at: '2030-01-01T00:00:00Z' }},
    src: AnnexBridge.buildSrc(edge, '{registry_id}', '{content_hash}', {{ tenantId: '{TENANT}' }}),
  }});
</script></body></html>"#
    )
}

/// The extension UI built from Alga's own iframe SDK (examples/alga-ui,
/// `@alga-psa/extension-iframe-sdk` from npm bundled by examples/build.sh)
/// runs unchanged against the edge's host bridge: bootstrap (session token,
/// theme tokens, navigation path), proxy calls in both directions, resize
/// clamping, theme changes, navigation.
#[tokio::test]
async fn a_ui_built_with_algas_iframe_sdk_works_unchanged() {
    let app = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/alga-ui/dist/app.js"),
    )
    .unwrap_or_else(|e| panic!("examples/alga-ui/dist/app.js (run examples/build.sh): {e}"));
    let index = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/alga-ui/ui/index.html"),
    )
    .unwrap_or_else(|e| panic!("examples/alga-ui/ui/index.html: {e}"));
    let Some(driver) = Driver::start().await else {
        return;
    };
    let host = Host::start().await;
    let s = &host.stack;
    let hello = std::fs::read(annex_worker::testing::guest("hello"))
        .unwrap_or_else(|e| panic!("hello: {e}"));
    let manifest = serde_json::json!({
        "name": "com.annex.e2e.alga-sdk-ui", "publisher": annex_e2e::stack::PUBLISHER,
        "version": "1.0.0", "runtime": "wasm-rust@1", "capabilities": [],
        "ui": {"type": "iframe", "entry": "ui/index.html"},
        "api": {"endpoints": [
            {"method": "GET", "path": "/hello", "handler": "dist/main"},
            {"method": "POST", "path": "/echo", "handler": "dist/main"}
        ]}
    });
    let ext = s
        .publish_and_install_with_ui(
            &manifest,
            &hello,
            &[("index.html", &index), ("app.js", &app)],
        )
        .await;
    let page = alga_host_page(s.edge.http, &ext.registry_id, &ext.content_hash);
    let s = host.open(&driver, page).await;

    let frame = driver.find("#ext", 10_000).await;
    driver.switch_to_frame(&frame).await;
    // Read by script, not through an element reference: `navigate` reloads
    // the page, and a reference found before the reload goes stale.
    let shown = async |css: &str| {
        let script =
            format!("var e = document.querySelector('{css}'); return e ? e.textContent : '';");
        driver
            .execute(&script)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let within = Duration::from_secs(20);
    assert_eventually!(
        within,
        async || shown("#out").await == "ready",
        "the UI to become ready: {:?}\n{}",
        shown("#out").await,
        s.logs()
    );
    // bootstrap: the session token, the navigation path, the theme tokens.
    assert_eventually!(
        within,
        async || shown("#token").await == "session-token-1",
        "getToken() to resolve with the host's session token: {:?}",
        shown("#token").await
    );
    assert_eq!(shown("#navigation").await, "/");
    let primary = "return getComputedStyle(document.documentElement)\
                   .getPropertyValue('--alga-primary').trim();";
    assert_eventually!(
        within,
        async || driver.execute(primary).await == "#112233",
        "the host's theme tokens on the UI's root: {:?}",
        driver.execute(primary).await
    );

    // callHandlerJson: GET, then POST with a JSON body.
    driver.click(&driver.find("#call", 5_000).await).await;
    let want = format!("answer: hello for {TENANT}");
    assert_eventually!(
        within,
        async || shown("#out").await == want,
        "the handler's answer {want:?}, shown: {:?}\n{}",
        shown("#out").await,
        s.logs()
    );
    driver.click(&driver.find("#echo", 5_000).await).await;
    assert_eventually!(
        within,
        async || shown("#out").await == r#"echo: {"n":42}"#,
        "the echoed JSON body, shown: {:?}",
        shown("#out").await
    );

    // resize is clamped by the host to its maximum.
    driver.click(&driver.find("#grow", 5_000).await).await;
    driver.switch_to_parent().await;
    let height = "return document.getElementById('ext').style.height;";
    assert_eventually!(
        within,
        async || driver.execute(height).await == "4000px",
        "the iframe's height clamped to 4000px: {:?}",
        driver.execute(height).await
    );

    // The host page's theme changes: the UI follows.
    driver
        .execute("document.documentElement.style.setProperty('--alga-primary', '#abcdef');")
        .await;
    let frame = driver.find("#ext", 5_000).await;
    driver.switch_to_frame(&frame).await;
    assert_eventually!(
        within,
        async || driver.execute(primary).await == "#abcdef",
        "the new theme inside the UI: {:?}",
        driver.execute(primary).await
    );

    // navigate: the host rewrites the iframe's ?path= and the UI reloads there.
    driver.click(&driver.find("#go", 5_000).await).await;
    assert_eventually!(
        within,
        async || shown("#path").await == "/settings" && shown("#navigation").await == "/settings",
        "the UI reloaded at /settings: path {:?}, bootstrap {:?}",
        shown("#path").await,
        shown("#navigation").await
    );
    driver.quit().await;
}
