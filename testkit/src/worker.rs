//! A worker in-process: `annex_worker::server::run` on `127.0.0.1:0` with
//! settings parsed from the binary's own flags (as `annex dev` does), its
//! certificate from the control plane's CA, a compiled-component cache in a
//! temporary directory, and the control plane as the source of bundles,
//! trust keys and host services. It registers and heartbeats by itself.
//!
//! It starts the worker only through its `run`; executor-level tests with
//! stub host services use `annex_worker::testing` instead.

use std::net::SocketAddr;

use annex_ops::Role;
use annex_ops::admin::AdminState;
use annex_ops::devcerts::role_files;
use annex_ops::serve::Io;
use clap::Parser as _;

use crate::control_plane::ControlPlane;
use crate::running::{self, Running};

/// What a test may choose about its worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub id: String,
    /// Pooling-allocator instance slots: small, since tests run in parallel,
    /// each worker with its own engine.
    pub pool_instances: u32,
    /// Further `annex-worker` flags, e.g. `--fuel`.
    pub flags: Vec<String>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            id: "test-worker".into(),
            pool_instances: 32,
            flags: Vec::new(),
        }
    }
}

/// A running worker; dropping it stops it.
pub struct Worker {
    pub id: String,
    /// The `Worker` gRPC listener (mTLS; edge and control-plane roles).
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    _dir: tempfile::TempDir,
    running: Running,
}

impl Worker {
    /// Starts a worker of `cp`'s fleet and waits until it reports ready
    /// (registration follows on its own: see [`ControlPlane::live_workers`]).
    pub async fn start(cp: &ControlPlane, opts: WorkerOptions) -> Worker {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let pki = dir.path().join("pki");
        crate::pki::write_dir(&cp.ca, &pki);
        let files = role_files(&pki, Role::Worker);
        let (grpc, admin) = (running::bind().await, running::bind().await);
        let (addr, admin_addr) = (running::local_addr(&grpc), running::local_addr(&admin));
        let mut flags = vec![
            "annex-worker".to_owned(),
            format!("--grpc-listen={addr}"),
            format!("--admin-listen={admin_addr}"),
            format!("--advertise-address={addr}"),
            format!("--worker-id={}", opts.id),
            format!("--control-plane-url={}", cp.url()),
            "--control-plane-name=localhost".to_owned(),
            format!("--tls-ca={}", files.ca.display()),
            format!("--tls-cert={}", files.cert.display()),
            format!("--tls-key={}", files.key.display()),
            format!("--cache-dir={}", dir.path().join("cache").display()),
            format!("--pool-instances={}", opts.pool_instances),
            // One process: no routing snapshot to wait out on shutdown.
            "--drain-propagation-ms=0".to_owned(),
        ];
        flags.extend(opts.flags);
        let settings = annex_worker::config::Config::try_parse_from(&flags)
            .unwrap_or_else(|e| panic!("worker flags {flags:?}: {e}"))
            .settings()
            .unwrap_or_else(|e| panic!("worker settings: {e}"));
        let tls = cp
            .ca
            .issue(Role::Worker, &opts.id)
            .unwrap_or_else(|e| panic!("worker certificate: {e}"));
        let io = Io {
            tls,
            listeners: annex_worker::server::Listeners {
                grpc,
                admin,
                runner_api: None,
            },
            admin: AdminState::new(),
        };
        let mut running = Running::spawn("worker", |shutdown| {
            annex_worker::server::run(settings, io, shutdown)
        });
        running.wait_ready(admin_addr, running::READY_WITHIN).await;
        Worker {
            id: opts.id,
            addr,
            admin_addr,
            _dir: dir,
            running,
        }
    }

    /// Stops at once.
    pub fn stop(&mut self) {
        self.running.stop();
    }

    /// Drains gracefully and returns what `run` returned.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.running.shutdown().await
    }
}
