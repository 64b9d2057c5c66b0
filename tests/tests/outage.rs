//! A database outage of minutes against the real binaries: with only
//! PostgreSQL stopped (the control plane, the worker and the edge keep
//! running), calls to installed extensions that use no KV or secrets keep
//! succeeding for the whole outage, KV calls fail cleanly (the guest sees
//! its error value at once and answers 503 itself), and once PostgreSQL is
//! back KV works again without restarting anything.
//!
//! Workers used to list the trust keys again on a load once their 10-second
//! cache had passed, so every call failed with `502 bundle_fetch_failed:
//! trust keys unavailable` about 10 s into an outage; now they keep the last
//! good keys (up to `--trust-max-age-secs`) and refresh them in the
//! background.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annex_e2e::http::try_send;
use annex_e2e::stack::{Installed, PUBLISHER};
use annex_e2e::{Stack, StackOptions, eventually_ms};

/// How long PostgreSQL stays down: twelve times the 10-second trust refresh
/// period workers had before (and far past every cache in the path: the
/// edge's install cache is cut to 2 s below), within the 10-minute
/// execution grant the edge serves stale resolutions under.
const OUTAGE: Duration = Duration::from_secs(120);

/// Concurrent callers of the hello extension during the outage.
const CALLERS: usize = 2;

/// What one caller saw: how many calls, and the failed ones as
/// `(ms since the outage began, status, body)`.
#[derive(Debug, Default)]
struct Tally {
    calls: usize,
    failures: Vec<(u128, u16, String)>,
}

/// The probe guest with KV endpoints, installed for the test tenant.
async fn install_kv_probe(s: &Stack) -> Installed {
    let probe = std::fs::read(annex_worker::testing::guest("probe"))
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let manifest = serde_json::json!({
        "name": "com.annex.e2e.outage.kv", "publisher": PUBLISHER, "version": "1.0.0",
        "runtime": "wasm-rust@1", "capabilities": ["cap:storage.kv"],
        "api": {"endpoints": [
            {"method": "POST", "path": "/storage/put", "handler": "dist/main"},
            {"method": "GET", "path": "/storage/get", "handler": "dist/main"}
        ]}
    });
    s.publish_and_install(&manifest, &probe).await
}

/// Calls `path` back to back until `stop` is set.
fn call_until(
    edge: SocketAddr,
    auth: String,
    path: String,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Tally> {
    tokio::spawn(async move {
        let mut tally = Tally::default();
        while !stop.load(Ordering::Relaxed) {
            let r = try_send(edge, "GET", &path, &[("authorization", &auth)], b"").await;
            tally.calls += 1;
            match r {
                Ok(r) if r.status == 200 => {}
                Ok(r) => tally
                    .failures
                    .push((t0.elapsed().as_millis(), r.status, r.text())),
                Err(e) => tally.failures.push((t0.elapsed().as_millis(), 0, e)),
            }
        }
        tally
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_postgres_down_for_minutes_calls_without_kv_succeed_and_kv_fails_cleanly_then_recovers()
 {
    let s = Stack::start_with(StackOptions {
        // Cached install answers expire early in the outage, so the edge
        // serves them stale for most of it.
        edge_env: vec![("ANNEX_EDGE_INSTALL_CACHE_TTL_SECS".into(), "2".into())],
        ..StackOptions::default()
    })
    .await;
    let auth = s.bearer(&serde_json::json!({}));
    let edge = s.edge.http;
    let kv = install_kv_probe(&s).await;
    let kv_path = |query: &str| format!("/api/ext/{}/storage/{query}", kv.registry_id);
    let put = kv_path("put?ns=outage&key=k");
    let stored = eventually_ms(30_000, || async {
        try_send(edge, "POST", &put, &[("authorization", &auth)], b"before")
            .await
            .is_ok_and(|r| r.status == 200 && r.text().contains("\"ok\""))
    })
    .await;
    assert!(stored, "the KV probe never stored a value:\n{}", s.logs());
    let get_kv = kv_path("get?ns=outage&key=k&status_on_err=503");
    let r = try_send(edge, "GET", &get_kv, &[("authorization", &auth)], b"").await;
    assert!(
        r.as_ref().is_ok_and(|r| r.status == 200),
        "{r:?}\n{}",
        s.logs()
    );

    // Only PostgreSQL goes down.
    s.pg.stop()
        .await
        .unwrap_or_else(|e| panic!("stopping postgres: {e}"));
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let hello = format!("/api/ext/{}/hello", s.hello.registry_id);
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| call_until(edge, auth.clone(), hello.clone(), t0, stop.clone()))
        .collect();
    // KV calls during the outage: each must answer 503 from the guest
    // (its storage call failed at once), never hang or fail otherwise.
    let mut kv_calls = 0;
    let mut kv_unclean = Vec::new();
    while t0.elapsed() < OUTAGE {
        match try_send(edge, "GET", &get_kv, &[("authorization", &auth)], b"").await {
            Ok(r) if r.status == 503 && r.text().contains("\"err\":\"internal\"") => {}
            Ok(r) => kv_unclean.push((t0.elapsed().as_millis(), r.status, r.text())),
            Err(e) => kv_unclean.push((t0.elapsed().as_millis(), 0, e)),
        }
        kv_calls += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for caller in callers {
        let t = caller.await.unwrap_or_else(|e| panic!("caller: {e}"));
        tally.calls += t.calls;
        tally.failures.extend(t.failures);
    }
    let outage_ms = t0.elapsed().as_millis();

    // PostgreSQL comes back; KV works again with nothing restarted.
    s.pg.start_again()
        .await
        .unwrap_or_else(|e| panic!("starting postgres again: {e}"));
    let recovered = eventually_ms(30_000, || async {
        try_send(edge, "GET", &get_kv, &[("authorization", &auth)], b"")
            .await
            .is_ok_and(|r| r.status == 200 && r.text().contains("before"))
    })
    .await;
    let after = try_send(edge, "GET", &hello, &[("authorization", &auth)], b"").await;

    eprintln!(
        "postgres down {outage_ms} ms: {} hello calls ({} failed), {kv_calls} KV calls ({} not a clean 503)",
        tally.calls,
        tally.failures.len(),
        kv_unclean.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} calls without KV failed during the outage, first: {:?}\n{}",
        tally.failures.len(),
        tally.calls,
        tally.failures.first(),
        s.logs()
    );
    assert!(
        tally.calls > 100,
        "only {} calls during the outage",
        tally.calls
    );
    assert!(
        kv_unclean.is_empty(),
        "{} of {kv_calls} KV calls did not fail cleanly with 503, first: {:?}\n{}",
        kv_unclean.len(),
        kv_unclean.first(),
        s.logs()
    );
    assert!(recovered, "KV never recovered:\n{}", s.logs());
    assert!(after.is_ok_and(|r| r.status == 200), "{}", s.logs());
}
