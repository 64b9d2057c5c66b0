//! A service started in-process: its `run` future on a task, the shutdown
//! signal that future was given, and waiting for its admin listener to say
//! ready. Shared by the control plane, worker and edge handles so each is
//! started, watched and stopped the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a control plane or worker may take to report ready: a cold
/// debug build on a loaded two-core machine (migrations on a fresh database,
/// a Wasmtime engine) is slow, and a failing start ends the wait early.
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(30);

/// Binds a listener on `127.0.0.1:0`.
pub(crate) async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:0: {e}"))
}

pub(crate) fn local_addr(listener: &tokio::net::TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("reading a listener's address: {e}"))
}

/// A running service task and its shutdown signal.
#[derive(Debug)]
pub(crate) struct Running {
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Spawns `run(shutdown)`, where `shutdown` resolves on [`Running::stop`]
    /// or when this value is dropped.
    pub(crate) fn spawn<F, Fut>(name: &'static str, run: F) -> Running
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        Running {
            name,
            stop: Some(stop),
            task: Some(tokio::spawn(run(shutdown))),
        }
    }

    /// Waits until `GET /ready` on `admin` answers 200; panics with the
    /// service's error if it stops first.
    pub(crate) async fn wait_ready(&mut self, admin: SocketAddr, within: Duration) {
        let name = self.name;
        crate::assert_eventually!(
            within,
            async || {
                self.fail_if_ended().await;
                crate::http::try_send(admin, "GET", "/ready", &[], b"")
                    .await
                    .is_ok_and(|r| r.status == 200)
            },
            "the {name} to report ready on {admin}"
        );
    }

    /// Panics with the service's result if its task has ended.
    async fn fail_if_ended(&mut self) {
        if !self.task.as_ref().is_some_and(JoinHandle::is_finished) {
            return;
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => panic!("the {} stopped before it was ready", self.name),
                Ok(Err(e)) => panic!("the {} failed: {e:#}", self.name),
                Err(e) => panic!("the {} panicked: {e}", self.name),
            }
        }
    }

    /// Signals shutdown and aborts the task: the service is gone at once,
    /// its connections dropped (as if the process were killed).
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub(crate) async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| panic!("the {} panicked: {e}", self.name)),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
