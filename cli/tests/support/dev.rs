//! A running `annex dev` (the real binary) in a scratch directory, on free loopback ports,
//! stopped on drop; with `annex` runs against it and deadline polls for answers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    pub fn start(extra: &[String]) -> Dev {
        Dev::start_in(tempfile::tempdir().expect("tempdir"), extra, &[])
    }

    /// `annex dev` in `dir` with `extra` arguments and `env` (on top of the test's own
    /// environment, less `ANNEX_*`); waits until it has written `.annex/dev.env`.
    pub fn start_in(dir: tempfile::TempDir, extra: &[String], env: &[(&str, &str)]) -> Dev {
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
        let deadline = Instant::now() + Duration::from_secs(600);
        while !env_file.exists() {
            dev.assert_running();
            assert!(
                Instant::now() < deadline,
                "annex dev did not start:\n{}",
                dev.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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
    pub fn call_until(&self, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
        self.call_within(Duration::from_secs(30), args, ok)
    }

    /// [`Dev::call_until`] with a deadline of `limit` (a rebuild can take minutes).
    pub fn call_within(&self, limit: Duration, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let run = self.annex(args);
            if run.code == Some(0) && ok(&run.stdout) {
                return run.stdout;
            }
            assert!(
                Instant::now() < deadline,
                "`annex {}` never answered as expected:\nstdout: {}\nstderr: {}\nlog:\n{}",
                args.join(" "),
                run.stdout,
                run.stderr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the log satisfies `ok`, within `limit`.
    pub fn log_within(&mut self, limit: Duration, what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(&self.log()) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "annex dev never logged {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SIGTERM first so the private PostgreSQL cluster is stopped cleanly.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`; returns the status and the body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    (status, body.to_owned())
}
