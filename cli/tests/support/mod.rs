//! Test support for driving the real `annex` binary: a control plane served in-process over
//! mTLS on 127.0.0.1:0 (MemoryStore) with a dev PKI written to a temporary directory, which is
//! also the working directory of every `annex` run.

#![allow(dead_code)]

pub mod dev;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use annex_control_plane::store::MemoryStore;
use annex_control_plane::{HostAppConfig, Limits, Listeners, Sealer, Settings};
use annex_ops::Role;
use annex_ops::admin::AdminState;
use annex_ops::devcerts::{ensure_dir, role_files};
use annex_ops::serve::Io;

/// The smallest valid WebAssembly component: the preamble alone.
pub const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

/// A control plane and a scratch directory holding its PKI.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stack {
    pub fn start() -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        ensure_dir(&pki).expect("dev PKI");
        let tls = role_files(&pki, Role::ControlPlane)
            .load()
            .expect("control-plane certificate");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                annex_ops::tls::install_crypto_provider();
                let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(grpc.local_addr().expect("addr"))
                    .expect("send");
                let settings = Settings {
                    store: Arc::new(MemoryStore::new()),
                    sealer: Sealer::from_bytes(&[7u8; 32]).expect("kek"),
                    limits: Limits {
                        platform_egress_allowlist: vec!["*.example.com".into()],
                        ..Limits::default()
                    },
                    host_app: HostAppConfig::new(),
                };
                let io = Io {
                    tls,
                    listeners: Listeners { grpc, admin },
                    admin: AdminState::new(),
                };
                let shutdown = async move {
                    let _ = stopped.await;
                };
                annex_control_plane::run(settings, io, shutdown)
                    .await
                    .expect("control plane runs");
            });
        });
        let addr = addr_rx.recv().expect("control plane address");
        Stack {
            dir,
            url: format!("https://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs `annex args…` in the scratch directory against this control plane.
    pub fn annex(&self, args: &[&str]) -> Run {
        run_annex(
            self.dir.path(),
            args,
            &[
                ("ANNEX_CONTROL_PLANE_URL", &self.url),
                ("ANNEX_TLS_DIR", "pki"),
            ],
        )
    }

    /// [`Stack::annex`] for `tenant`, passed as `ANNEX_TENANT`.
    pub fn annex_for(&self, tenant: &str, args: &[&str]) -> Run {
        run_annex(
            self.dir.path(),
            args,
            &[
                ("ANNEX_CONTROL_PLANE_URL", &self.url),
                ("ANNEX_TLS_DIR", "pki"),
                ("ANNEX_TENANT", tenant),
            ],
        )
    }

    /// Writes an extension directory `rel` with a manifest for `acme/demo` at `version`.
    pub fn write_extension(&self, rel: &str, version: &str) -> PathBuf {
        let manifest = serde_json::json!({
            "name": "demo",
            "publisher": "acme",
            "version": version,
            "runtime": "wasm-js@1",
            "capabilities": ["cap:http.fetch", "cap:storage.kv"],
            "ui": {"type": "iframe", "entry": "ui/index.html"},
            "api": {"endpoints": [{"method": "GET", "path": "/hello", "handler": "dist/main"}]}
        });
        self.write_extension_with(rel, &serde_json::to_vec_pretty(&manifest).expect("json"))
    }

    pub fn write_extension_with(&self, rel: &str, manifest: &[u8]) -> PathBuf {
        let dir = self.path(rel);
        std::fs::create_dir_all(dir.join("dist")).expect("mkdir");
        std::fs::create_dir_all(dir.join("ui")).expect("mkdir");
        std::fs::write(dir.join("manifest.json"), manifest).expect("manifest");
        std::fs::write(dir.join("dist/main.wasm"), EMPTY_COMPONENT).expect("component");
        std::fs::write(dir.join("ui/index.html"), "<h1>demo</h1>").expect("ui");
        dir
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs the real binary in `cwd` with only the given `ANNEX_*` variables set.
pub fn run_annex(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_annex"));
    cmd.current_dir(cwd).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("ANNEX_") || key == "RUST_BACKTRACE" {
            cmd.env_remove(key);
        }
    }
    // A panic must still print one line, even with backtraces requested.
    cmd.env("RUST_BACKTRACE", "1");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run annex");
    Run {
        args: args.join(" "),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One finished `annex` run.
#[derive(Debug)]
pub struct Run {
    pub args: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0 and returns the run.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "`annex {}` failed:\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts exit `code` with exactly one `error: ` line on stderr, and returns that line.
    pub fn fails_with(self, code: i32) -> String {
        assert_eq!(
            self.code,
            Some(code),
            "`annex {}`: expected exit {code}\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`annex {}` must fail with one line, got:\n{}",
            self.args,
            self.stderr
        );
        let line = lines[0].to_owned();
        assert!(line.starts_with("error: "), "{line}");
        for debris in ["panicked", "Status {", "backtrace", "Error {", "{ code:"] {
            assert!(!line.contains(debris), "debug output leaked: {line}");
        }
        line
    }

    /// `--json` output.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`annex {}` printed no JSON ({e}):\n{}",
                self.args, self.stdout
            )
        })
    }
}
