//! `annex rollout start|status|promote|abort` through the real binary against a real control
//! plane: what each prints, the JSON, and the one-line failures.

mod support;

use support::Stack;

/// `acme.demo` 1.0.0 installed for tenant `t1`, 1.1.0 published.
fn two_versions() -> Stack {
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
    for (dir, version) in [("v1", "1.0.0"), ("v2", "1.1.0")] {
        stack.write_extension(dir, version);
        stack.annex(&["pack", dir]).ok();
        let bundle = format!("{dir}/bundle.tar.zst");
        stack
            .annex(&["sign", &bundle, "--key", "keys/acme.pem"])
            .ok();
        stack.annex(&["publish", &bundle]).ok();
    }
    stack
        .annex_for("t1", &["install", "acme.demo", "--version", "1.0.0"])
        .ok();
    stack
}

#[test]
fn rollouts_are_started_shown_aborted_and_promoted_from_the_cli() {
    let stack = two_versions();
    let started = stack
        .annex_for(
            "t1",
            &[
                "--json",
                "rollout",
                "start",
                "acme.demo",
                "--to",
                "1.1.0",
                "--steps",
                "10,50@30m,100",
                "--every",
                "1h",
                "--max-error-rate",
                "2.5",
            ],
        )
        .ok()
        .json();
    assert_eq!(started["state"], "active");
    assert_eq!(started["versions"][0]["version"], "1.0.0");
    assert_eq!(started["versions"][0]["stable"], true);
    assert_eq!(started["versions"][0]["weight"], 9000);
    assert_eq!(started["versions"][1]["version"], "1.1.0");
    assert_eq!(started["versions"][1]["weight"], 1000);
    let steps = &started["policy"]["steps"];
    assert_eq!(steps[0]["weights"][0], 1000);
    assert_eq!(steps[0]["hold_secs"], 3600);
    assert_eq!(steps[1]["hold_secs"], 1800);
    assert_eq!(steps[2]["weights"][0], 10_000);
    assert_eq!(started["policy"]["max_error_rate"], 0.025);
    assert_eq!(started["history"][0]["action"], "start");

    let text = stack
        .annex_for("t1", &["rollout", "status", "acme.demo"])
        .ok()
        .stdout;
    for want in [
        "active",
        "1.0.0 (stable)",
        "90.00%",
        "10.00%",
        "1 of 3",
        "start",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }

    // One active rollout per install.
    let line = stack
        .annex_for("t1", &["rollout", "start", "acme.demo", "--to", "1.1.0"])
        .fails_with(1);
    assert!(line.starts_with("error: ROLLOUT_ACTIVE: "), "{line}");

    let aborted = stack
        .annex_for(
            "t1",
            &[
                "--json",
                "rollout",
                "abort",
                "acme.demo",
                "--reason",
                "not today",
            ],
        )
        .ok()
        .json();
    assert_eq!(aborted["state"], "aborted");
    assert_eq!(aborted["reason"], "not today");
    assert_eq!(aborted["versions"][1]["weight"], 0);
    let line = stack
        .annex_for("t1", &["rollout", "abort", "acme.demo"])
        .fails_with(1);
    assert!(line.starts_with("error: ROLLOUT_NOT_FOUND: "), "{line}");

    stack
        .annex_for("t1", &["rollout", "start", "acme.demo", "--to", "1.1.0"])
        .ok();
    let promoted = stack
        .annex_for("t1", &["--json", "rollout", "promote", "acme.demo"])
        .ok()
        .json();
    assert_eq!(promoted["state"], "promoted");
    let history: Vec<&str> = promoted["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(history, ["start", "promote"]);
    let install = stack
        .annex_for("t1", &["--json", "status", "acme.demo"])
        .ok()
        .json();
    assert_eq!(install["version"], "1.1.0");
}

#[test]
fn rollout_failures_are_one_line() {
    let stack = two_versions();
    // Two percentages for one canary: a usage error, exit 2.
    let line = stack
        .annex_for(
            "t1",
            &[
                "rollout",
                "start",
                "acme.demo",
                "--to",
                "1.1.0",
                "--steps",
                "10+5",
            ],
        )
        .fails_with(2);
    assert!(line.contains("canary"), "{line}");
    let line = stack
        .annex_for(
            "t1",
            &[
                "rollout",
                "start",
                "acme.demo",
                "--to",
                "1.1.0",
                "--steps",
                "120",
            ],
        )
        .fails_with(2);
    assert!(line.contains("0 to 100"), "{line}");
    let line = stack
        .annex_for("t1", &["rollout", "start", "acme.demo", "--to", "9.9.9"])
        .fails_with(1);
    assert!(line.starts_with("error: VERSION_NOT_FOUND: "), "{line}");
    let line = stack
        .annex_for("t1", &["rollout", "start", "acme.demo", "--to", "1.0.0"])
        .fails_with(1);
    assert!(line.starts_with("error: INVALID_ARGUMENT: "), "{line}");
    let line = stack
        .annex_for("t1", &["rollout", "status", "acme.demo"])
        .fails_with(1);
    assert!(line.starts_with("error: ROLLOUT_NOT_FOUND: "), "{line}");
    let line = stack
        .annex_for("t1", &["rollout", "promote", "acme.nope"])
        .fails_with(1);
    assert!(line.starts_with("error: INSTALL_NOT_FOUND: "), "{line}");
}
