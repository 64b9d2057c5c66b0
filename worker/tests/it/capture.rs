//! Capture and replay on one worker (docs/design/replay.md): a call with a
//! capture policy ships its tape (secrets apart), and replaying the tape
//! against the same bundle gives the same answer byte for byte, reaching
//! nothing; a bundle that asks for something else reports where.

use std::collections::BTreeMap;
use std::sync::Arc;

use annex_proto::pb;
use annex_testkit::assert_eventually;
use annex_worker::capture::replay::{ReplayInput, Replayed, replay};
use annex_worker::capture::tape::Tape;
use annex_worker::testing::{Call, StubBackend, json};

use crate::interfaces::stub_http_server;
use crate::support::{publisher, tmp_dir, worker_with};

const SECRET: &str = "s3cret-value";

/// Runs `path` of `guest` once with every call captured; returns the
/// answer, the shipped capture and the bundle bytes.
async fn captured(
    guest: &str,
    path: &str,
    stub: std::net::SocketAddr,
) -> (pb::ExecuteResponse, pb::RecordCaptureRequest, Vec<u8>) {
    let backend = Arc::new(StubBackend {
        secrets: BTreeMap::from([("api_key".to_string(), SECRET.to_string())]),
        ..StubBackend::default()
    });
    let w = worker_with(backend.clone()).await;
    let hash = publisher().publish(guest);
    let mut call = Call::new(&hash, "GET", path)
        .query("url", &format!("http://{stub}/data"))
        .caps(&["cap:secrets.get", "cap:storage.kv", "cap:http.fetch"])
        .allow(&[stub.to_string().as_str()])
        .secrets_version("v1")
        .timeout_ms(10_000)
        .build();
    call.capture = Some(pb::CaptureSettings {
        sample_ppm: 1_000_000,
        failures: false,
        max_bytes: 0,
        config_version: "c1".into(),
    });
    let response = w.execute(call).await;
    assert_eq!(response.outcome, pb::Outcome::Ok as i32, "{response:?}");
    let capture = assert_eventually!(
        std::time::Duration::from_secs(10),
        async || { backend.captures.lock().pop() },
        "the shipped capture"
    );
    w.stop().await;
    let bundle = std::fs::read(
        publisher()
            .bundles
            .dir()
            .join(format!("{}.tar.zst", hash.hex())),
    )
    .expect("bundle");
    (response, capture, bundle)
}

async fn replayed(capture: &pb::RecordCaptureRequest, bundle: Vec<u8>, reveal: bool) -> Replayed {
    let secrets = if reveal {
        capture.secrets.clone().into_iter().collect()
    } else {
        BTreeMap::new()
    };
    replay(ReplayInput {
        tape: Tape::from_json(&capture.tape).expect("tape"),
        secrets,
        bundle,
        cache_dir: Some(tmp_dir("replay-cache")),
    })
    .await
    .expect("replay")
}

/// What the guests answer for the secret: its length and byte sum.
fn secret_seen(secret: &str) -> serde_json::Value {
    serde_json::json!({"len": secret.len(), "sum": secret.bytes().map(u64::from).sum::<u64>()})
}

fn check_capture(response: &pb::ExecuteResponse, capture: &pb::RecordCaptureRequest) -> Tape {
    assert_eq!(capture.reason, "sampled");
    assert_eq!(capture.outcome, "ok");
    assert_eq!(
        capture.secrets.get("api_key").map(String::as_str),
        Some(SECRET)
    );
    let text = String::from_utf8_lossy(&capture.tape);
    assert!(!text.contains(SECRET), "the tape holds no secret value");
    assert!(!text.contains("grant"), "the tape holds no grant");
    let tape = Tape::from_json(&capture.tape).expect("tape");
    assert_eq!(tape.config_version, "c1");
    assert!(!tape.wall_clock.is_empty(), "{tape:?}");
    assert!(!tape.secure_random.is_empty(), "{tape:?}");
    let body = json(response);
    assert_eq!(body["secret"], secret_seen(SECRET), "{body}");
    tape
}

#[tokio::test]
async fn a_rust_guest_replays_to_the_same_answer_and_a_changed_bundle_diverges() {
    let stub = stub_http_server().await;
    let (response, capture, bundle) = captured("probe", "/mix", stub).await;
    let tape = check_capture(&response, &capture);
    // secrets, storage get, storage put, fetch: in that order.
    let asked: Vec<String> = tape.calls.iter().map(|c| c.ask.describe()).collect();
    assert_eq!(asked[0], "secrets");
    assert_eq!(asked[1], "storage get replay/mix-key-a");
    assert!(asked[3].starts_with("http fetch GET http://"), "{asked:?}");

    let first = replayed(&capture, bundle.clone(), true).await;
    assert_eq!(first.divergence, None);
    assert!(
        first.same_response,
        "{:?}\n{:?}",
        first.response, first.recorded
    );
    assert_eq!(first.response.body, response.body);
    let again = replayed(&capture, bundle.clone(), true).await;
    assert_eq!(again.response, first.response);

    // Without the revealed values the guest sees "(sealed)".
    let sealed = replayed(&capture, bundle.clone(), false).await;
    assert_eq!(json(&sealed.response)["secret"], secret_seen("(sealed)"));
    assert!(!sealed.same_response);

    // The same component reading another key: the second host call differs.
    let component = std::fs::read(annex_worker::testing::guest("probe")).expect("probe");
    let patched = replace(&component, b"mix-key-a", b"mix-key-b");
    let manifest = std::fs::read(annex_worker::testing::examples_dir().join("probe/manifest.json"))
        .expect("manifest");
    let changed = annex_worker::testing::pack(&manifest, &patched);
    let diverged = replayed(&capture, changed, true).await;
    let d = diverged.divergence.expect("a divergence");
    assert_eq!(d.index, 1, "{d:?}");
    assert_eq!(d.recorded.as_deref(), Some("storage get replay/mix-key-a"));
    assert_eq!(d.asked, "storage get replay/mix-key-b");
}

#[tokio::test]
async fn a_javascript_guest_replays_to_the_same_answer() {
    let stub = stub_http_server().await;
    let (response, capture, bundle) = captured("js-echo", "/dynamic/mix", stub).await;
    check_capture(&response, &capture);
    let first = replayed(&capture, bundle.clone(), true).await;
    assert_eq!(first.divergence, None);
    assert!(
        first.same_response,
        "{:?}\n{:?}",
        first.response, first.recorded
    );
    let again = replayed(&capture, bundle, true).await;
    assert_eq!(again.response, first.response);
}

/// `haystack` with every `from` replaced by `to` (of the same length).
fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = haystack.to_vec();
    let mut found = false;
    let mut i = 0;
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

/// A call with failures kept and no sample: shipped only when it fails,
/// and its replay fails the same way.
#[tokio::test]
async fn failures_are_kept_and_successes_are_not() {
    let backend = Arc::new(StubBackend::default());
    let w = worker_with(backend.clone()).await;
    let failures_only = Some(pb::CaptureSettings {
        sample_ppm: 0,
        failures: true,
        max_bytes: 0,
        config_version: String::new(),
    });
    let misbehave = publisher().publish("misbehave");
    let hello = publisher().publish("hello");

    let mut ok = Call::new(&hello, "GET", "/hello").build();
    ok.capture = failures_only.clone();
    let answered = w.execute(ok).await;
    assert_eq!(answered.outcome, pb::Outcome::Ok as i32, "{answered:?}");
    let mut trap = Call::new(&misbehave, "GET", "/panic").build();
    trap.capture = failures_only;
    let trapped = w.execute(trap).await;
    assert_eq!(trapped.outcome, pb::Outcome::Trap as i32, "{trapped:?}");

    let capture = assert_eventually!(
        std::time::Duration::from_secs(10),
        async || { backend.captures.lock().first().cloned() },
        "the failed call's capture"
    );
    w.stop().await;
    // Only the trap: the successful call's recording was dropped. The
    // queue ships in order, so the trap's capture would follow the other.
    assert_eq!(backend.captures.lock().len(), 1);
    assert_eq!(
        (capture.reason.as_str(), capture.outcome.as_str()),
        ("failure", "trap")
    );
    assert_eq!(capture.path, "/panic");

    let bundle = std::fs::read(
        publisher()
            .bundles
            .dir()
            .join(format!("{}.tar.zst", misbehave.hex())),
    )
    .expect("bundle");
    let replayed = replayed(&capture, bundle, false).await;
    assert_eq!(replayed.response.outcome, pb::Outcome::Trap as i32);
    assert!(
        replayed.same_response,
        "{:?}\n{:?}",
        replayed.response, replayed.recorded
    );
}

/// Every host interface the probe reaches records and replays: context,
/// user, config, logging, the scheduler, the host-application relays and
/// ui-proxy (answered as the stub backend answers them: unavailable).
#[tokio::test]
async fn every_host_interface_replays() {
    let backend = Arc::new(StubBackend::default());
    let w = worker_with(backend.clone()).await;
    let hash = publisher().publish("probe");
    let bundle = std::fs::read(
        publisher()
            .bundles
            .dir()
            .join(format!("{}.tar.zst", hash.hex())),
    )
    .expect("bundle");
    let paths = [
        "/context",
        "/user",
        "/config/list",
        "/log",
        "/scheduler/list",
        "/scheduler/get",
        "/scheduler/endpoints",
        "/clients/list",
        "/services/get",
        "/storage/list",
    ];
    for path in paths {
        let mut call = Call::new(&hash, "GET", path)
            .caps(&[
                "cap:context.read",
                "cap:user.read",
                "cap:log.emit",
                "cap:scheduler.manage",
                "cap:client.read",
                "cap:service.read",
                "cap:storage.kv",
            ])
            .config("region", "eu")
            .build();
        call.capture = Some(pb::CaptureSettings {
            sample_ppm: 1_000_000,
            ..Default::default()
        });
        let live = w.execute(call).await;
        let capture = assert_eventually!(
            std::time::Duration::from_secs(10),
            async || { backend.captures.lock().pop() },
            "the capture of {path}"
        );
        let replayed = replayed(&capture, bundle.clone(), false).await;
        assert_eq!(replayed.divergence, None, "{path}");
        assert!(
            replayed.same_response,
            "{path}: {live:?}\n{:?}",
            replayed.response
        );
    }
    w.stop().await;
}

/// A `wasi:http/outgoing-handler` request is recorded with both bodies and
/// replayed without reaching the network.
#[tokio::test]
async fn wasi_http_requests_record_and_replay() {
    let stub = stub_http_server().await;
    let backend = Arc::new(StubBackend::default());
    let w = worker_with(backend.clone()).await;
    let hash = publisher().publish("probe");
    let mut call = Call::new(&hash, "POST", "/wasi-http")
        .caps(&["cap:http.fetch"])
        .allow(&[stub.to_string().as_str()])
        .body(crate::interfaces::wasi_http_body(stub, "/recorded"))
        .timeout_ms(10_000)
        .build();
    call.capture = Some(pb::CaptureSettings {
        sample_ppm: 1_000_000,
        ..Default::default()
    });
    let live = w.execute(call).await;
    assert_eq!(live.outcome, pb::Outcome::Ok as i32, "{live:?}");
    assert!(
        String::from_utf8_lossy(live.body.as_deref().unwrap_or_default()).contains("/recorded"),
        "{live:?}"
    );
    let capture = assert_eventually!(
        std::time::Duration::from_secs(10),
        async || { backend.captures.lock().pop() },
        "the capture"
    );
    w.stop().await;
    let tape = Tape::from_json(&capture.tape).expect("tape");
    assert_eq!(tape.calls.len(), 1, "{tape:?}");
    assert!(
        tape.calls[0]
            .ask
            .describe()
            .starts_with("wasi:http GET http://")
    );
    let bundle = std::fs::read(
        publisher()
            .bundles
            .dir()
            .join(format!("{}.tar.zst", hash.hex())),
    )
    .expect("bundle");
    let replayed = replayed(&capture, bundle, false).await;
    assert_eq!(replayed.divergence, None);
    assert!(replayed.same_response, "{live:?}\n{:?}", replayed.response);
}
