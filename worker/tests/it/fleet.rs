//! Fleet membership against an in-process fake `Fleet` service: register,
//! heartbeats with usage, a prewarm command, a final draining heartbeat.

use std::sync::Arc;
use std::time::Duration;

use annex_proto::pb;
use annex_proto::pb::fleet_server::{Fleet, FleetServer};
use annex_testkit::assert_eventually;
use annex_worker::fleet::{self, Membership};
use annex_worker::testing::Call;
use parking_lot::Mutex;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::support::{publisher, worker};

#[derive(Default)]
struct FakeFleet {
    registered: Mutex<Vec<pb::RegisterWorkerRequest>>,
    heartbeats: Arc<Mutex<Vec<pb::WorkerHeartbeat>>>,
    prewarm: String,
}

#[tonic::async_trait]
impl Fleet for FakeFleet {
    async fn register(
        &self,
        r: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        self.registered.lock().push(r.into_inner());
        Ok(Response::new(pb::RegisterWorkerResponse {
            heartbeat_interval_ms: 100,
        }))
    }

    type HeartbeatStream = ReceiverStream<Result<pb::FleetCommand, Status>>;

    async fn heartbeat(
        &self,
        r: Request<Streaming<pb::WorkerHeartbeat>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let mut incoming = r.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx
            .send(Ok(pb::FleetCommand {
                command: Some(pb::fleet_command::Command::PrewarmContentHash(
                    self.prewarm.clone(),
                )),
            }))
            .await;
        let beats = self.heartbeats.clone();
        tokio::spawn(async move {
            let _keep_open = tx;
            while let Some(Ok(hb)) = incoming.next().await {
                beats.lock().push(hb);
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tokio::test]
async fn registers_heartbeats_prewarms_and_leaves_draining() {
    let (w, _) = worker().await;
    let hello = publisher().publish("hello");
    let fake = Arc::new(FakeFleet {
        prewarm: hello.to_string(),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = FleetServer::from_arc(fake.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_lazy();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let membership = Membership {
        channel,
        executor: w.executor.clone(),
        trust: None,
        advertise: "https://w1:7444".into(),
    };
    let task = tokio::spawn(fleet::run(membership, stop_rx));

    let reg = assert_eventually!(
        Duration::from_secs(10),
        async || { fake.registered.lock().first().cloned() },
        "the worker's registration"
    );
    assert_eq!(reg.worker_id, "test-worker");
    assert_eq!(reg.address, "https://w1:7444");
    assert!(!reg.engine_hash.is_empty());
    // The prewarm command loads the component before any request.
    let executor = w.executor.clone();
    assert_eventually!(
        Duration::from_secs(10),
        async || {
            executor
                .cache()
                .cached_hashes()
                .contains(&hello.to_string())
        },
        "the prewarmed component in the cache"
    );
    // Usage of an execution arrives in a heartbeat.
    w.execute(
        Call::new(&hello, "GET", "/hello")
            .tenant("tenant-u")
            .build(),
    )
    .await;
    let usage = assert_eventually!(
        Duration::from_secs(10),
        async || {
            fake.heartbeats
                .lock()
                .iter()
                .flat_map(|h| h.usage.clone())
                .find(|u| u.tenant_id == "tenant-u")
        },
        "tenant-u's usage in a heartbeat"
    );
    assert_eq!(usage.invocations, 1);
    assert_eq!(usage.registry_id, "ext-1");
    assert!(usage.cpu_us > 0, "CPU time is measured: {usage:?}");
    // Draining, then leaving: the last heartbeat says so.
    w.executor.drain_state().drain();
    let _ = stop_tx.send(true);
    task.await.expect("fleet task");
    let last = fake.heartbeats.lock().last().cloned().expect("heartbeats");
    assert!(last.draining);
    assert!(last.cached_hashes.contains(&hello.to_string()));
}
