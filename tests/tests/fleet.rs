//! The fleet with the real binaries: one PostgreSQL, two control planes,
//! three workers and one edge, under a steady bounded load from this test
//! (8 concurrent callers). Kill -9 of a worker, SIGTERM of a worker, kill -9
//! of every control plane, a schedule run by two replicas and placement
//! affinity. Measured figures go to the test's output, and are also kept as
//! sections of a Markdown file when `ANNEX_FLEET_FIGURES` names one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annex_e2e::http::try_send;
use annex_e2e::stack::{Installed, PUBLISHER};
use annex_e2e::{FleetOptions, Stack, StackOptions};
use annex_testkit::assert_eventually;

/// One stack at a time: each runs six processes on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Concurrent callers of the load.
const CALLERS: usize = 8;

async fn fleet(control_plane_env: &[(&str, &str)]) -> Stack {
    fleet_with(control_plane_env, &[]).await
}

async fn fleet_with(control_plane_env: &[(&str, &str)], edge_env: &[(&str, &str)]) -> Stack {
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let stack = Stack::start_with(StackOptions {
        edge_env: pairs(edge_env),
        fleet: FleetOptions {
            control_planes: 2,
            workers: 3,
            control_plane_env: pairs(control_plane_env),
            ..Default::default()
        },
        ..StackOptions::default()
    })
    .await;
    // Every installed bundle is compiled on its placed worker before a test
    // starts measuring.
    for hash in [&stack.hello.content_hash, &stack.misbehave.content_hash] {
        assert_eventually!(
            Duration::from_secs(30),
            async || {
                let mut found = false;
                for i in 0..stack.workers.len() {
                    found |= stack.worker_stats(i).await.cached_hashes.contains(hash);
                }
                found
            },
            "{hash} to be prewarmed:\n{}",
            stack.logs()
        );
    }
    stack
}

/// One request of the load.
#[derive(Debug, Clone)]
struct Sample {
    /// Since the load started.
    start_ms: u64,
    end_ms: u64,
    /// HTTP status; 0 when the edge could not be reached.
    status: u16,
    /// What the request wrote (storage tests), when the guest acknowledged it.
    key: Option<String>,
    body: String,
}

impl Sample {
    fn ok(&self) -> bool {
        self.status == 200
    }
}

/// What one call of the load sends: method, path, body, and the key it
/// writes (if any).
type MakeRequest = dyn Fn(usize, u64) -> (String, String, Vec<u8>, Option<String>) + Send + Sync;

/// A load under way: its callers' task and how many calls have succeeded.
struct Load {
    task: tokio::task::JoinHandle<Vec<Sample>>,
    succeeded: Arc<AtomicUsize>,
}

impl Load {
    /// Waits until `n` calls have succeeded: the load is under way and
    /// reaching a worker.
    async fn under_way(&self, n: usize, s: &Stack) {
        assert_eventually!(
            Duration::from_secs(30),
            async || self.succeeded.load(Ordering::SeqCst) >= n,
            "{n} successful calls of the load:\n{}",
            s.logs()
        );
    }

    /// Every call's sample, once the load has ended.
    async fn samples(self) -> Vec<Sample> {
        self.task.await.unwrap_or_else(|e| panic!("load: {e}"))
    }
}

/// Steady GETs of the hello extension through the edge for `duration`.
fn hello_load(s: &Stack, t0: Instant, duration: Duration) -> Load {
    let path = format!("/api/ext/{}/hello", s.hello.registry_id);
    start_load(
        s.edge.http,
        s.bearer(&serde_json::json!({})),
        t0,
        duration,
        Arc::new(move |_, _| ("GET".to_owned(), path.clone(), Vec::new(), None)),
    )
}

/// `CALLERS` tasks call the edge back to back until `duration` has passed
/// since `t0`.
fn start_load(
    edge: SocketAddr,
    auth: String,
    t0: Instant,
    duration: Duration,
    make: Arc<MakeRequest>,
) -> Load {
    let succeeded = Arc::new(AtomicUsize::new(0));
    let counter = succeeded.clone();
    let task = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for caller in 0..CALLERS {
            let auth = auth.clone();
            let make = make.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let mut n = 0u64;
                while t0.elapsed() < duration {
                    let (method, path, body, key) = make(caller, n);
                    n += 1;
                    let start_ms = t0.elapsed().as_millis() as u64;
                    let resp = try_send(
                        edge,
                        &method,
                        &path,
                        &[
                            ("authorization", &auth),
                            ("content-type", "application/octet-stream"),
                        ],
                        &body,
                    )
                    .await;
                    let end_ms = t0.elapsed().as_millis() as u64;
                    let (status, text) = match resp {
                        Ok(r) => (r.status, r.text()),
                        Err(e) => (0, e),
                    };
                    if status == 200 {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    let acked = status == 200 && text.contains("\"ok\"");
                    out.push(Sample {
                        start_ms,
                        end_ms,
                        status,
                        key: key.filter(|_| acked),
                        body: text,
                    });
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_else(|e| panic!("load task: {e}")));
        }
        all.sort_by_key(|s| s.start_ms);
        all
    });
    Load { task, succeeded }
}

/// In-flight executions a worker must have added up over samples of
/// `Worker.Stats` to count as the one serving the load.
const BUSY: u64 = 20;

/// Index of the worker serving the load: the first whose executions in
/// flight, summed over samples of `Worker.Stats`, reach [`BUSY`].
async fn busiest_worker(s: &Stack) -> usize {
    let mut seen = vec![0u64; s.workers.len()];
    let busiest = assert_eventually!(
        Duration::from_secs(10),
        async || {
            for (i, n) in seen.iter_mut().enumerate() {
                *n += u64::from(s.worker_stats(i).await.in_flight);
            }
            seen.iter().position(|n| *n >= BUSY)
        },
        "a worker with executions in flight:\n{}",
        s.logs()
    );
    println!("in-flight samples per worker: {seen:?}");
    busiest
}

/// Waits until `path` answers 200 through the edge.
async fn wait_callable(s: &Stack, path: &str, method: &str) {
    let auth = s.bearer(&serde_json::json!({}));
    assert_eventually!(
        Duration::from_secs(30),
        async || {
            try_send(s.edge.http, method, path, &[("authorization", &auth)], b"")
                .await
                .is_ok_and(|r| r.status == 200)
        },
        "{method} {path} to answer 200:\n{}",
        s.logs()
    );
}

/// The probe guest with storage, context and scheduler endpoints, under
/// `name` (a fresh name is a fresh content hash).
async fn install_probe(s: &Stack, name: &str) -> Installed {
    let probe = std::fs::read(annex_worker::testing::guest("probe"))
        .unwrap_or_else(|e| panic!("probe: {e}"));
    let endpoints: Vec<serde_json::Value> = [
        ("GET", "/context"),
        ("POST", "/storage/put"),
        ("GET", "/storage/get"),
        ("POST", "/scheduler/create"),
    ]
    .iter()
    .map(|(m, p)| serde_json::json!({"method": m, "path": p, "handler": "dist/main"}))
    .collect();
    let manifest = serde_json::json!({
        "name": name, "publisher": PUBLISHER, "version": "1.0.0", "runtime": "wasm-rust@1",
        "capabilities": ["cap:storage.kv", "cap:scheduler.manage", "cap:context.read"],
        "api": {"endpoints": endpoints}
    });
    s.publish_and_install(&manifest, &probe).await
}

/// Prints `lines` to the test's output and, when `ANNEX_FLEET_FIGURES`
/// names a Markdown file, keeps them there as the section `title`
/// (replacing an earlier section of that title). A test writes nowhere
/// else.
fn record_figures(title: &str, lines: &[String]) {
    for l in lines {
        println!("[{title}] {l}");
    }
    let Some(path) = std::env::var_os("ANNEX_FLEET_FIGURES") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut header = String::new();
    for (i, part) in existing.split("\n## ").enumerate() {
        if i == 0 && !existing.starts_with("## ") {
            header = part.trim_end().to_owned();
            continue;
        }
        let part = part.strip_prefix("## ").unwrap_or(part);
        let (t, body) = part.split_once('\n').unwrap_or((part, ""));
        sections.push((t.trim().to_owned(), body.trim_end().to_owned()));
    }
    if header.is_empty() {
        header = "# Fleet figures\n\nWritten by `tests/tests/fleet.rs` (debug binaries, \
                  2 control planes, 3 workers, 1 edge, 8 concurrent callers, one shared \
                  2-core machine)."
            .to_owned();
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let body = format!(
        "(run at unix {stamp})\n\n{}",
        lines
            .iter()
            .map(|l| format!("- {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    match sections.iter_mut().find(|(t, _)| t == title) {
        Some(s) => s.1 = body,
        None => sections.push((title.to_owned(), body)),
    }
    let mut out = header;
    for (t, b) in sections {
        out.push_str(&format!("\n\n## {t}\n{b}"));
    }
    out.push('\n');
    if let Err(e) = std::fs::write(&path, out) {
        eprintln!("could not write {}: {e}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_worker_fails_only_its_in_flight_calls_and_loses_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let s = fleet(&[]).await;
    let probe = install_probe(&s, "com.annex.e2e.fleet.kill").await;
    let base = format!("/api/ext/{}", probe.registry_id);
    wait_callable(&s, &format!("{base}/context"), "GET").await;

    let t0 = Instant::now();
    let put_base = base.clone();
    let load = start_load(
        s.edge.http,
        s.bearer(&serde_json::json!({})),
        t0,
        Duration::from_secs(8),
        // Writes (POST without an idempotency key) alternate with reads
        // (GET); neither is sent again once under way, so a call in flight
        // on the killed worker fails (keyed calls: tests/tests/idempotency.rs).
        Arc::new(move |caller, n| {
            if n % 2 == 1 {
                return (
                    "GET".to_owned(),
                    format!("{put_base}/context"),
                    Vec::new(),
                    None,
                );
            }
            let key = format!("k-{caller}-{n}");
            (
                "POST".to_owned(),
                format!("{put_base}/storage/put?ns=fleet&key={key}"),
                format!("\"v-{key}\"").into_bytes(),
                Some(key),
            )
        }),
    );
    load.under_way(20, &s).await;
    let victim = busiest_worker(&s).await;
    let kill_ms = t0.elapsed().as_millis() as u64;
    let mut s = s;
    s.workers[victim].proc.kill().await;
    // SIGKILL lands somewhere between the two instants: a call started before
    // `killed_ms` may still have been on the worker when it died.
    let killed_ms = t0.elapsed().as_millis() as u64;
    let samples = load.samples().await;

    let failures: Vec<&Sample> = samples.iter().filter(|x| !x.ok()).collect();
    let after_kill_ok: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.ok() && x.start_ms >= kill_ms)
        .collect();
    let first_ok_after = after_kill_ok.iter().map(|x| x.end_ms).min();
    let last_failure = failures.iter().map(|x| x.end_ms).max();
    let figures = vec![
        format!(
            "requests: {} ({} succeeded)",
            samples.len(),
            samples.len() - failures.len()
        ),
        format!("requests failed: {}", failures.len()),
        format!(
            "killed worker {victim} at {kill_ms} ms into the load (kill returned {} ms later)",
            killed_ms - kill_ms
        ),
        format!(
            "ms from kill to last failure: {}",
            last_failure.map_or("none".into(), |f| f.saturating_sub(kill_ms).to_string())
        ),
        format!(
            "ms from kill to first success of a call started after it: {}",
            first_ok_after.map_or("none".into(), |f| f.saturating_sub(kill_ms).to_string())
        ),
    ];
    record_figures("kill -9 of a worker under load", &figures);

    // Failures only among calls in flight on the worker when it died.
    for f in &failures {
        assert!(
            f.start_ms <= killed_ms && f.end_ms >= kill_ms,
            "a call that was not in flight at the kill failed ({}): {f:?}\n{}",
            f.body,
            s.logs()
        );
    }
    assert!(failures.len() <= CALLERS, "{} failures", failures.len());
    // Traffic moved at once: calls started after the kill succeed within 2 s.
    let first =
        first_ok_after.unwrap_or_else(|| panic!("nothing succeeded after the kill:\n{}", s.logs()));
    assert!(
        first - kill_ms <= 2000,
        "first success {} ms after the kill",
        first - kill_ms
    );
    if let Some(last) = last_failure {
        assert!(
            last - kill_ms <= 2000,
            "last failure {} ms after the kill",
            last - kill_ms
        );
    }
    assert!(
        after_kill_ok.len() > 20,
        "only {} calls succeeded after the kill",
        after_kill_ok.len()
    );

    // Every write the guest had acknowledged is readable.
    let acked: Vec<String> = samples.iter().filter_map(|x| x.key.clone()).collect();
    assert!(acked.len() > 25, "only {} acknowledged writes", acked.len());
    let auth = s.bearer(&serde_json::json!({}));
    let missing = Arc::new(parking_lot_free::Missing::default());
    let mut checks = Vec::new();
    for chunk in acked.chunks(acked.len().div_ceil(CALLERS)) {
        let chunk = chunk.to_vec();
        let auth = auth.clone();
        let base = base.clone();
        let missing = missing.clone();
        let edge = s.edge.http;
        checks.push(tokio::spawn(async move {
            for key in chunk {
                let r = try_send(
                    edge,
                    "GET",
                    &format!("{base}/storage/get?ns=fleet&key={key}"),
                    &[("authorization", &auth)],
                    b"",
                )
                .await;
                let found =
                    r.is_ok_and(|r| r.status == 200 && r.text().contains(&format!("v-{key}")));
                if !found {
                    missing.push(key);
                }
            }
        }));
    }
    for c in checks {
        c.await.unwrap_or_else(|e| panic!("check: {e}"));
    }
    let missing = missing.take();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not readable: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    println!(
        "[kill -9 of a worker under load] acknowledged writes verified: {}",
        acked.len()
    );
}

/// A list several tasks append to.
mod parking_lot_free {
    #[derive(Default)]
    pub struct Missing(std::sync::Mutex<Vec<String>>);

    impl Missing {
        pub fn push(&self, key: String) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(key);
        }

        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_a_worker_under_load_fails_no_request() {
    let _serial = SERIAL.lock().await;
    let mut s = fleet(&[]).await;
    let t0 = Instant::now();
    let load = hello_load(&s, t0, Duration::from_secs(8));
    load.under_way(20, &s).await;
    let victim = busiest_worker(&s).await;
    let term_ms = t0.elapsed().as_millis() as u64;
    s.workers[victim].proc.terminate();
    let status = s.workers[victim]
        .proc
        .wait_exit(Duration::from_secs(30))
        .await;
    let exit_ms = t0.elapsed().as_millis() as u64;
    let samples = load.samples().await;
    let failures: Vec<&Sample> = samples.iter().filter(|x| !x.ok()).collect();
    let after_exit = samples.iter().filter(|x| x.start_ms > exit_ms).count();
    record_figures(
        "SIGTERM of a worker under load",
        &[
            format!("requests: {}", samples.len()),
            format!("requests failed: {}", failures.len()),
            format!(
                "SIGTERM at {term_ms} ms; worker exited ({status}) {} ms later",
                exit_ms - term_ms
            ),
            format!("requests started after the worker exited: {after_exit}"),
        ],
    );
    assert!(
        status.success(),
        "the worker exited with {status}:\n{}",
        s.workers[victim].proc.log_tail()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed, first: {:?}\n{}",
        failures.len(),
        failures.first(),
        s.logs()
    );
    assert!(after_exit > 0, "the load ended before the worker exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_every_control_plane_killed_calls_succeed_and_after_a_restart_publishing_works() {
    let _serial = SERIAL.lock().await;
    // Cached install answers expire during the outage: the edge must serve
    // them stale rather than fail.
    let mut s = fleet_with(&[], &[("ANNEX_EDGE_INSTALL_CACHE_TTL_SECS", "2")]).await;
    let t0 = Instant::now();
    let load = hello_load(&s, t0, Duration::from_secs(9));
    load.under_way(20, &s).await;
    let kill_ms = t0.elapsed().as_millis() as u64;
    for cp in &mut s.control_planes {
        cp.proc.kill().await;
    }
    // Down long enough for cached install answers (2 s) to expire and for
    // workers to notice. A sleep on purpose: the outage's length is the
    // scenario under test, not a condition to wait for.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let restart_ms = t0.elapsed().as_millis() as u64;
    let dir = s.dir.path().to_owned();
    for cp in &mut s.control_planes {
        Stack::restart(cp, &dir).await;
    }
    let samples = load.samples().await;
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.start_ms >= kill_ms && x.end_ms <= restart_ms)
        .collect();
    let failures: Vec<&Sample> = samples.iter().filter(|x| !x.ok()).collect();

    // Publishing and installing work again, and the edge and workers use
    // the restarted control planes without being restarted themselves.
    let publish_started = Instant::now();
    let fresh = install_probe(&s, "com.annex.e2e.fleet.after-outage").await;
    wait_callable(
        &s,
        &format!("/api/ext/{}/context", fresh.registry_id),
        "GET",
    )
    .await;
    let fresh_ms = publish_started.elapsed().as_millis();
    for w in &s.workers {
        let log = std::fs::read_to_string(&w.proc.log).unwrap_or_default();
        let registrations = log.matches("registered with the control plane").count();
        assert!(
            registrations >= 2,
            "worker {} did not re-register after the restart:\n{}",
            w.id,
            w.proc.log_tail()
        );
    }
    record_figures(
        "kill -9 of both control planes",
        &[
            format!("requests: {} (failed: {})", samples.len(), failures.len()),
            format!(
                "requests while every control plane was down ({} ms): {} (failed: {})",
                restart_ms - kill_ms,
                during.len(),
                during.iter().filter(|x| !x.ok()).count()
            ),
            format!(
                "after the restart: publish + install + first 200 of the new extension in {fresh_ms} ms"
            ),
        ],
    );
    assert!(
        during.len() > 20,
        "only {} calls while the control planes were down",
        during.len()
    );
    assert!(
        failures.is_empty(),
        "{} calls failed, first: {:?}\n{}",
        failures.len(),
        failures.first(),
        s.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_runs_once_per_period_with_two_control_planes() {
    const PERIOD_MS: u64 = 3000;
    const PERIODS: u64 = 5;
    let _serial = SERIAL.lock().await;
    let s = fleet(&[(
        "ANNEX_CONTROL_PLANE_SCHEDULER_TEST_PERIOD_MS",
        &PERIOD_MS.to_string(),
    )])
    .await;
    let probe = install_probe(&s, "com.annex.e2e.fleet.cron").await;
    let base = format!("/api/ext/{}", probe.registry_id);
    wait_callable(&s, &format!("{base}/context"), "GET").await;
    let auth = s.bearer(&serde_json::json!({}));
    let created = try_send(
        s.edge.http,
        "POST",
        &format!(
            "{base}/scheduler/create?endpoint=GET%20/context&cron=0%20*%20*%20*%20*&name=tick"
        ),
        &[("authorization", &auth)],
        b"",
    )
    .await
    .unwrap_or_else(|e| panic!("create: {e}"));
    let created_at = Instant::now();
    assert!(
        created.status == 200 && created.text().contains("\"success\":true"),
        "{} {}",
        created.status,
        created.text()
    );
    // Read half a period after the last expected run was due. A sleep on
    // purpose: the test counts the runs of a fixed window of periods (exactly
    // one per period), so the window itself is what is under test.
    let wait = Duration::from_millis(PERIOD_MS * PERIODS + PERIOD_MS / 2);
    tokio::time::sleep(wait.saturating_sub(created_at.elapsed())).await;
    let mut runs: Vec<_> = s
        .audit_rows(&probe.registry_id)
        .await
        .into_iter()
        .filter(|r| r.metrics["principal_kind"] == "schedule")
        .collect();
    runs.sort_by_key(|r| r.started_at);
    let gaps: Vec<i64> = runs
        .windows(2)
        .map(|w| (w[1].started_at - w[0].started_at).num_milliseconds())
        .collect();
    let per_replica: Vec<usize> = s
        .control_planes
        .iter()
        .map(|cp| {
            std::fs::read_to_string(&cp.proc.log)
                .unwrap_or_default()
                .matches("schedule ran")
                .count()
        })
        .collect();
    record_figures(
        "schedule with two control planes",
        &[
            format!("period {PERIOD_MS} ms (test-only scale), {PERIODS} periods elapsed"),
            format!("runs logged: {}", runs.len()),
            format!("runs per replica: {per_replica:?}"),
            format!("gaps between runs (ms): {gaps:?}"),
        ],
    );
    assert_eq!(
        runs.len() as u64,
        PERIODS,
        "runs at {:?}\n{}",
        runs.iter().map(|r| r.started_at).collect::<Vec<_>>(),
        s.logs()
    );
    assert!(runs.iter().all(|r| r.status == "ok"), "{runs:?}");
    // No double run: consecutive runs are about a period apart.
    for g in &gaps {
        assert!(
            *g >= (PERIOD_MS / 2) as i64,
            "two runs {g} ms apart: {gaps:?}"
        );
    }
    let mut ids: Vec<_> = runs.iter().map(|r| r.request_id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), runs.len());
    assert_eq!(per_replica.iter().sum::<usize>() as u64, PERIODS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_calls_for_one_extension_compile_it_on_one_worker() {
    let _serial = SERIAL.lock().await;
    let s = fleet(&[]).await;
    let before: u64 = {
        let mut sum = 0;
        for i in 0..s.workers.len() {
            sum += s.worker_stats(i).await.compiles;
        }
        sum
    };
    let probe = install_probe(&s, "com.annex.e2e.fleet.placement").await;
    let path = format!("/api/ext/{}/context", probe.registry_id);
    wait_callable(&s, &path, "GET").await;
    let auth = s.bearer(&serde_json::json!({}));
    // 4 callers × 15 calls: far below a worker's capacity.
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (auth, path, edge) = (auth.clone(), path.clone(), s.edge.http);
        callers.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..15 {
                if try_send(edge, "GET", &path, &[("authorization", &auth)], b"")
                    .await
                    .is_ok_and(|r| r.status == 200)
                {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for c in callers {
        ok += c.await.unwrap_or_else(|e| panic!("caller: {e}"));
    }
    let mut compiles = 0;
    let mut holders = Vec::new();
    for i in 0..s.workers.len() {
        let stats = s.worker_stats(i).await;
        compiles += stats.compiles;
        if stats.cached_hashes.contains(&probe.content_hash) {
            holders.push(stats.worker_id);
        }
    }
    record_figures(
        "placement",
        &[
            format!("60 calls of a fresh extension: {ok} succeeded"),
            format!(
                "compiles across the 3 workers since it was installed: {}",
                compiles - before
            ),
            format!("workers holding it: {holders:?}"),
        ],
    );
    assert_eq!(ok, 60);
    assert_eq!(compiles - before, 1, "compiled on {holders:?}");
    assert_eq!(holders.len(), 1, "{holders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_a_control_plane_and_the_edge_cleanly_under_load() {
    let _serial = SERIAL.lock().await;
    let mut s = fleet(&[]).await;
    let t0 = Instant::now();
    let load = hello_load(&s, t0, Duration::from_secs(5));
    load.under_way(20, &s).await;
    // The second control plane holds heartbeat streams of its workers.
    let cp = &mut s.control_planes[1];
    let term = Instant::now();
    cp.proc.terminate();
    let cp_status = cp.proc.wait_exit(Duration::from_secs(20)).await;
    let cp_ms = term.elapsed().as_millis();
    let samples = load.samples().await;
    let failures = samples.iter().filter(|x| !x.ok()).count();

    // The edge with a call under way (a guest that spins until its
    // timeout): the call gets its answer, then the edge exits.
    let edge = s.edge.http;
    let auth = s.bearer(&serde_json::json!({}));
    let slow = format!("/api/ext/{}/loop", s.misbehave.registry_id);
    let in_flight = tokio::spawn(async move {
        try_send(edge, "GET", &slow, &[("authorization", &auth)], b"").await
    });
    // The call is under way once the guest runs on a worker.
    assert_eventually!(
        Duration::from_secs(10),
        async || s.in_flight().await >= 1,
        "the slow call to run on a worker:\n{}",
        s.logs()
    );
    let term = Instant::now();
    s.edge.proc.terminate();
    let edge_status = s.edge.proc.wait_exit(Duration::from_secs(20)).await;
    let edge_ms = term.elapsed().as_millis();
    let answered = in_flight.await.unwrap_or_else(|e| panic!("call: {e}"));
    record_figures(
        "SIGTERM of a control plane and the edge",
        &[
            format!("control plane exited ({cp_status}) {cp_ms} ms after SIGTERM"),
            format!("requests during it: {} (failed: {failures})", samples.len()),
            format!("edge exited ({edge_status}) {edge_ms} ms after SIGTERM"),
        ],
    );
    assert!(
        cp_status.success(),
        "{}",
        s.control_planes[1].proc.log_tail()
    );
    assert!(edge_status.success(), "{}", s.edge.proc.log_tail());
    assert_eq!(failures, 0, "{}", s.logs());
    // Not a dropped connection: the guest's timeout, answered.
    assert!(
        answered.as_ref().is_ok_and(|r| r.status == 504),
        "the call under way when the edge stopped: {answered:?}"
    );
}
