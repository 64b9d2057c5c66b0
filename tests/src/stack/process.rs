//! The child processes of a stack: the control-plane, worker and edge
//! binaries started with their environment (listeners on free ports, dev
//! PKI files), each logging to its own file, waited for until `/ready`,
//! and stopped, killed or restarted on the same ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use annex_ops::Role;
use annex_testkit::assert_eventually;
use tokio::process::{Child, Command};

use super::{READY_DEADLINE, Stack};
use crate::http::try_send;

/// A running child process and where its log goes.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// `kill -9`, then reaps the process.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM (the process drains and exits on its own).
    pub fn terminate(&self) {
        let pid = self
            .child
            .id()
            .unwrap_or_else(|| panic!("{} already exited", self.name));
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill -TERM {pid}: {e}"));
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for {}: {e}", self.name),
            Err(_) => panic!(
                "{} did not exit within {limit:?}:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }
}

/// A control-plane or worker process, with what it takes to start it again
/// on the same ports.
#[derive(Debug)]
pub struct Member {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// The worker id (empty for control planes).
    pub id: String,
    pub proc: Proc,
    pub(super) bin: &'static str,
    pub(super) env: Vec<(String, String)>,
}

impl Proc {
    /// The process's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

/// An edge process.
#[derive(Debug)]
pub struct EdgeProc {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub proc: Proc,
}

/// A workspace binary: from `ANNEX_E2E_BIN_DIR` when set (e.g. a release
/// build for measurements), else from the target directory this test was
/// built in (next to `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("ANNEX_E2E_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
            exe.parent()
                .and_then(|deps| deps.parent())
                .unwrap_or_else(|| panic!("no target directory above {}", exe.display()))
                .to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`, or scripts/test.sh)",
        path.display()
    );
    path
}

pub(super) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr().unwrap_or_else(|e| panic!("addr: {e}"))
}

/// Starts binary `bin_name` logging to `<dir>/<name>.log` (appended to, so
/// a restarted process keeps its earlier output).
pub(super) fn spawn_as(bin_name: &str, name: &str, dir: &Path, env: &[(String, String)]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("log file: {e}"));
    let err = file.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
    let mut cmd = Command::new(bin(bin_name));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc {
        name: name.to_owned(),
        child,
        log,
    }
}

/// Waits for `/ready` on an admin listener, failing with the process's log
/// (at once if the process exits).
pub(super) async fn wait_ready(proc: &mut Proc, admin: SocketAddr) {
    assert_eventually!(
        READY_DEADLINE,
        async || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("{} exited ({status}):\n{}", proc.name, proc.log_tail());
            }
            try_send(admin, "GET", "/ready", &[], b"")
                .await
                .is_ok_and(|r| r.status == 200)
        },
        "{} to report ready:\n{}",
        proc.name,
        proc.log_tail()
    );
}

pub(super) fn tls_env(prefix: &str, pki: &Path, role: Role) -> Vec<(String, String)> {
    let files = annex_ops::devcerts::role_files(pki, role);
    vec![
        (format!("{prefix}_TLS_CA"), files.ca.display().to_string()),
        (
            format!("{prefix}_TLS_CERT"),
            files.cert.display().to_string(),
        ),
        (format!("{prefix}_TLS_KEY"), files.key.display().to_string()),
    ]
}

pub(super) fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

impl Stack {
    /// Starts another edge on this deployment with extra `ANNEX_EDGE_*` settings.
    pub async fn spawn_edge(&self, name: &'static str, extra: &[(String, String)]) -> EdgeProc {
        spawn_edge_in(
            self.dir.path(),
            &self.pki,
            self.cp_addr,
            &self.jwt_secret_file,
            name,
            extra,
        )
        .await
    }

    /// Starts control plane or worker `m` again on its ports (after a
    /// kill or stop) and waits until it is ready.
    pub async fn restart(m: &mut Member, dir: &Path) {
        if let Ok(None) = m.proc.child.try_wait() {
            panic!("{} is still running", m.proc.name);
        }
        let name = m.proc.name.clone();
        m.proc = spawn_as(m.bin, &name, dir, &m.env);
        wait_ready(&mut m.proc, m.admin).await;
    }
}

pub(super) async fn spawn_edge_in(
    dir: &Path,
    pki: &Path,
    cp_addr: SocketAddr,
    secret: &Path,
    name: &'static str,
    extra: &[(String, String)],
) -> EdgeProc {
    let (http, admin) = (free_addr(), free_addr());
    let ui_dir = dir.join(format!("{name}-ui"));
    let mut vars = env(&[
        ("ANNEX_EDGE_HTTP_LISTEN", http.to_string()),
        ("ANNEX_EDGE_ADMIN_LISTEN", admin.to_string()),
        ("ANNEX_EDGE_CONTROL_PLANE", format!("https://{cp_addr}")),
        ("ANNEX_EDGE_CONTROL_PLANE_SERVER_NAME", "localhost".into()),
        ("ANNEX_EDGE_ID", name.into()),
        (
            "ANNEX_EDGE_JWT_HS256_SECRET_FILE",
            secret.display().to_string(),
        ),
        ("ANNEX_EDGE_SESSION_COOKIE", "annex_session".into()),
        ("ANNEX_EDGE_UI_CACHE_DIR", ui_dir.display().to_string()),
        ("ANNEX_EDGE_MAX_BODY_BYTES", "65536".into()),
        ("ANNEX_EDGE_TIMEOUT_MS", "2000".into()),
        ("ANNEX_EDGE_RATE_CAPACITY", "100000".into()),
        ("ANNEX_EDGE_RATE_REFILL_PER_SEC", "100000".into()),
        ("ANNEX_LOG_FORMAT", "text".into()),
    ]);
    vars.extend(tls_env("ANNEX_EDGE", pki, Role::Edge));
    // Later entries win: a test's settings override the defaults above.
    for (k, v) in extra {
        vars.retain(|(key, _)| key != k);
        vars.push((k.clone(), v.clone()));
    }
    // Each edge gets its own log file name.
    let mut proc = spawn_named(name, dir, &vars);
    wait_ready(&mut proc, admin).await;
    EdgeProc { http, admin, proc }
}

/// An edge process logging to `<dir>/<name>.log`, so each edge's output
/// stays apart (the first is named `edge`).
fn spawn_named(name: &'static str, dir: &Path, vars: &[(String, String)]) -> Proc {
    spawn_as("annex-edge", name, dir, vars)
}
