//! Gradual rollouts against the real binaries (docs/design/rollouts.md).
//! One extension, `com.annex.e2e.rollout`, is published twice: 1.0.0 is the
//! hello guest (every GET answers `{"message":"hello",…}`) and 1.1.0 the
//! misbehave guest (`/panic` traps, any other path answers `fine`), so
//! every answer says which version served it.
//!
//! - a 90/10 split over 10,000 distinct sticky keys lands within ±2 points,
//!   every key and every user stays on one version, and the split holds
//!   (same keys, same versions, no failures) while the control plane is down;
//! - a canary that traps on every call is rolled back by the evaluator (two
//!   control-plane replicas evaluate; one acts), the reason is recorded, and
//!   after the rollback bound no call reaches it;
//! - a healthy canary is promoted on its schedule.
//!
//! Figures (split, rollback time) are printed, never asserted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annex_e2e::http::try_send;
use annex_e2e::stack::{Installed, PUBLISHER, TENANT};
use annex_e2e::{FleetOptions, Stack, StackOptions};
use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::{assert_eventually, eventually};

const NAME: &str = "com.annex.e2e.rollout";
/// Calls in flight at once while measuring the split.
const CONCURRENCY: usize = 16;
/// The rollback bound the design states: one evaluator tick (1 s) plus
/// the audit flush (200 ms), a routing snapshot (500 ms) and a resolve.
/// Tests wait far longer than that before asserting nothing reaches the
/// canary.
const ROLLBACK_DEADLINE: Duration = Duration::from_secs(30);

fn manifest(version: &str) -> serde_json::Value {
    serde_json::json!({
        "name": NAME, "publisher": PUBLISHER, "version": version,
        "runtime": "wasm-rust@1", "capabilities": [],
        "api": {"endpoints": [
            {"method": "GET", "path": "/who", "handler": "dist/main"},
            {"method": "GET", "path": "/panic", "handler": "dist/main"}
        ]}
    })
}

/// 1.0.0 (hello) installed for the test tenant, 1.1.0 (misbehave) published.
async fn two_versions(s: &Stack) -> Installed {
    let hello = std::fs::read(annex_worker::testing::guest("hello"))
        .unwrap_or_else(|e| panic!("hello: {e}"));
    let misbehave = std::fs::read(annex_worker::testing::guest("misbehave"))
        .unwrap_or_else(|e| panic!("misbehave: {e}"));
    let installed = s.publish_and_install(&manifest("1.0.0"), &hello).await;
    s.publish(&manifest("1.1.0"), &misbehave).await;
    installed
}

async fn installs(s: &Stack) -> pb::installs_client::InstallsClient<tonic::transport::Channel> {
    pb::installs_client::InstallsClient::new(s.channel(Role::Operator).await)
}

fn install_ref(ext: &Installed) -> pb::InstallRef {
    pb::InstallRef {
        tenant_id: TENANT.into(),
        extension: ext.install_id.clone(),
    }
}

/// Starts a rollout to 1.1.0 with `steps` of (percent × 100, hold seconds).
async fn start(
    s: &Stack,
    ext: &Installed,
    steps: &[(u32, u64)],
    max_error_rate: f64,
    min_calls: u32,
) -> pb::Rollout {
    installs(s)
        .await
        .start_rollout(pb::StartRolloutRequest {
            install: Some(install_ref(ext)),
            versions: vec!["1.1.0".into()],
            policy: Some(pb::RolloutPolicy {
                steps: steps
                    .iter()
                    .map(|(w, hold)| pb::RolloutStep {
                        weights: vec![*w],
                        hold_secs: *hold,
                    })
                    .collect(),
                max_error_rate,
                max_p99_ms: 0,
                min_calls,
            }),
            disable_missing_schedules: false,
        })
        .await
        .unwrap_or_else(|e| panic!("starting the rollout: {e}"))
        .into_inner()
}

async fn rollout(s: &Stack, ext: &Installed) -> pb::Rollout {
    installs(s)
        .await
        .get_rollout(install_ref(ext))
        .await
        .unwrap_or_else(|e| panic!("reading the rollout: {e}"))
        .into_inner()
}

/// Which version answered: `Some("1.0.0")`, `Some("1.1.0")`, or `None` for
/// anything but a 200 from one of them (with the status and body).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Stable,
    Canary,
    Failed(u16, String),
}

async fn call(s: &Stack, auth: &str, ext: &Installed, path: &str, key: Option<&str>) -> Answer {
    call_at(s.edge.http, auth, ext, path, key).await
}

/// As [`call`], through the edge at `edge`.
async fn call_at(
    edge: SocketAddr,
    auth: &str,
    ext: &Installed,
    path: &str,
    key: Option<&str>,
) -> Answer {
    let url = format!("/api/ext/{}{path}", ext.registry_id);
    let mut headers = vec![("authorization", auth)];
    if let Some(k) = key {
        headers.push(("x-annex-rollout-key", k));
    }
    match try_send(edge, "GET", &url, &headers, b"").await {
        Ok(r) if r.status == 200 && r.text().contains("\"message\":\"hello\"") => Answer::Stable,
        Ok(r) if r.status == 200 && r.text().contains("fine") => Answer::Canary,
        Ok(r) => Answer::Failed(r.status, r.text()),
        Err(e) => Answer::Failed(0, e),
    }
}

/// Calls `path` once per key, `CONCURRENCY` at a time; the answers in key order.
async fn call_each(
    s: &Arc<Stack>,
    auth: &str,
    ext: &Installed,
    path: &str,
    keys: &[String],
) -> Vec<Answer> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(CONCURRENCY * 8) {
        let tasks: Vec<_> = chunk
            .chunks(8)
            .map(|part| {
                let (s, auth, ext, path) =
                    (s.clone(), auth.to_owned(), ext.clone(), path.to_owned());
                let part = part.to_vec();
                tokio::spawn(async move {
                    let mut answers = Vec::with_capacity(part.len());
                    for key in &part {
                        answers.push(call(&s, &auth, &ext, &path, Some(key)).await);
                    }
                    answers
                })
            })
            .collect();
        for t in tasks {
            out.extend(t.await.unwrap_or_else(|e| panic!("caller: {e}")));
        }
    }
    out
}

/// Whether a failure says nothing about the version: the edge could not be
/// reached, the call timed out on a loaded machine, or the component was
/// still compiling.
fn transient(a: &Answer) -> bool {
    matches!(a, Answer::Failed(0 | 504, _))
        || matches!(a, Answer::Failed(503, body) if body.contains("component_compiling"))
}

/// Calls each key whose answer was transient again (up to three times);
/// returns how many calls were repeated.
async fn settle(
    s: &Stack,
    auth: &str,
    ext: &Installed,
    path: &str,
    keys: &[String],
    answers: &mut [Answer],
) -> usize {
    let mut repeated = 0;
    for (key, answer) in keys.iter().zip(answers.iter_mut()) {
        for _ in 0..3 {
            if !transient(answer) {
                break;
            }
            repeated += 1;
            *answer = call(s, auth, ext, path, Some(key)).await;
        }
    }
    repeated
}

/// `control_planes` replicas, one worker, an edge with `edge_env` and a 10 s
/// execution deadline (thousands of calls on a shared machine must not time
/// out: a timeout says nothing about a rollout).
fn stack(control_planes: usize, edge_env: &[(&str, &str)]) -> StackOptions {
    StackOptions {
        edge_env: std::iter::once(&("ANNEX_EDGE_TIMEOUT_MS", "10000"))
            .chain(edge_env)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        fleet: FleetOptions {
            control_planes,
            workers: 1,
            ..Default::default()
        },
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_90_10_split_is_accurate_sticky_and_holds_while_the_control_plane_is_down() {
    // Cached resolutions expire early in the outage: the edge serves them
    // stale, weights included.
    let s =
        Arc::new(Stack::start_with(stack(1, &[("ANNEX_EDGE_INSTALL_CACHE_TTL_SECS", "2")])).await);
    let ext = two_versions(&s).await;
    let auth = s.bearer(&serde_json::json!({}));
    // 10 % for an hour, never judged (budget: everything).
    let started = start(&s, &ext, &[(1000, 3600)], 1.0, 1_000_000).await;
    assert_eq!(started.state, "active");
    assert_eq!(
        started
            .versions
            .iter()
            .map(|v| v.weight)
            .collect::<Vec<_>>(),
        [9000, 1000]
    );
    // The edge serves the split once a call under some key reaches 1.1.0.
    assert_eventually!(
        Duration::from_secs(30),
        async || {
            let keys: Vec<String> = (0..50).map(|i| format!("probe-{i}")).collect();
            call_each(&s, &auth, &ext, "/who", &keys)
                .await
                .contains(&Answer::Canary)
        },
        "the edge to split calls:\n{}",
        s.logs()
    );

    // 10,000 distinct keys.
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
    let t0 = Instant::now();
    let mut answers = call_each(&s, &auth, &ext, "/who", &keys).await;
    let took = t0.elapsed();
    let repeated = settle(&s, &auth, &ext, "/who", &keys, &mut answers).await;
    let failed: Vec<&Answer> = answers
        .iter()
        .filter(|a| matches!(a, Answer::Failed(..)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} calls failed, first: {:?}",
        failed.len(),
        failed[0]
    );
    let canary = answers.iter().filter(|a| **a == Answer::Canary).count();
    let share = canary as f64 * 100.0 / keys.len() as f64;
    eprintln!(
        "[rollout split] {} calls in {} ms ({repeated} repeated after a timeout): {canary} to the 10 % canary = {share:.2} %",
        keys.len(),
        took.as_millis()
    );
    assert!(
        (8.0..=12.0).contains(&share),
        "the canary got {share:.2} % of 10,000 keys, outside 10 ± 2"
    );

    // Every key stays where it was: 500 keys, three more calls each.
    let sample: Vec<String> = keys.iter().step_by(20).cloned().collect();
    let before: Vec<Answer> = answers.iter().step_by(20).cloned().collect();
    for round in 0..3 {
        let mut again = call_each(&s, &auth, &ext, "/who", &sample).await;
        settle(&s, &auth, &ext, "/who", &sample, &mut again).await;
        assert_eq!(again, before, "round {round}: a key changed versions");
    }
    // Every user (no key header: the session's user id) stays on one version.
    let mut by_user: HashMap<String, Answer> = HashMap::new();
    let mut canary_users = 0;
    for u in 0..60 {
        let user = format!("user-{u}");
        let auth = s.bearer(&serde_json::json!({ "sub": user }));
        let first = call(&s, &auth, &ext, "/who", None).await;
        assert!(!matches!(first, Answer::Failed(..)), "{first:?}");
        for _ in 0..4 {
            assert_eq!(
                call(&s, &auth, &ext, "/who", None).await,
                first,
                "{user} moved"
            );
        }
        canary_users += usize::from(first == Answer::Canary);
        by_user.insert(auth, first);
    }
    eprintln!("[rollout split] {canary_users} of 60 users on the canary");

    // The control plane goes down; the edge keeps the split from its cache.
    let mut s = Arc::try_unwrap(s).unwrap_or_else(|_| panic!("stack still shared"));
    for cp in &mut s.control_planes {
        cp.proc.kill().await;
    }
    let s = Arc::new(s);
    let down = Instant::now();
    let mut rounds = 0;
    // Past the 2 s cache TTL, so answers are served stale. The outage's
    // length is the scenario, hence a time bound rather than a condition.
    while down.elapsed() < Duration::from_secs(6) || rounds < 2 {
        let mut again = call_each(&s, &auth, &ext, "/who", &sample).await;
        settle(&s, &auth, &ext, "/who", &sample, &mut again).await;
        assert_eq!(
            again, before,
            "with the control plane down, a key changed versions or failed"
        );
        for (auth, first) in &by_user {
            assert_eq!(&call(&s, auth, &ext, "/who", None).await, first);
        }
        rounds += 1;
    }
    eprintln!(
        "[rollout split] control plane down {} ms: {rounds} rounds of {} keys and 60 users, all on their versions",
        down.elapsed().as_millis(),
        sample.len()
    );

    // The control plane comes back; a freshly started edge (nothing cached,
    // as after an edge restart) sends every key and user where it was.
    let mut s = Arc::try_unwrap(s).unwrap_or_else(|_| panic!("stack still shared"));
    let dir = s.dir.path().to_owned();
    for cp in &mut s.control_planes {
        Stack::restart(cp, &dir).await;
    }
    let fresh = s.spawn_edge("edge-fresh", &[]).await;
    let edge = fresh.http;
    assert_eventually!(
        Duration::from_secs(30),
        async || !matches!(
            call_at(edge, &auth, &ext, "/who", Some("key-0")).await,
            Answer::Failed(..)
        ),
        "the fresh edge to serve:\n{}",
        s.logs()
    );
    for (key, first) in sample.iter().zip(&before) {
        assert_eq!(
            &call_at(edge, &auth, &ext, "/who", Some(key)).await,
            first,
            "{key} moved on a fresh edge"
        );
    }
    for (auth, first) in &by_user {
        assert_eq!(&call_at(edge, auth, &ext, "/who", None).await, first);
    }
    eprintln!(
        "[rollout split] a fresh edge after the outage: {} keys and 60 users on the same versions",
        sample.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_traps_is_rolled_back_and_no_call_reaches_it_after_the_bound() {
    // Two replicas evaluate the same rollout; the edge follows the first.
    let s = Arc::new(Stack::start_with(stack(2, &[])).await);
    let ext = two_versions(&s).await;
    let auth = s.bearer(&serde_json::json!({}));
    // 10 % canary, judged after 10 calls, 5 points of failure budget.
    start(&s, &ext, &[(1000, 3600)], 0.05, 10).await;
    // Keys calling `/panic` until every call answers 200 for a while.
    let t0 = Instant::now();
    let mut first_trap: Option<Duration> = None;
    let mut last_failure: Option<Duration> = None;
    let mut first_clean: Option<Duration> = None;
    let mut batch = 0;
    let done = eventually(ROLLBACK_DEADLINE * 2, async || {
        let keys: Vec<String> = (0..64).map(|i| format!("trap-{batch}-{i}")).collect();
        batch += 1;
        let sent = t0.elapsed();
        let answers = call_each(&s, &auth, &ext, "/panic", &keys).await;
        let failures = answers
            .iter()
            .filter(|a| matches!(a, Answer::Failed(..)))
            .count();
        if failures > 0 {
            first_trap.get_or_insert(sent);
            last_failure = Some(t0.elapsed());
            first_clean = None;
        } else if first_trap.is_some() {
            first_clean.get_or_insert(sent);
        }
        // Rolled back (state recorded) and a whole batch of fresh keys clean.
        first_trap.is_some() && failures == 0 && rollout(&s, &ext).await.state == "rolled_back"
    })
    .await;
    assert!(
        done.is_ok(),
        "the trapping canary was never rolled back:\n{}",
        s.logs()
    );
    let r = rollout(&s, &ext).await;
    assert_eq!(r.state, "rolled_back");
    assert!(
        r.reason.contains("1.1.0") && r.reason.contains("failure rate"),
        "{}",
        r.reason
    );
    assert!(
        r.versions.iter().all(|v| v.stable || v.weight == 0),
        "{r:?}"
    );
    let rollbacks: Vec<&pb::RolloutEvent> = r
        .history
        .iter()
        .filter(|e| e.action == "rollback")
        .collect();
    assert_eq!(rollbacks.len(), 1, "one replica acted: {:?}", r.history);
    assert_eq!(rollbacks[0].actor, "evaluator");
    let (first, last, clean) = (
        first_trap.unwrap_or_default(),
        last_failure.unwrap_or_default(),
        first_clean.unwrap_or_default(),
    );
    eprintln!(
        "[rollout rollback] batches of 64 fresh keys on /panic: first trapping batch sent at {} ms, \
         last failed call answered at {} ms, first all-200 batch sent at {} ms: \
         weight 0 observed at the edge {}..{} ms after the first trapping batch",
        first.as_millis(),
        last.as_millis(),
        clean.as_millis(),
        last.saturating_sub(first).as_millis(),
        clean.saturating_sub(first).as_millis()
    );

    // The edge counted the canary's failures by arm, with no tenant label.
    let metrics = try_send(s.edge.admin, "GET", "/metrics", &[], b"")
        .await
        .map(|r| r.text())
        .unwrap_or_default();
    let failed = metrics
        .lines()
        .find(|l| {
            l.starts_with("annex_edge_rollout_calls_total")
                && l.contains("arm=\"canary-1\"")
                && l.contains("outcome=\"failed\"")
        })
        .unwrap_or_else(|| panic!("no canary failures in the edge's metrics:\n{metrics}"));
    assert!(!failed.contains("tenant"), "{failed}");
    assert!(
        metrics.lines().any(|l| {
            l.starts_with("annex_edge_rollout_call_duration_seconds_bucket")
                && l.contains("arm=\"stable\"")
        }),
        "{metrics}"
    );

    // After the bound, no call reaches the canary: 1,000 fresh keys all 200.
    let keys: Vec<String> = (0..1000).map(|i| format!("after-{i}")).collect();
    let mut answers = call_each(&s, &auth, &ext, "/panic", &keys).await;
    settle(&s, &auth, &ext, "/panic", &keys, &mut answers).await;
    assert!(
        answers.iter().all(|a| *a == Answer::Stable),
        "a call reached the canary after the rollback: {:?}",
        answers.iter().find(|a| **a != Answer::Stable)
    );
    let keys: Vec<String> = (0..200).map(|i| format!("who-{i}")).collect();
    let mut answers = call_each(&s, &auth, &ext, "/who", &keys).await;
    settle(&s, &auth, &ext, "/who", &keys, &mut answers).await;
    assert!(answers.iter().all(|a| *a == Answer::Stable));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_canary_is_promoted_on_schedule() {
    let s = Arc::new(Stack::start_with(stack(1, &[])).await);
    let ext = two_versions(&s).await;
    let auth = s.bearer(&serde_json::json!({}));
    start(&s, &ext, &[(1000, 2), (5000, 2), (10_000, 2)], 0.05, 5).await;
    let keys: Vec<String> = (0..64).map(|i| format!("healthy-{i}")).collect();
    // Calls keep flowing (all healthy) until the evaluator promotes.
    let promoted = eventually(Duration::from_secs(60), async || {
        let mut answers = call_each(&s, &auth, &ext, "/who", &keys).await;
        settle(&s, &auth, &ext, "/who", &keys, &mut answers).await;
        assert!(
            answers.iter().all(|a| !matches!(a, Answer::Failed(..))),
            "{answers:?}"
        );
        rollout(&s, &ext).await.state == "promoted"
    })
    .await;
    assert!(promoted.is_ok(), "never promoted:\n{}", s.logs());
    let r = rollout(&s, &ext).await;
    let actions: Vec<&str> = r.history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["start", "step", "step", "promote"], "{r:?}");
    let info = installs(&s)
        .await
        .get_install(install_ref(&ext))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(info.version, "1.1.0");
    // Every key now reaches 1.1.0.
    assert_eventually!(
        Duration::from_secs(20),
        async || {
            call_each(&s, &auth, &ext, "/who", &keys)
                .await
                .iter()
                .all(|a| *a == Answer::Canary)
        },
        "every call to reach the promoted version"
    );
}
