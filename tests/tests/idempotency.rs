//! Idempotency keys across workers with the real binaries
//! (docs/design/idempotency.md): one control plane, two workers with a
//! 3-second idempotency lease, one edge, and the probe guest, whose
//! `/storage/put` bumps the record's revision each time it runs (and waits
//! `sleep_ms` first when asked), so "the guest ran once" is the revision
//! read back.
//!
//! The edge's timeout is 20 s (the stack's default is 2 s).
//!
//! A keyed write sent twice runs once and the repeat is the stored answer
//! marked `x-idempotent-replay: true`; two concurrent duplicates run once;
//! the same key with another body is refused with 422; the same key on
//! another install or tenant runs as a call of its own; and a worker killed
//! with SIGKILL in the middle of a slow keyed call leaves the call to the
//! other worker once the dead one's lease lapsed (the edge repeats the call
//! there, or the client does), which answers 200 having run it once.

use std::time::Duration;

use annex_e2e::http::{Resp, get, try_send};
use annex_e2e::stack::{Installed, OTHER_TENANT, PUBLISHER};
use annex_e2e::{FleetOptions, Stack, StackOptions};
use annex_proto::pb;
use annex_testkit::assert_eventually;
use serde_json::json;

/// One stack at a time: each runs four processes on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The workers' idempotency lease: how long a dead worker's call holds its key.
const LEASE_MS: &str = "3000";

async fn stack() -> Stack {
    Stack::start_with(StackOptions {
        // Room for the 4 s call that outlives its worker, and the other
        // worker's wait for the dead one's lease.
        edge_env: vec![("ANNEX_EDGE_TIMEOUT_MS".into(), "20000".into())],
        fleet: FleetOptions {
            control_planes: 1,
            workers: 2,
            worker_env: vec![("ANNEX_WORKER_IDEMPOTENCY_LEASE_MS".into(), LEASE_MS.into())],
            ..FleetOptions::default()
        },
        ..StackOptions::default()
    })
    .await
}

/// The probe guest under `name` with its storage endpoints, installed for
/// the stack's tenant and compiled on every worker.
async fn install_probe(s: &Stack, name: &str) -> Installed {
    let probe = std::fs::read(annex_worker::testing::guest("probe"))
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let manifest = json!({
        "name": name, "publisher": PUBLISHER, "version": "1.0.0", "runtime": "wasm-rust@1",
        "capabilities": ["cap:storage.kv"],
        "api": {"endpoints": [
            {"method": "POST", "path": "/storage/put", "handler": "dist/main"},
            {"method": "GET", "path": "/storage/get", "handler": "dist/main"}
        ]}
    });
    let installed = s.publish_and_install(&manifest, &probe).await;
    for i in 0..s.workers.len() {
        prewarm(s, i, &installed.content_hash).await;
    }
    installed
}

/// `Worker.Prewarm` of worker `i`, asked over mTLS as the control plane.
async fn prewarm(s: &Stack, i: usize, hash: &str) {
    s.worker_client(i)
        .await
        .prewarm(pb::PrewarmRequest {
            content_hash: hash.to_owned(),
        })
        .await
        .unwrap_or_else(|e| panic!("prewarm on worker {i}: {e}"));
}

/// `POST {ext}/storage/put?ns=idem&key={record}{extra}` with `body`,
/// `x-idempotency-key: key` when given, as `auth`.
async fn put(
    s: &Stack,
    auth: &str,
    ext: &Installed,
    record: &str,
    extra: &str,
    key: Option<&str>,
    body: &[u8],
) -> Result<Resp, String> {
    let mut headers = vec![
        ("authorization", auth),
        ("content-type", "application/octet-stream"),
    ];
    if let Some(k) = key {
        headers.push(("x-idempotency-key", k));
    }
    try_send(
        s.edge.http,
        "POST",
        &format!(
            "/api/ext/{}/storage/put?ns=idem&key={record}{extra}",
            ext.registry_id
        ),
        &headers,
        body,
    )
    .await
}

async fn put_ok(
    s: &Stack,
    auth: &str,
    ext: &Installed,
    record: &str,
    key: Option<&str>,
    body: &[u8],
) -> Resp {
    let r = put(s, auth, ext, record, "", key, body)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs()));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.logs());
    r
}

/// How many times the guest wrote `record` (its revision), read as `auth`.
async fn revision(s: &Stack, auth: &str, ext: &Installed, record: &str) -> u64 {
    let r = get(
        s.edge.http,
        &format!(
            "/api/ext/{}/storage/get?ns=idem&key={record}",
            ext.registry_id
        ),
        &[("authorization", auth)],
    )
    .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.logs());
    r.json()["ok"]["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revision in {}", r.text()))
}

/// Worker `i`'s count of keyed calls with `outcome` (`/metrics`).
async fn idempotent_calls(s: &Stack, i: usize, outcome: &str) -> u64 {
    let text = get(s.workers[i].admin, "/metrics", &[]).await.text();
    let prefix = format!("annex_worker_idempotent_calls_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_write_runs_once_across_workers_and_is_scoped_to_its_install() {
    let _serial = SERIAL.lock().await;
    let s = stack().await;
    let auth = s.bearer(&json!({}));
    let probe = install_probe(&s, "com.annex.e2e.idem").await;

    // Sent twice: the second answer is the first, replayed; the guest ran once.
    let first = put_ok(&s, &auth, &probe, "once", Some("order-1"), b"v1").await;
    assert_eq!(first.header("x-idempotent-replay"), None);
    assert_eq!(first.json()["ok"]["revision"], 1, "{}", first.text());
    let again = put_ok(&s, &auth, &probe, "once", Some("order-1"), b"v1").await;
    assert_eq!(again.header("x-idempotent-replay"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(revision(&s, &auth, &probe, "once").await, 1);

    // The same key with another body: refused, nothing runs.
    let other = put(&s, &auth, &probe, "once", "", Some("order-1"), b"v2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.status, 422, "{}", other.text());
    assert_eq!(other.json(), json!({"error": "idempotency_key_reused"}));
    assert_eq!(revision(&s, &auth, &probe, "once").await, 1);

    // Two duplicates at once, whichever workers they reach: one run.
    let (a, b) = tokio::join!(
        put(
            &s,
            &auth,
            &probe,
            "race",
            "&sleep_ms=1500",
            Some("dup-1"),
            b"v"
        ),
        put(
            &s,
            &auth,
            &probe,
            "race",
            "&sleep_ms=1500",
            Some("dup-1"),
            b"v"
        ),
    );
    let (a, b) = (
        a.unwrap_or_else(|e| panic!("{e}")),
        b.unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{} / {}\n{}",
        a.text(),
        b.text(),
        s.logs()
    );
    assert_eq!(a.body, b.body);
    let replays = [&a, &b]
        .iter()
        .filter(|r| r.header("x-idempotent-replay") == Some("true"))
        .count();
    assert_eq!(replays, 1, "one answer is the other's replay");
    assert_eq!(revision(&s, &auth, &probe, "race").await, 1);

    // The key belongs to its install: another install of the tenant, and
    // the same extension installed for another tenant, run it afresh.
    let second = install_probe(&s, "com.annex.e2e.idem.second").await;
    let r = put_ok(&s, &auth, &second, "once", Some("order-1"), b"v1").await;
    assert_eq!(r.header("x-idempotent-replay"), None);
    assert_eq!(revision(&s, &auth, &second, "once").await, 1);
    let _theirs = s.install_for(OTHER_TENANT, &probe.registry_id).await;
    let their_auth = s.bearer(&json!({"tenant": OTHER_TENANT}));
    let r = assert_eventually!(
        Duration::from_secs(10),
        async || {
            put(&s, &their_auth, &probe, "once", "", Some("order-1"), b"v1")
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
        "the other tenant's install to answer:\n{}",
        s.logs()
    );
    assert_eq!(r.header("x-idempotent-replay"), None);
    assert_eq!(r.json()["ok"]["revision"], 1, "{}", r.text());
    // Still replayed for the first install.
    let again = put_ok(&s, &auth, &probe, "once", Some("order-1"), b"v1").await;
    assert_eq!(again.header("x-idempotent-replay"), Some("true"));
    assert_eq!(revision(&s, &auth, &probe, "once").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_call_leaves_the_keyed_call_to_the_other_worker() {
    let _serial = SERIAL.lock().await;
    let mut s = stack().await;
    let auth = s.bearer(&json!({}));
    let probe = install_probe(&s, "com.annex.e2e.idem.kill").await;
    // Waits 4 s before it writes: the worker running it is killed while it waits.
    let slow = "&sleep_ms=4000";

    let call = {
        let (edge, auth, path) = (
            s.edge.http,
            auth.clone(),
            format!(
                "/api/ext/{}/storage/put?ns=idem&key=slow{slow}",
                probe.registry_id
            ),
        );
        tokio::spawn(async move {
            try_send(
                edge,
                "POST",
                &path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/octet-stream"),
                    ("x-idempotency-key", "slow-1"),
                ],
                b"v",
            )
            .await
        })
    };
    let victim = assert_eventually!(
        Duration::from_secs(10),
        async || {
            for i in 0..s.workers.len() {
                if s.worker_stats(i).await.in_flight > 0 {
                    return Some(i);
                }
            }
            None
        },
        "the slow call to run on a worker:\n{}",
        s.logs()
    );
    let survivor = 1 - victim;
    s.workers[victim].proc.kill().await;

    // The edge repeats the call on the other worker, which waits for the
    // dead one's lease to lapse and takes the call over. Should the answer
    // still be a refusal to retry (the lease outlived the call's deadline),
    // the client repeats it with the same key, as a client would.
    let first = call
        .await
        .unwrap_or_else(|e| panic!("call: {e}"))
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs()));
    println!(
        "killed worker {victim}; the edge answered {} {}",
        first.status,
        first.text()
    );
    let answer = if first.status == 200 {
        first
    } else {
        assert!(
            matches!(first.status, 409 | 503),
            "a refusal to retry, not {}: {}\n{}",
            first.status,
            first.text(),
            s.logs()
        );
        assert_eventually!(
            Duration::from_secs(30),
            async || {
                put(&s, &auth, &probe, "slow", slow, Some("slow-1"), b"v")
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
            },
            "the repeated call to answer 200:\n{}",
            s.logs()
        )
    };
    assert_eq!(answer.json()["ok"]["revision"], 1, "{}", answer.text());
    assert_eq!(
        revision(&s, &auth, &probe, "slow").await,
        1,
        "it ran to its write once"
    );
    // The survivor found the record held, waited, and took the call over.
    assert!(
        idempotent_calls(&s, survivor, "waited").await >= 1,
        "{}",
        s.logs()
    );
    assert!(idempotent_calls(&s, survivor, "claimed").await >= 1);
    // And the key now replays.
    let again = put(&s, &auth, &probe, "slow", slow, Some("slow-1"), b"v")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("x-idempotent-replay"), Some("true"));
    assert_eq!(again.body, answer.body);
}
