//! `annex quota set|list|rm` and `annex usage` through the real binary against a real control
//! plane: what each prints, the JSON, and the one-line failures.

mod support;

use support::Stack;

/// `acme.demo` published and installed for tenant `t1`.
fn installed() -> Stack {
    let stack = Stack::start();
    stack.annex(&["keygen", "--out", "keys/acme.pem"]).ok();
    stack
        .annex(&[
            "trust",
            "add",
            "--publisher",
            "acme",
            "--key",
            "keys/acme.pub.pem",
        ])
        .ok();
    stack.write_extension("ext", "1.0.0");
    stack.annex(&["pack", "ext"]).ok();
    stack
        .annex(&["sign", "ext/bundle.tar.zst", "--key", "keys/acme.pem"])
        .ok();
    stack.annex(&["publish", "ext/bundle.tar.zst"]).ok();
    stack.annex_for("t1", &["install", "acme.demo"]).ok();
    stack
}

#[test]
fn quotas_are_set_listed_and_removed_from_the_cli() {
    let stack = installed();
    let tenant = stack
        .annex_for(
            "t1",
            &[
                "--json",
                "quota",
                "set",
                "--max-concurrency",
                "3",
                "--rps",
                "10",
            ],
        )
        .ok()
        .json();
    assert_eq!(tenant["tenant_id"], "t1");
    assert_eq!(tenant["install_id"], serde_json::Value::Null);
    assert_eq!(tenant["max_concurrency"], 3);
    assert_eq!(tenant["requests_per_second"], 10);
    let text = stack
        .annex_for(
            "t1",
            &[
                "quota",
                "set",
                "--extension",
                "acme.demo",
                "--max-concurrency",
                "1",
            ],
        )
        .ok()
        .stdout;
    assert!(
        text.contains("max concurrency 1, requests per second unlimited"),
        "{text}"
    );

    let listed = stack.annex_for("t1", &["quota", "list"]).ok().stdout;
    assert!(listed.contains("MAX CONCURRENCY"), "{listed}");
    assert!(listed.contains("install "), "{listed}");
    let listed = stack
        .annex_for("t1", &["--json", "quota", "list"])
        .ok()
        .json();
    let quotas = listed["quotas"].as_array().expect("quotas");
    assert_eq!(quotas.len(), 2);
    assert_eq!(quotas[0]["install_id"], serde_json::Value::Null);
    assert!(quotas[1]["install_id"].is_string());
    // --all needs no tenant.
    let all = stack
        .annex(&["--json", "quota", "list", "--all"])
        .ok()
        .json();
    assert_eq!(all["quotas"].as_array().map(Vec::len), Some(2));

    stack
        .annex_for("t1", &["quota", "rm", "--extension", "acme.demo"])
        .ok();
    let line = stack
        .annex_for("t1", &["quota", "rm", "--extension", "acme.demo"])
        .fails_with(1);
    assert!(line.starts_with("error: NOT_FOUND: "), "{line}");
    let listed = stack
        .annex_for("t1", &["--json", "quota", "list"])
        .ok()
        .json();
    assert_eq!(listed["quotas"].as_array().map(Vec::len), Some(1));
}

#[test]
fn quota_and_usage_failures_are_one_line() {
    let stack = installed();
    // Nothing to set: a usage error, exit 2.
    let line = stack.annex_for("t1", &["quota", "set"]).fails_with(2);
    assert!(line.contains("--max-concurrency"), "{line}");
    // Zero for both: the control plane refuses, saying how to lift a quota.
    let line = stack
        .annex_for("t1", &["quota", "set", "--max-concurrency", "0"])
        .fails_with(1);
    assert!(line.starts_with("error: INVALID_ARGUMENT: "), "{line}");
    assert!(line.contains("delete it"), "{line}");
    let line = stack
        .annex_for(
            "t1",
            &["quota", "set", "--extension", "acme.nope", "--rps", "5"],
        )
        .fails_with(1);
    assert!(line.starts_with("error: INSTALL_NOT_FOUND: "), "{line}");
    // A negative number is clap's error.
    let line = stack
        .annex_for("t1", &["quota", "set", "--rps", "-1"])
        .fails_with(2);
    assert!(!line.is_empty());

    // Usage: nothing has run here yet; times must be RFC 3339.
    let text = stack.annex_for("t1", &["usage"]).ok().stdout;
    assert!(text.contains("no usage recorded for tenant t1"), "{text}");
    let json = stack
        .annex_for("t1", &["--json", "usage", "acme.demo"])
        .ok()
        .json();
    assert_eq!(json["windows"], serde_json::json!([]));
    let line = stack
        .annex_for("t1", &["usage", "--since", "yesterday"])
        .fails_with(2);
    assert!(line.contains("RFC 3339"), "{line}");
    let line = stack
        .annex_for(
            "t1",
            &[
                "usage",
                "--since",
                "2026-01-02T00:00:00Z",
                "--until",
                "2026-01-01T00:00:00Z",
            ],
        )
        .fails_with(1);
    assert!(line.contains("since must be before until"), "{line}");
}
