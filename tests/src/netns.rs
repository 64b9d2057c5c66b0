//! Running one test inside a private network namespace (loopback only), for
//! tests whose guests try to reach addresses beyond this machine (the cloud
//! metadata address, private ranges): whatever the egress policy lets
//! through finds no route, so no packet ever leaves the host. The test
//! process re-runs itself under `unshare --net` with the one test selected;
//! everything the stack starts (Postgres, control plane, worker, edge) is
//! then inside the namespace too. This module only starts that child
//! process; it must not be used for tests that need the outside network.

use std::process::{Command, Stdio};

/// Set in the child process that runs inside the namespace.
const INSIDE: &str = "ANNEX_E2E_NETNS";

/// Whether this process runs inside the private namespace.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some_and(|v| v == "1")
}

/// Where a test should run.
#[derive(Debug)]
pub enum Isolation {
    /// This process is already inside the namespace: run the test here.
    Inside,
    /// The test ran in a child process inside the namespace and passed.
    RanInside,
    /// No namespace could be made (no `unshare`/`ip`, or not permitted):
    /// run here, without the cases that could send traffic off the host.
    Unavailable(String),
}

/// Runs test `name` of this test binary in a fresh network namespace with
/// only loopback up, unless already inside one. Panics with the child's
/// exit status when the test failed there. Under `CI=true` a namespace that
/// cannot be made is a failure, not a fallback.
pub fn run_isolated(name: &str) -> Isolation {
    if inside() {
        return Isolation::Inside;
    }
    if let Err(why) = available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "a private network namespace is required under CI=true: {why}"
        );
        return Isolation::Unavailable(why);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
    let status = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            r#"ip link set lo up && exec "$@""#,
            "sh",
        ])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("starting {} under unshare: {e}", exe.display()));
    assert!(
        status.success(),
        "{name} failed inside its network namespace ({status}); its output is above"
    );
    Isolation::RanInside
}

/// Whether `unshare --net` and `ip` work here.
fn available() -> Result<(), String> {
    let probe = Command::new("unshare")
        .args(["--net", "--", "ip", "link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if probe.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unshare --net failed ({}): {}",
            probe.status,
            String::from_utf8_lossy(&probe.stderr).trim()
        ))
    }
}
