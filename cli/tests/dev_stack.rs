//! The author's path against a running `annex dev` (control plane on
//! Postgres, a real Wasmtime worker, the edge): the sample answers; then a
//! probe extension is packed, signed, trusted, published, installed with
//! config and secrets, and called through the edge, reaching the control
//! plane's host services (storage, secrets, config, scheduler, logs) for
//! real; then upgraded and uninstalled.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::dev::Dev;

fn probe_manifest(version: &str) -> String {
    let endpoints: Vec<serde_json::Value> = [
        ("GET", "/context"),
        ("GET", "/log"),
        ("POST", "/storage/put"),
        ("GET", "/storage/get"),
        ("GET", "/storage/list"),
        ("GET", "/secrets/get"),
        ("GET", "/config/get"),
        ("POST", "/scheduler/create"),
        ("GET", "/scheduler/list"),
        ("POST", "/invoicing"),
        ("GET", "/clients/list"),
        ("GET", "/services/list"),
        ("POST", "/ui-proxy"),
    ]
    .iter()
    .map(|(m, p)| serde_json::json!({"method": m, "path": p, "handler": "dist/main"}))
    .collect();
    serde_json::json!({
        "name": "probe", "publisher": "tester", "version": version, "runtime": "wasm-rust@1",
        "capabilities": ["cap:storage.kv", "cap:secrets.get", "cap:scheduler.manage",
                         "cap:invoice.manual.create", "cap:client.read", "cap:service.read", "cap:ui.proxy"],
        "api": {"endpoints": endpoints}
    })
    .to_string()
}

/// One request the stub host application received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A stand-in for the host application (an external system): answers the
/// internal extension APIs and ui-proxy routes the way Alga's server does,
/// and records what it was sent.
fn start_host_app() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    use axum::extract::Request;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let record = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let app = axum::Router::new().fallback(move |req: Request| {
                let record = record.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
                    let path = parts.uri.path().to_owned();
                    record.lock().expect("lock").push(Seen {
                        method: parts.method.to_string(),
                        path: path.clone(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let (status, json) = if path.contains("/ext-invoicing/") {
                        (201, r#"{"success":true,"invoice":{"invoiceId":"inv-1","invoiceNumber":"INV-0001","status":"draft","subtotal":100,"tax":0,"total":100}}"#)
                    } else if path.contains("/ext-clients/") {
                        (200, r#"{"items":[{"clientId":"c-1","clientName":"Acme","isInactive":false}],"totalCount":1,"page":1,"pageSize":25}"#)
                    } else if path.contains("/ext-services/") {
                        (200, r#"{"items":[{"serviceId":"s-1","serviceName":"Support","itemKind":"service","billingMethod":"hourly","defaultRate":90,"unitOfMeasure":"hour","isActive":true}],"totalCount":1,"page":1,"pageSize":25}"#)
                    } else if path.ends_with("/ping") {
                        (200, "pong")
                    } else {
                        (404, r#"{"error":"not_found"}"#)
                    };
                    (axum::http::StatusCode::from_u16(status).expect("status"), json.to_owned())
                }
            });
            let _ = axum::serve(listener, app).await;
        });
    });
    let addr = rx.recv().expect("stub address");
    (format!("http://{addr}"), seen)
}

#[test]
fn author_path_through_annex_dev() {
    let probe_wasm = annex_worker::testing::guest("probe");
    let (host_app, seen) = start_host_app();
    let dev = Dev::start(&[
        format!("--host-app-url={host_app}"),
        format!("--ui-proxy-url={host_app}"),
    ]);
    let sample = dev.var("ANNEX_SAMPLE");
    assert_eq!(sample, "annex.hello");
    let hello = dev.call_until(&["call", &sample, "/hello"], |out| {
        out.contains("\"hello\"")
    });
    assert!(hello.contains("\"tenantId\":\"dev\""), "{hello}");

    // An unknown extension is one error line with the edge's answer.
    let line = dev.annex(&["call", "nobody.nothing", "/x"]).fails_with(1);
    assert!(
        line.contains("404") && line.contains("extension_not_available"),
        "{line}"
    );

    // keygen → pack → sign → trust → publish
    let ext = dev.dir.path().join("probe");
    std::fs::create_dir_all(ext.join("dist")).expect("mkdir");
    std::fs::copy(&probe_wasm, ext.join("dist/main.wasm")).expect("copy probe");
    std::fs::write(ext.join("manifest.json"), probe_manifest("1.0.0")).expect("manifest");
    dev.annex(&["keygen", "--out", "tester.pem"]).ok();
    dev.annex(&["pack", "probe"]).ok();
    dev.annex(&["sign", "probe/bundle.tar.zst", "--key", "tester.pem"])
        .ok();
    dev.annex(&[
        "trust",
        "add",
        "--publisher",
        "tester",
        "--key",
        "tester.pub.pem",
    ])
    .ok();
    dev.annex(&["publish", "probe/bundle.tar.zst"]).ok();

    // install with config, then secrets
    dev.annex(&["install", "tester.probe", "--config", "region=eu"])
        .ok();
    dev.annex(&["secrets", "set", "tester.probe", "api_key=s3cr3t"])
        .ok();

    // Host services through the edge, worker and control plane.
    let ctx = dev.call_until(&["call", "tester.probe", "/context"], |o| {
        o.contains("tenantId")
    });
    assert!(ctx.contains("\"dev\""), "{ctx}");
    let put = dev.call_until(
        &[
            "call",
            "tester.probe",
            "/storage/put?ns=n&key=k",
            "-X",
            "POST",
            "-d",
            "v1",
        ],
        |o| o.contains("\"revision\":1"),
    );
    assert!(put.contains("\"ok\""), "{put}");
    let got = dev
        .annex(&["call", "tester.probe", "/storage/get?ns=n&key=k"])
        .ok()
        .stdout;
    assert!(got.contains("\"value\":\"v1\""), "{got}");
    let listed = dev
        .annex(&["call", "tester.probe", "/storage/list?ns=n"])
        .ok()
        .stdout;
    assert!(listed.contains("\"key\":\"k\""), "{listed}");
    let secret = dev
        .annex(&["call", "tester.probe", "/secrets/get?key=api_key"])
        .ok()
        .stdout;
    assert!(secret.contains("\"ok\":\"s3cr3t\""), "{secret}");
    let config = dev
        .annex(&["call", "tester.probe", "/config/get?key=region"])
        .ok()
        .stdout;
    assert!(config.contains("\"value\":\"eu\""), "{config}");
    let created = dev
        .annex(&[
            "call",
            "tester.probe",
            "/scheduler/create?endpoint=GET%20/context&cron=0%20*%20*%20*%20*",
            "-X",
            "POST",
        ])
        .ok()
        .stdout;
    assert!(created.contains("\"success\":true"), "{created}");
    let schedules = dev
        .annex(&["call", "tester.probe", "/scheduler/list"])
        .ok()
        .stdout;
    assert!(
        schedules.contains("\"endpointPath\":\"/context\""),
        "{schedules}"
    );

    // The host-application bridges go through the control plane's relay.
    let install_id = dev.annex(&["status", "tester.probe", "--json"]).ok().json()["install_id"]
        .as_str()
        .expect("install id")
        .to_owned();
    let invoice = dev
        .annex(&[
            "call",
            "tester.probe",
            "/invoicing?client=c-1&service=s-1",
            "-X",
            "POST",
        ])
        .ok()
        .stdout;
    assert!(
        invoice.contains("\"success\":true") && invoice.contains("\"invoiceId\":\"inv-1\""),
        "{invoice}"
    );
    let clients = dev
        .annex(&["call", "tester.probe", "/clients/list?search=ac"])
        .ok()
        .stdout;
    assert!(clients.contains("\"clientName\":\"Acme\""), "{clients}");
    let services = dev
        .annex(&["call", "tester.probe", "/services/list"])
        .ok()
        .stdout;
    assert!(
        services.contains("\"serviceName\":\"Support\""),
        "{services}"
    );
    let proxied = dev
        .annex(&[
            "call",
            "tester.probe",
            "/ui-proxy?route=/ping",
            "-X",
            "POST",
            "-d",
            "{}",
        ])
        .ok()
        .stdout;
    assert!(proxied.contains("\"ok\":\"pong\""), "{proxied}");
    {
        let seen = seen.lock().expect("lock").clone();
        let invoicing = seen
            .iter()
            .find(|s| s.path.contains("ext-invoicing"))
            .expect("an invoicing call");
        assert_eq!(invoicing.method, "POST");
        assert_eq!(
            invoicing.path,
            format!("/api/internal/ext-invoicing/install/{install_id}")
        );
        assert_eq!(
            invoicing.header("x-runner-auth"),
            Some("dev-host-app-token")
        );
        let body: serde_json::Value = serde_json::from_str(&invoicing.body).expect("JSON body");
        assert_eq!(body["clientId"], "c-1");
        assert_eq!(body["items"][0]["serviceId"], "s-1");
        let clients = seen
            .iter()
            .find(|s| s.path.contains("ext-clients"))
            .expect("a clients call");
        let body: serde_json::Value = serde_json::from_str(&clients.body).expect("JSON body");
        assert_eq!(body["operation"], "list");
        let proxy = seen
            .iter()
            .find(|s| s.path.ends_with("/ping"))
            .expect("a ui-proxy call");
        // Not an /api/ route: under the extension's registry id, with its api_key secret.
        assert!(
            proxy.path.ends_with("/ping") && proxy.path.len() > "/ping".len(),
            "{}",
            proxy.path
        );
        assert_eq!(proxy.header("x-api-key"), Some("s3cr3t"));
        assert_eq!(proxy.header("x-alga-tenant"), Some("dev"));
    }

    // Logs: a watcher sees the guest's log lines.
    let registry_id = dev.annex(&["status", "tester.probe", "--json"]).ok().json()["registry_id"]
        .as_str()
        .expect("registry id")
        .to_owned();
    let mut logs = Command::new(env!("CARGO_BIN_EXE_annex"))
        .current_dir(dev.dir.path())
        .envs(dev.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["logs", &registry_id, "--limit", "1", "--for", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("annex logs");
    // Keep logging until the watcher has connected and seen a line.
    let deadline = Instant::now() + Duration::from_secs(30);
    let output = loop {
        dev.annex(&["call", "tester.probe", "/log?msg=from-the-tour"])
            .ok();
        if let Ok(Some(_)) = logs.try_wait() {
            break logs.wait_with_output().expect("logs output");
        }
        assert!(
            Instant::now() < deadline,
            "annex logs saw nothing:\n{}",
            dev.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("from-the-tour"), "logs printed: {text}");

    // upgrade → the new version answers; uninstall → gone.
    std::fs::write(ext.join("manifest.json"), probe_manifest("1.1.0")).expect("manifest");
    dev.annex(&["pack", "probe"]).ok();
    dev.annex(&["sign", "probe/bundle.tar.zst", "--key", "tester.pem"])
        .ok();
    dev.annex(&["publish", "probe/bundle.tar.zst"]).ok();
    dev.annex(&["upgrade", "tester.probe", "--version", "1.1.0"])
        .ok();
    let status = dev.annex(&["status", "tester.probe", "--json"]).ok().json();
    assert_eq!(status["version"], "1.1.0", "{status}");
    // Storage belongs to the install and survives the upgrade.
    let got = dev.call_until(&["call", "tester.probe", "/storage/get?ns=n&key=k"], |o| {
        o.contains("\"value\":\"v1\"")
    });
    assert!(got.contains("\"revision\":1"), "{got}");
    dev.annex(&["uninstall", "tester.probe"]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = dev.annex(&["call", "tester.probe", "/context"]);
        if run.code == Some(1) {
            assert!(run.stderr.contains("404"), "{}", run.stderr);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the uninstalled extension still answers: {}",
            run.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
