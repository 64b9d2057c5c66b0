//! Idempotency keys through the edge (docs/design/idempotency.md): with
//! scripted workers, how the edge answers a worker's refusals for a key and
//! a replay, and that a keyed call that broke mid-call is repeated once on
//! another worker while a call without a key is not; with a real control
//! plane and a real worker running the probe guest, that a repeat is
//! replayed without running the guest, a concurrent duplicate waits for the
//! first, a key reused with another body conflicts, and keys are scoped to
//! their install.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use annex_testkit::{Worker, WorkerOptions};
use serde_json::json;
use support::*;

/// The world's scripted worker and a second one, both in the edge's routes.
async fn two_scripted() -> (World, ScriptedWorker, tokio::task::JoinHandle<()>) {
    let w = World::start().await;
    let second = ScriptedWorker::start(&w.cp.ca, "worker-2").await;
    let hb = w.cp.keep_registered(&second.id, second.addr);
    assert_eventually!(
        Duration::from_secs(10),
        async || {
            let r = w.call("GET", "/hello").await;
            r.status == 200 && r.json()["worker"] == "worker-2"
        },
        "the edge to route to worker-2"
    );
    (w, second, hb)
}

fn calls_to(w: &World, second: &ScriptedWorker, path: &str) -> Vec<String> {
    w.worker
        .calls()
        .into_iter()
        .chain(second.calls())
        .filter(|c| c.http.as_ref().is_some_and(|h| h.path == path))
        .map(|c| c.idempotency_key)
        .collect()
}

#[tokio::test]
async fn refusals_for_a_key_reach_the_client_once_and_a_replay_is_marked() {
    let (w, second, _hb) = two_scripted().await;
    for (path, status, code, retry_after) in [
        ("/items/reused", 422, "idempotency_key_reused", None),
        ("/items/busy", 409, "idempotency_in_progress", Some("4")),
        (
            "/items/records-down",
            503,
            "idempotency_unavailable",
            Some("2"),
        ),
    ] {
        let r = w.call("PUT", path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.json(), json!({"error": code}), "{path}");
        assert_eq!(r.header("retry-after"), retry_after, "{path}");
        // Nothing ran, and no other worker was asked: any would answer alike.
        assert_eq!(calls_to(&w, &second, path).len(), 1, "{path}");
    }
    let r = w.call("PUT", "/items/replayed").await;
    assert_eq!((r.status, r.text().as_str()), (201, "stored"));
    assert_eq!(r.header("x-idempotent-replay"), Some("true"));
    let r = w.call("PUT", "/items/1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-idempotent-replay"), None);
    // Audited as errors, with the code.
    assert_eventually!(
        Duration::from_secs(5),
        async || {
            let rows = w.audit_rows().await;
            [
                "idempotency_key_reused",
                "idempotency_in_progress",
                "idempotency_unavailable",
            ]
            .iter()
            .all(|code| {
                rows.iter()
                    .any(|r| r.status == "error" && r.error.as_deref() == Some(code))
            })
        },
        "audit rows of the refusals"
    );
}

#[tokio::test]
async fn a_keyed_call_that_broke_mid_call_is_repeated_once_and_an_unkeyed_one_is_not() {
    let (w, second, _hb) = two_scripted().await;
    w.worker.script.broken.store(true, Ordering::SeqCst);
    second.script.broken.store(true, Ordering::SeqCst);
    // A write whose client sent a key: both workers were asked, with that key.
    let auth = bearer(&token(json!({})));
    let r = w
        .edge
        .send(
            "PUT",
            &format!("/api/ext/{}/items/7", w.ext.registry_id),
            &[("authorization", &auth), ("x-idempotency-key", "order-7")],
            b"",
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    let keys = calls_to(&w, &second, "/items/7");
    assert_eq!(keys, ["order-7", "order-7"]);
    // A write without a key carries none (the edge invents no key, so the
    // write never waits for the control plane): one worker, once.
    let r = w.call("PUT", "/items/9").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(calls_to(&w, &second, "/items/9"), [""]);
    // A read carries none either.
    let r = w.call("GET", "/items/8").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(calls_to(&w, &second, "/items/8").len(), 1);
}

// ---- a real control plane and worker ----

/// The probe guest under `name` for `tenant`, with its storage endpoints.
async fn install_probe(cp: &ControlPlane, name: &str, tenant: &str) -> Installed {
    let component = std::fs::read(annex_worker::testing::guest("probe")).expect("the probe guest");
    let manifest = json!({
        "name": name, "publisher": PUBLISHER, "version": "1.0.0", "runtime": "wasm-rust@1",
        "capabilities": ["cap:storage.kv"],
        "api": {"endpoints": [
            {"method": "POST", "path": "/storage/put", "handler": "dist/main"},
            {"method": "GET", "path": "/storage/get", "handler": "dist/main"}
        ]}
    });
    let bundle = annex_worker::testing::pack(manifest.to_string().as_bytes(), &component);
    cp.publish_and_install(&manifest, &bundle, tenant).await
}

struct Real {
    cp: ControlPlane,
    _worker: Worker,
    edge: Edge,
    auth: String,
}

impl Real {
    async fn start() -> Real {
        let cp = ControlPlane::start().await;
        let worker = Worker::start(&cp, WorkerOptions::default()).await;
        assert_eventually!(
            Duration::from_secs(10),
            async || cp.live_workers().await.is_ok_and(|w| !w.is_empty()),
            "the worker to register"
        );
        let edge = Edge::start(
            &cp,
            EdgeOptions {
                timeout: Duration::from_secs(20),
                ..EdgeOptions::default()
            },
        )
        .await;
        Real {
            cp,
            _worker: worker,
            edge,
            auth: bearer(&token(json!({}))),
        }
    }

    /// `POST .../storage/put?ns=idem&key={record}` with `body`, and the
    /// idempotency key when given.
    async fn put(
        &self,
        ext: &Installed,
        record: &str,
        extra: &str,
        key: Option<&str>,
        body: &[u8],
    ) -> Resp {
        let mut headers = vec![
            ("authorization", self.auth.as_str()),
            ("content-type", "application/octet-stream"),
        ];
        if let Some(k) = key {
            headers.push(("x-idempotency-key", k));
        }
        self.edge
            .send(
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

    /// The stored record's revision: how many times the guest wrote it.
    async fn revision(&self, ext: &Installed, record: &str) -> u64 {
        let r = self
            .edge
            .send(
                "GET",
                &format!(
                    "/api/ext/{}/storage/get?ns=idem&key={record}",
                    ext.registry_id
                ),
                &[("authorization", &self.auth)],
                b"",
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["ok"]["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("no revision in {}", r.text()))
    }
}

#[tokio::test]
async fn a_repeated_key_replays_without_running_the_guest() {
    let s = Real::start().await;
    let probe = install_probe(&s.cp, "idem-replay", TENANT).await;
    let first = s.put(&probe, "r1", "", Some("order-1"), b"v1").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-idempotent-replay"), None);
    assert_eq!(first.json()["ok"]["revision"], 1);
    let again = s.put(&probe, "r1", "", Some("order-1"), b"v1").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("x-idempotent-replay"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("content-type"), first.header("content-type"));
    assert_eq!(s.revision(&probe, "r1").await, 1, "the guest ran once");

    // The same key with another body: refused, nothing runs.
    let other = s.put(&probe, "r1", "", Some("order-1"), b"v2").await;
    assert_eq!(other.status, 422, "{}", other.text());
    assert_eq!(other.json(), json!({"error": "idempotency_key_reused"}));
    assert_eq!(s.revision(&probe, "r1").await, 1);

    // Writes without a key run every time: nothing is kept for them.
    for expected in [2, 3] {
        let r = s.put(&probe, "r1", "", None, b"v1").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-idempotent-replay"), None);
        assert_eq!(r.json()["ok"]["revision"], expected);
    }

    // The key is scoped to its install: the same key on another install runs.
    let second = install_probe(&s.cp, "idem-replay-2", TENANT).await;
    let r = s.put(&second, "r1", "", Some("order-1"), b"v1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-idempotent-replay"), None);
    assert_eq!(s.revision(&second, "r1").await, 1);
}

#[tokio::test]
async fn a_concurrent_duplicate_waits_for_the_first_instead_of_running() {
    let s = Real::start().await;
    let probe = install_probe(&s.cp, "idem-concurrent", TENANT).await;
    // Compiled before the race, so both calls reach the claim together.
    assert_eq!(s.put(&probe, "warm", "", None, b"w").await.status, 200);
    let (a, b) = tokio::join!(
        s.put(&probe, "c1", "&sleep_ms=1500", Some("dup-1"), b"v"),
        s.put(&probe, "c1", "&sleep_ms=1500", Some("dup-1"), b"v"),
    );
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{} / {}",
        a.text(),
        b.text()
    );
    assert_eq!(a.body, b.body);
    let replayed = [&a, &b]
        .iter()
        .filter(|r| r.header("x-idempotent-replay") == Some("true"))
        .count();
    assert_eq!(replayed, 1, "exactly one of the two is the replay");
    assert_eq!(s.revision(&probe, "c1").await, 1, "the guest ran once");
}
