//! A few seconds of the real `annex-loadtest` binary against the real
//! deployment (control plane, worker, edge, Postgres, mTLS): the `hello`
//! scenario through the edge and a closed-loop run of the JSON report, so the
//! harness every BENCHMARKS.md figure comes from keeps working against Annex
//! itself, not only against its own stub. Nothing here asserts on timing.

use annex_e2e::Stack;
use annex_e2e::stack::bin;

fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test]
async fn the_hello_scenario_runs_through_the_edge_without_errors() {
    let s = Stack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("hello.json");
    let token = s.token(&serde_json::json!({}));
    let out = tokio::process::Command::new(bin("annex-loadtest"))
        .args([
            "scenario",
            "hello",
            "--base-url",
            &format!("http://{}", s.edge.http),
            "--extension",
            &s.hello.registry_id,
            "--bearer",
            &token,
            "-c",
            "4",
            "-n",
            "400",
            "--warmup",
            "200ms",
            "--duration",
            "3s",
            "--json",
            json.to_str().expect("utf-8"),
        ])
        .output()
        .await
        .expect("annex-loadtest runs");
    assert!(
        out.status.success(),
        "annex-loadtest failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("JSON report")).expect("JSON");
    assert_eq!(report["output"]["kind"], "runs", "{report:#}");
    let run = &report["output"]["runs"][0];
    let requests = count(&run["requests"]);
    assert!(requests > 0, "{run:#}");
    assert_eq!(count(&run["errors_total"]), 0, "{run:#}\n{}", s.logs());
    assert_eq!(count(&run["statuses"]["200"]), requests, "{run:#}");

    // Every measured call left an audit row (the edge ships them in batches).
    annex_testkit::assert_eventually!(
        std::time::Duration::from_secs(10),
        async || {
            s.audit_rows(&s.hello.registry_id)
                .await
                .iter()
                .filter(|r| r.status == "ok")
                .count() as u64
                >= requests
        },
        "an audit row for every loadtest call"
    );
}
