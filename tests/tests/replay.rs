//! Capture and replay through the real stack (docs/design/replay.md): the
//! probe (Rust) and js-echo (JavaScript) guests read a secret, a stored
//! value, write one, fetch from a local stub server, and read the clock and
//! random numbers; `annex capture start --sample 100%` records those calls
//! made through the edge, and `annex replay` (from the control plane, and
//! from an exported file) gives back the identical response without
//! reaching the stub, byte for byte on every run. A bundle that reads
//! another key reports the divergence; another tenant sees none of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use annex_e2e::stack::{FleetOptions, OTHER_TENANT, PUBLISHER, StackOptions, TENANT, bin};
use annex_e2e::{Stack, send};
use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::assert_eventually;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SECRET: &str = "e2e-s3cret";

/// An HTTP server answering every request with how many it has answered.
async fn stub_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind stub");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = format!("stub answer {n}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, hits)
}

/// Runs the `annex` CLI against the stack as the operator.
async fn annex(s: &Stack, tenant: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(bin("annex"))
        .arg("--control-plane")
        .arg(format!("https://{}", s.cp_addr))
        .arg("--tls-dir")
        .arg(&s.pki)
        .arg("--tls-server-name")
        .arg("localhost")
        .arg("--tenant")
        .arg(tenant)
        .args(args)
        .output()
        .await
        .expect("run annex")
}

async fn annex_json(s: &Stack, tenant: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = annex(s, tenant, &all).await;
    assert!(
        out.status.success(),
        "annex {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("annex --json output")
}

/// Publishes `guest` under `manifest` for [`TENANT`] with egress to the
/// stub and the secret `api_key`; returns its registry id.
async fn install(s: &Stack, guest: &str, mut manifest: Value, stub: SocketAddr) -> String {
    let component = std::fs::read(annex_worker::testing::guest(guest)).expect("guest");
    manifest["publisher"] = json!(PUBLISHER);
    let installed = s.publish_and_install(&manifest, &component).await;
    let operator = s.channel(Role::Operator).await;
    let mut installs = pb::installs_client::InstallsClient::new(operator);
    installs
        .install(pb::InstallRequest {
            tenant_id: TENANT.into(),
            extension: installed.registry_id.clone(),
            egress_allowlist: vec![stub.to_string()],
            ..Default::default()
        })
        .await
        .expect("install with egress");
    installs
        .set_secrets(pb::SetSecretsRequest {
            install: Some(pb::InstallRef {
                tenant_id: TENANT.into(),
                extension: installed.registry_id.clone(),
            }),
            secrets: [("api_key".to_string(), SECRET.to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("set secrets");
    installed.registry_id
}

/// One call through the edge (retried while the component compiles: a
/// JavaScript component takes seconds); its JSON body.
async fn call(s: &Stack, id: &str, path: &str, stub: SocketAddr) -> Value {
    let auth = s.bearer(&json!({}));
    let url = format!("/api/ext/{id}{path}?url=http://{stub}/data");
    let r = assert_eventually!(
        Duration::from_secs(120),
        async || {
            let r = send(s.edge.http, "GET", &url, &[("authorization", &auth)], b"").await;
            (!r.text().contains("component_compiling")).then_some(r)
        },
        "{path} compiled"
    );
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

/// The capture ids of `id`, newest first, once there are `n`.
async fn captures(s: &Stack, id: &str, n: usize) -> Vec<String> {
    assert_eventually!(
        Duration::from_secs(20),
        async || {
            let listed = annex_json(s, TENANT, &["capture", "list", id]).await;
            let ids: Vec<String> = listed["captures"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c["capture_id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (ids.len() >= n).then_some(ids)
        },
        "{n} captures of {id}"
    )
}

/// What the guests answer for the secret: its length and byte sum.
fn secret_seen(secret: &str) -> Value {
    json!({"len": secret.len(), "sum": secret.bytes().map(u64::from).sum::<u64>()})
}

fn replaced(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = haystack.to_vec();
    let mut i = 0;
    let mut found = false;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + to.len()].copy_from_slice(to);
            found = true;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(found, "the literal is in the component");
    out
}

async fn start(stub: SocketAddr) -> Stack {
    Stack::start_with(StackOptions {
        fleet: FleetOptions {
            control_plane_env: vec![(
                "ANNEX_CONTROL_PLANE_EGRESS_ALLOWLIST".into(),
                stub.to_string(),
            )],
            ..FleetOptions::default()
        },
        ..StackOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn captured_calls_replay_to_the_same_response_and_a_changed_bundle_diverges() {
    let (stub, hits) = stub_server().await;
    let s = start(stub).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // The Rust guest.
    let manifest = json!({
        "name": "com.annex.e2e.replay-probe", "version": "1.0.0", "runtime": "wasm-rust@1",
        "capabilities": ["cap:storage.kv", "cap:secrets.get", "cap:http.fetch"],
        "api": {"endpoints": [{"method": "GET", "path": "/mix", "handler": "dist/main"}]}
    });
    let probe = install(&s, "probe", manifest.clone(), stub).await;
    let started = annex_json(
        &s,
        TENANT,
        &["capture", "start", &probe, "--sample", "100%"],
    )
    .await;
    assert_eq!(started["sample_ppm"], 1_000_000, "{started}");
    // The first call stores a value; the second reads it back (both captured).
    let first = call(&s, &probe, "/mix", stub).await;
    let second = call(&s, &probe, "/mix", stub).await;
    assert_eq!(second["secret"], secret_seen(SECRET), "{second}");
    assert_eq!(second["stored"], first["wall_ns"].to_string(), "{second}");
    let ids = captures(&s, &probe, 2).await;
    let newest = ids[0].clone();

    // The tape never holds the secret; only a revealing read shows it.
    let shown = annex(&s, TENANT, &["capture", "show", &newest]).await;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("storage get replay/mix-key-a"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    let revealed = annex_json(
        &s,
        TENANT,
        &["capture", "show", &newest, "--reveal-secrets"],
    )
    .await;
    assert_eq!(revealed["secrets"]["api_key"], SECRET);

    // Replay from the control plane: the recorded response, the stub untouched.
    let hits_before = hits.load(Ordering::SeqCst);
    let replay = annex_json(&s, TENANT, &["replay", &newest, "--reveal-secrets"]).await;
    assert_eq!(replay["divergence"], Value::Null, "{replay}");
    assert_eq!(replay["same_response"], true, "{replay}");
    let body: Value = serde_json::from_str(replay["response"]["body"].as_str().unwrap_or(""))
        .expect("replayed body");
    assert_eq!(body, second);

    // Replay from an exported file: the same bytes on every run.
    let file = dir.path().join("capture.json");
    let file_arg = file.display().to_string();
    annex_json(
        &s,
        TENANT,
        &[
            "capture",
            "export",
            &newest,
            "-o",
            &file_arg,
            "--reveal-secrets",
        ],
    )
    .await;
    let offline = |file: String| async move {
        let out = tokio::process::Command::new(bin("annex"))
            .args(["replay", "--file", &file])
            .output()
            .await
            .expect("annex replay --file");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let once = offline(file_arg.clone()).await;
    let twice = offline(file_arg.clone()).await;
    assert_eq!(
        once, twice,
        "replays of one capture are byte for byte equal"
    );
    let text = String::from_utf8_lossy(&once);
    assert!(text.contains("no divergence"), "{text}");
    assert!(text.contains("identical to the recorded one"), "{text}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        hits_before,
        "replays reach nothing"
    );

    // A bundle reading another key: the divergence, at the second host call.
    let component = std::fs::read(annex_worker::testing::guest("probe")).expect("probe");
    let patched = replaced(&component, b"mix-key-a", b"mix-key-b");
    let changed = annex_worker::testing::pack(manifest.to_string().as_bytes(), &patched);
    let bundle = dir.path().join("changed.tar.zst");
    std::fs::write(&bundle, changed).expect("write bundle");
    let bundle_arg = bundle.display().to_string();
    let diverged = annex_json(
        &s,
        TENANT,
        &["replay", "--file", &file_arg, "--bundle", &bundle_arg],
    )
    .await;
    assert_eq!(diverged["divergence"]["index"], 1, "{diverged}");
    assert_eq!(
        diverged["divergence"]["recorded"],
        "storage get replay/mix-key-a"
    );
    assert_eq!(
        diverged["divergence"]["asked"],
        "storage get replay/mix-key-b"
    );

    // Another tenant: no captures listed, the id not found, no replay.
    let other = annex_json(&s, OTHER_TENANT, &["capture", "list"]).await;
    assert_eq!(other["captures"], json!([]), "{other}");
    for args in [
        vec!["capture", "show", newest.as_str()],
        vec!["replay", newest.as_str()],
        vec!["capture", "export", newest.as_str(), "-o", "/dev/null"],
    ] {
        let out = annex(&s, OTHER_TENANT, &args).await;
        assert!(!out.status.success(), "{args:?} as another tenant");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not found"), "{args:?}: {err}");
    }

    // The JavaScript guest.
    let mut js_manifest: Value =
        serde_json::from_str(include_str!("../../examples/js-echo/manifest.json"))
            .expect("manifest");
    js_manifest["name"] = json!("com.annex.e2e.replay-js");
    let js = install(&s, "js-echo", js_manifest, stub).await;
    annex_json(
        &s,
        TENANT,
        &["capture", "start", "--install", &js, "--sample", "100%"],
    )
    .await;
    let live = call(&s, &js, "/dynamic/mix", stub).await;
    assert_eq!(live["secret"], secret_seen(SECRET), "{live}");
    let js_capture = captures(&s, &js, 1).await.remove(0);
    let replay = annex_json(&s, TENANT, &["replay", &js_capture, "--reveal-secrets"]).await;
    assert_eq!(replay["divergence"], Value::Null, "{replay}");
    assert_eq!(replay["same_response"], true, "{replay}");
    let body: Value = serde_json::from_str(replay["response"]["body"].as_str().unwrap_or(""))
        .expect("replayed body");
    assert_eq!(body, live);

    // Stopping ends the policy; what was captured stays until it expires.
    annex_json(&s, TENANT, &["capture", "stop", &js]).await;
    let listed = annex_json(&s, TENANT, &["capture", "list", &js]).await;
    assert_eq!(listed["policy"], Value::Null, "{listed}");
    assert_eq!(listed["captures"].as_array().map(Vec::len), Some(1));
}
