//! A running `annex dev` (the real binary) in a scratch directory, on free loopback ports,
//! stopped on drop; with `annex` runs against it and deadline polls (the test kit's
//! `assert_eventually!`) for answers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use annex_testkit::assert_eventually;

use super::{Run, run_annex};

pub struct Dev {
    child: Child,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    /// The port of the `--watch` UI page.
    pub ui_port: u16,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

impl Dev {
    /// `annex dev` with `extra` arguments in a new scratch directory.
    pub async fn start(extra: &[String]) -> Dev {
        Dev::start_in(tempfile::tempdir().expect("tempdir"), extra, &[]).await
    }

    /// `annex dev` in `dir` with `extra` arguments and `env` (on top of the test's own
    /// environment, less `ANNEX_*`); waits until it has written `.annex/dev.env`.
    pub async fn start_in(dir: tempfile::TempDir, extra: &[String], env: &[(&str, &str)]) -> Dev {
        let log = std::fs::File::create(dir.path().join("dev.log")).expect("log file");
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_annex"));
        cmd.current_dir(dir.path())
            .args(["dev", "--examples"])
            .arg(examples())
            .args([
                format!("--edge-port={}", ports[0]),
                format!("--control-plane-port={}", ports[1]),
                format!("--worker-port={}", ports[2]),
                format!("--ui-port={}", ports[3]),
            ])
            .args(extra);
        for (key, _) in std::env::vars() {
            if key.starts_with("ANNEX_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn annex dev");
        let mut dev = Dev {
            child,
            dir,
            env: Vec::new(),
            ui_port: ports[3],
        };
        let env_file = dev.dir.path().join(".annex/dev.env");
        // Building the sample guest can take minutes on a cold machine.
        assert_eventually!(
            Duration::from_secs(600),
            async || {
                dev.assert_running();
                env_file.exists()
            },
            "annex dev to start (to write {}):\n{}",
            env_file.display(),
            dev.log()
        );
        let text = std::fs::read_to_string(&env_file).expect("dev.env");
        dev.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        dev
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dev.log")).unwrap_or_default()
    }

    /// Panics with the log if `annex dev` has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("annex dev exited with {status}:\n{}", self.log());
        }
    }

    pub fn var(&self, key: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} missing from dev.env"))
    }

    pub fn annex(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        run_annex(self.dir.path(), args, &env)
    }

    /// `annex call`, retried until the answer satisfies `ok` (installs reach
    /// the worker within a moment).
    pub async fn call_until(&self, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
        self.call_within(Duration::from_secs(30), args, ok).await
    }

    /// [`Dev::call_until`] with a deadline of `limit` (a rebuild can take minutes).
    pub async fn call_within(
        &self,
        limit: Duration,
        args: &[&str],
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = (String::new(), String::new());
        assert_eventually!(
            limit,
            async || {
                let run = self.annex(args);
                if run.code == Some(0) && ok(&run.stdout) {
                    return Some(run.stdout);
                }
                last = (run.stdout, run.stderr);
                None
            },
            "`annex {}` to answer as expected; last:\nstdout: {}\nstderr: {}\nlog:\n{}",
            args.join(" "),
            last.0,
            last.1,
            self.log()
        )
    }

    /// Waits until the log satisfies `ok`, within `limit`.
    pub async fn log_within(&mut self, limit: Duration, what: &str, ok: impl Fn(&str) -> bool) {
        assert_eventually!(
            limit,
            async || {
                self.assert_running();
                ok(&self.log())
            },
            "annex dev to log {what}:\n{}",
            self.log()
        );
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SIGTERM first so the private PostgreSQL cluster is stopped cleanly;
        // SIGKILL when it has not exited 20 s later.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg(&pid).status();
        let child = &mut self.child;
        std::thread::scope(|scope| {
            let (exited_tx, exited) = std::sync::mpsc::channel();
            scope.spawn(move || {
                let _ = child.wait();
                let _ = exited_tx.send(());
            });
            if exited.recv_timeout(Duration::from_secs(20)).is_err() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        });
    }
}

/// One request to 127.0.0.1:`port` through the test kit's raw client; returns the status
/// and the body.
pub async fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let r = annex_testkit::http::send(([127, 0, 0, 1], port).into(), method, path, &[], b"").await;
    (r.status, r.text())
}
