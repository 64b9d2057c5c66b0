//! Test support (feature `testing`): a runner API on `127.0.0.1:0` over a
//! fresh executor (the tests' small pool), configured by the same flags
//! and environment-variable names as the binary. Tests put Alga's bundle
//! store and host application behind their own stub servers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use annex_bundle::TrustBundle;
use clap::Parser as _;

use super::{Parts, RunnerApi, RunnerApiConfig};
use crate::backend::NoHostBackend;
use crate::bundles::{NoBundleSource, TrustSource};
use crate::execute::Executor;
use crate::metrics::Metrics;
use crate::server::{self, Sources};
use crate::testing::test_settings;
use crate::trust::StaticTrust;

#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    api: RunnerApiConfig,
}

/// A runner API serving on a local port.
pub struct TestRunnerApi {
    pub addr: SocketAddr,
    pub executor: Arc<Executor>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestRunnerApi {
    /// Starts the API with `flags` (`--runner-api-listen` is implied and
    /// the port chosen here); `trust` as the worker's trust keys.
    pub async fn start(
        flags: &[String],
        trust: Option<Arc<TrustBundle>>,
        cache_dir: Option<PathBuf>,
    ) -> TestRunnerApi {
        let args = [
            "runner".to_string(),
            "--runner-api-listen=127.0.0.1:0".into(),
        ];
        let config = Flags::try_parse_from(args.iter().chain(flags))
            .unwrap_or_else(|e| panic!("runner API flags: {e}"))
            .api;
        let settings = config
            .settings()
            .unwrap_or_else(|e| panic!("runner API settings: {e}"))
            .unwrap_or_else(|| panic!("runner API is off"));
        let keys = Arc::new(StaticTrust(trust.clone().unwrap_or_default()));
        let sources = Sources {
            backend: Arc::new(NoHostBackend),
            bundles: Arc::new(NoBundleSource),
            trust: keys.clone(),
        };
        let executor = server::build(
            &test_settings(cache_dir.clone()),
            sources,
            Metrics::unregistered(),
        )
        .unwrap_or_else(|e| panic!("build worker: {e:#}"));
        let parts = Parts {
            executor: executor.clone(),
            trust: trust.map(|_| keys as Arc<dyn TrustSource>),
            cache_dir,
        };
        let api = Arc::new(
            RunnerApi::new(&settings, parts, None).unwrap_or_else(|e| panic!("runner API: {e:#}")),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            if let Err(e) = super::serve(api, &settings, listener, stopped).await {
                panic!("runner API failed: {e:#}");
            }
        });
        TestRunnerApi {
            addr,
            executor,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// `http://127.0.0.1:<port>` (`https` when serving TLS).
    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}
