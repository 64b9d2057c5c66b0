//! Smoke runs of the real `annex-loadtest` binary against in-test stubs: a
//! tiny HTTP server and tonic Worker/Dispatch servers over mTLS. Each run is
//! about a second and bounded in count; nothing asserts on timing, only on
//! counts, errors, refusals and report formats.

mod support;

use std::sync::atomic::Ordering;

use serde_json::Value;
use support::{grpc_stub, http_stub, loadtest, loadtest_json};

/// Short runs: 200 ms warm-up, at most 1 s measured.
const SHORT: &[&str] = &["--warmup", "200ms", "--duration", "1s"];

fn run0(report: &Value) -> &Value {
    assert_eq!(report["output"]["kind"], "runs", "{report:#}");
    &report["output"]["runs"][0]
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test]
async fn closed_loop_http_counts_every_request_without_errors() {
    let (addr, seen) = http_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("out.md");
    let url = format!("http://{addr}/hello");
    let mut args = vec!["http", "--url", &url, "-c", "4", "-n", "300"];
    args.extend(SHORT);
    args.extend(["--markdown", md.to_str().expect("utf-8")]);
    let (run, report) = loadtest_json(dir.path(), &args).await;

    let r = run0(&report);
    let requests = u(&r["requests"]);
    assert!(requests > 0 && requests <= 300, "{r:#}");
    if r["stopped_by"] == "requests" {
        assert_eq!(requests, 300);
    }
    assert_eq!(u(&r["errors_total"]), 0, "{r:#}");
    assert_eq!(u(&r["ok"]), requests);
    assert_eq!(u(&r["statuses"]["200"]), requests);
    assert_eq!(u(&r["latency"]["count"]), requests);
    // The stub saw the measured requests plus the warm-up's.
    assert!(seen.requests.load(Ordering::Relaxed) >= requests);
    assert!(run.stdout.contains("p99.9"), "{}", run.stdout);
    let markdown = std::fs::read_to_string(&md).expect("markdown written");
    assert!(markdown.contains("| run | mode | req/s |"), "{markdown}");
}

#[tokio::test]
async fn open_loop_http_sends_exactly_the_schedule() {
    let (addr, _) = http_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://{addr}/hello");
    let mut args = vec![
        "http", "--url", &url, "--rate", "200", "-c", "8", "-n", "10000",
    ];
    args.extend(SHORT);
    let (_, report) = loadtest_json(dir.path(), &args).await;

    let r = run0(&report);
    assert_eq!(r["mode"]["kind"], "open");
    // 200/s over the 1 s measured window: 200 slots, each sent or counted as backlog.
    assert_eq!(u(&r["requests"]) + u(&r["backlog"]), 200, "{r:#}");
    assert_eq!(u(&r["errors_total"]), 0, "{r:#}");
}

#[tokio::test]
async fn request_bodies_and_headers_reach_the_target() {
    let (addr, _) = http_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://{addr}/echo");
    let mut args = vec![
        "http",
        "--url",
        &url,
        "--body-size",
        "1024",
        "-H",
        "x-expect-len: 1024",
        "-c",
        "2",
        "-n",
        "50",
    ];
    args.extend(SHORT);
    let (_, report) = loadtest_json(dir.path(), &args).await;
    let r = run0(&report);
    assert!(u(&r["requests"]) > 0);
    assert_eq!(u(&r["errors_total"]), 0, "{r:#}");

    // The same request with a wrong expectation fails every time, by status.
    let mut args = vec![
        "http",
        "--url",
        &url,
        "--body-size",
        "10",
        "-H",
        "x-expect-len: 1024",
        "-n",
        "5",
    ];
    args.extend(SHORT);
    let (_, report) = loadtest_json(dir.path(), &args).await;
    let r = run0(&report);
    assert_eq!(u(&r["errors"]["status 400"]), u(&r["requests"]), "{r:#}");
}

#[tokio::test]
async fn non_loopback_targets_are_refused_before_sending() {
    for args in [
        vec!["http", "--url", "http://10.1.2.3:8080/hello", "-n", "1"],
        vec!["http", "--url", "http://example.com/", "-n", "1"],
        vec!["worker", "--url", "https://192.168.0.1:50051", "-n", "1"],
        vec![
            "compare",
            "--a",
            "http://127.0.0.1:1/",
            "--b",
            "http://172.16.0.1/",
        ],
        vec!["cold-start", "--poll", "http://8.8.8.8/"],
        vec!["stub", "--listen", "10.0.0.1:8099"],
    ] {
        let run = loadtest(&args).await;
        assert!(!run.ok, "{args:?} was not refused");
        assert!(
            run.stderr.contains("is not loopback"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn grpc_worker_execute_closed_and_open_loop_over_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let (addr, executed, _) = grpc_stub(&pki, "tenant-1").await;
    let shape = dir.path().join("shape.json");
    std::fs::write(
        &shape,
        r#"{"tenant": "tenant-1", "extension_id": "ext", "install_id": "inst",
            "content_hash": "sha256:00", "method": "POST", "path": "/echo", "body_size": 64,
            "grant": "g", "providers": ["cap:context.read"]}"#,
    )
    .expect("write shape");
    let url = format!("https://{addr}");
    let pki_arg = pki.to_str().expect("utf-8");
    let shape_arg = shape.to_str().expect("utf-8");
    let common = ["--url", &url, "--tls-dir", pki_arg, "--shape", shape_arg];

    let mut closed = vec!["worker", "-c", "4", "-n", "200"];
    closed.extend(common);
    closed.extend(SHORT);
    let (_, report) = loadtest_json(dir.path(), &closed).await;
    let r = run0(&report);
    assert!(u(&r["requests"]) > 0 && u(&r["requests"]) <= 200, "{r:#}");
    assert_eq!(u(&r["errors_total"]), 0, "{r:#}");
    assert!(executed.load(Ordering::Relaxed) >= u(&r["requests"]));

    let mut open = vec!["worker", "--rate", "100", "-n", "1000"];
    open.extend(common);
    open.extend(SHORT);
    let (_, report) = loadtest_json(dir.path(), &open).await;
    let r = run0(&report);
    assert_eq!(u(&r["requests"]) + u(&r["backlog"]), 100, "{r:#}");
    assert_eq!(u(&r["errors_total"]), 0, "{r:#}");

    // A flag overrides the shape: the wrong tenant is answered 403 by the stub.
    let mut wrong = vec!["worker", "--tenant", "someone-else", "-n", "5"];
    wrong.extend(common);
    wrong.extend(SHORT);
    let (_, report) = loadtest_json(dir.path(), &wrong).await;
    let r = run0(&report);
    assert_eq!(u(&r["errors"]["status 403"]), u(&r["requests"]), "{r:#}");
}

#[tokio::test]
async fn grpc_dispatch_execute_reports_annex_error_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let (addr, _, executed) = grpc_stub(&pki, "t").await;
    let url = format!("https://{addr}");
    let pki_arg = pki.to_str().expect("utf-8");
    let mut ok = vec![
        "dispatch",
        "--url",
        &url,
        "--tls-dir",
        pki_arg,
        "--tls-role",
        "operator",
        "--tenant",
        "t",
        "--install-id",
        "inst",
        "-n",
        "100",
    ];
    ok.extend(SHORT);
    let (_, report) = loadtest_json(dir.path(), &ok).await;
    let r = run0(&report);
    assert!(u(&r["requests"]) > 0);
    assert_eq!(u(&r["errors_total"]), 0, "{r:#}");
    assert!(executed.load(Ordering::Relaxed) >= u(&r["requests"]));

    let mut missing = vec!["dispatch", "--url", &url, "--tls-dir", pki_arg, "-n", "5"];
    missing.extend(SHORT);
    let (_, report) = loadtest_json(dir.path(), &missing).await;
    let r = run0(&report);
    assert_eq!(
        u(&r["errors"]["grpc NotFound (INSTALL_NOT_FOUND)"]),
        u(&r["requests"]),
        "{r:#}"
    );
}

#[tokio::test]
async fn compare_alternates_targets_and_prints_the_ratio() {
    let (a, _) = http_stub().await;
    let (b, _) = http_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (url_a, url_b) = (format!("http://{a}/hello"), format!("http://{b}/hello"));
    let (run, report) = loadtest_json(
        dir.path(),
        &[
            "compare",
            "--a",
            &url_a,
            "--b",
            &url_b,
            "--rounds",
            "2",
            "--warmup",
            "100ms",
            "--duration",
            "300ms",
            "-c",
            "2",
            "-n",
            "2000",
        ],
    )
    .await;
    assert!(run.stdout.contains("ratio B/A"), "{}", run.stdout);
    let c = &report["output"];
    assert_eq!(c["kind"], "compare");
    assert_eq!(c["a"]["slices"].as_array().map(Vec::len), Some(2));
    assert_eq!(c["b"]["slices"].as_array().map(Vec::len), Some(2));
    assert!(
        c["ratio_b_over_a"]["rps"].as_f64().is_some_and(|r| r > 0.0),
        "{c:#}"
    );
}

#[tokio::test]
async fn scenario_presets_run_against_an_edge_shaped_stub() {
    let (addr, seen) = http_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("http://{addr}");
    let installs = dir.path().join("installs.txt");
    std::fs::write(
        &installs,
        (0..20).map(|i| format!("inst-{i}\n")).collect::<String>(),
    )
    .expect("write installs");
    let installs_arg = installs.to_str().expect("utf-8");
    for (name, extra) in [
        ("hello", vec![]),
        ("echo-1k", vec![]),
        ("echo-64k", vec![]),
        ("kv-read", vec!["--keys", "10"]),
        ("kv-write", vec![]),
        ("secrets", vec![]),
        ("multi-tenant-zipf", vec!["--installs-file", installs_arg]),
    ] {
        let mut args = vec![
            "scenario",
            name,
            "--base-url",
            &base,
            "--extension",
            "ext-1",
            "-c",
            "4",
            "-n",
            "200",
            "--bearer",
            "token",
        ];
        args.extend(SHORT);
        args.extend(extra);
        let (_, report) = loadtest_json(dir.path(), &args).await;
        let runs = report["output"]["runs"].as_array().expect("runs");
        let measured = runs.last().expect("a run");
        assert_eq!(measured["name"], name);
        assert!(u(&measured["requests"]) > 0, "{name}: {measured:#}");
        for r in runs {
            assert_eq!(u(&r["errors_total"]), 0, "{name}: {r:#}");
        }
        if name == "kv-read" {
            assert_eq!(runs[0]["name"], "kv-read fill");
            assert_eq!(u(&runs[0]["requests"]), 10);
        }
    }
    // Zipf spread the load over more than one install.
    assert!(seen.installs.lock().expect("lock").len() > 2);
}

#[tokio::test]
async fn noisy_neighbour_reports_the_victims_p99_both_ways() {
    let (addr, _) = http_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("http://{addr}");
    let mut args = vec![
        "scenario",
        "noisy-neighbour",
        "--base-url",
        &base,
        "--extension",
        "victim",
        "--flood-extension",
        "flooder",
        "--flood-concurrency",
        "2",
        "-c",
        "2",
        "-n",
        "300",
    ];
    args.extend(SHORT);
    let (run, report) = loadtest_json(dir.path(), &args).await;
    let n = &report["output"];
    assert_eq!(n["kind"], "noisy-neighbour");
    assert_eq!(u(&n["victim_alone"]["errors_total"]), 0, "{n:#}");
    assert_eq!(u(&n["victim_with_flood"]["errors_total"]), 0, "{n:#}");
    // The flood's 504s are its point, not errors.
    assert!(u(&n["flood"]["statuses"]["504"]) > 0, "{n:#}");
    assert!(run.stdout.contains("victim p99"), "{}", run.stdout);
}

#[tokio::test]
async fn cold_start_times_a_started_process_to_the_first_success() {
    let (addr, _) = http_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://{addr}/hello");
    let marker = dir.path().join("step-ran");
    let step = format!("touch {}", marker.display());
    let (run, report) = loadtest_json(
        dir.path(),
        &[
            "cold-start",
            "--poll",
            &url,
            "--start",
            "sleep 30",
            "--step",
            &step,
            "--repeat",
            "2",
        ],
    )
    .await;
    let c = &report["output"];
    assert_eq!(c["kind"], "cold-start");
    assert_eq!(c["runs"].as_array().map(Vec::len), Some(2));
    assert!(c["median_first_success_ms"].as_f64().is_some(), "{c:#}");
    assert!(marker.exists());
    assert!(run.stdout.contains("first success"), "{}", run.stdout);

    // A target that never answers is reported as never, with the last error, and fails.
    let json = dir.path().join("never.json");
    let run = loadtest(&[
        "cold-start",
        "--poll",
        "http://127.0.0.1:1/",
        "--give-up",
        "300ms",
        "--json",
        json.to_str().expect("utf-8"),
    ])
    .await;
    assert!(!run.ok);
    assert!(run.stdout.contains("gave up"), "{}", run.stdout);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    assert!(report["output"]["runs"][0]["first_success_ms"].is_null());
}

#[tokio::test]
async fn scenarios_are_listed() {
    let run = loadtest(&["scenarios"]).await;
    assert!(run.ok);
    for name in [
        "hello",
        "echo-1k",
        "echo-64k",
        "kv-read",
        "kv-write",
        "secrets",
        "multi-tenant-zipf",
        "noisy-neighbour",
        "cold-start",
    ] {
        assert!(run.stdout.contains(name), "{name} missing:\n{}", run.stdout);
    }
}
