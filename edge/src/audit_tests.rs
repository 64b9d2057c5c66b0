//! The shipper against an in-process `Dispatch` service that refuses any
//! batch holding a poisoned row (as the control plane does with a row
//! Postgres cannot store) and can be made unavailable for a while.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use annex_proto::pb;
use parking_lot::Mutex;
use tonic::{Request, Response, Status};

use super::*;

#[derive(Default)]
struct Fake {
    stored: Mutex<Vec<pb::ExecutionRecord>>,
    /// Calls answered UNAVAILABLE before the service starts answering.
    unavailable_first: AtomicUsize,
    calls: AtomicUsize,
}

/// The service over a shared [`Fake`] (the test keeps the other handle).
struct Service(Arc<Fake>);

impl std::ops::Deref for Service {
    type Target = Fake;

    fn deref(&self) -> &Fake {
        &self.0
    }
}

#[tonic::async_trait]
impl pb::dispatch_server::Dispatch for Service {
    type WatchRoutesStream = tokio_stream::Empty<Result<pb::RoutingUpdate, Status>>;

    async fn execute(
        &self,
        _: Request<pb::DispatchExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        Err(Status::unimplemented("execute"))
    }

    async fn watch_routes(
        &self,
        _: Request<pb::WatchRoutesRequest>,
    ) -> Result<Response<Self::WatchRoutesStream>, Status> {
        Err(Status::unimplemented("watch"))
    }

    async fn record_executions(
        &self,
        req: Request<pb::ExecutionRecords>,
    ) -> Result<Response<pb::Empty>, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.unavailable_first.load(Ordering::SeqCst) {
            return Err(Status::unavailable("database restarting"));
        }
        let rows = req.into_inner().records;
        if rows.iter().any(|r| r.error.contains('\0')) {
            return Err(Status::invalid_argument("a value holds a NUL character"));
        }
        self.stored.lock().extend(rows);
        Ok(Response::new(pb::Empty {}))
    }

    async fn authenticate_api_key(
        &self,
        _: Request<pb::AuthenticateApiKeyRequest>,
    ) -> Result<Response<pb::ApiKeyPrincipal>, Status> {
        Err(Status::unimplemented("keys"))
    }
}

async fn serve(fake: Arc<Fake>) -> DispatchClient<Upstream> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::dispatch_server::DispatchServer::new(Service(fake)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_lazy();
    DispatchClient::new(Upstream::from(channel))
}

fn row(i: usize, poisoned: bool) -> pb::ExecutionRecord {
    pb::ExecutionRecord {
        id: format!("row-{i}"),
        error: if poisoned {
            "a\0b".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// Buffers `rows` through a sink, drops it (as the server does at shutdown)
/// and waits for the shipper to finish.
async fn ship_all(fake: &Arc<Fake>, rows: Vec<pb::ExecutionRecord>) -> AuditCounters {
    let settings = AuditSettings {
        buffer: 256,
        batch: 64,
        in_flight: 2,
        flush_interval: Duration::from_millis(20),
    };
    let (sink, rx) = AuditSink::new(settings);
    let counters = AuditCounters::default();
    let shipper = tokio::spawn(ship(
        serve(fake.clone()).await,
        rx,
        settings,
        counters.clone(),
    ));
    for r in rows {
        sink.reserve().expect("slot").record(r);
    }
    drop(sink);
    tokio::time::timeout(Duration::from_secs(30), shipper)
        .await
        .expect("the shipper drains and ends once every sender is gone")
        .expect("shipper");
    counters
}

#[tokio::test]
async fn a_refused_row_is_isolated_and_dropped_and_every_other_row_is_stored() {
    let fake = Arc::new(Fake::default());
    let rows: Vec<_> = (0..150).map(|i| row(i, i == 17 || i == 90)).collect();
    let counters = ship_all(&fake, rows).await;
    let mut stored: Vec<String> = fake.stored.lock().iter().map(|r| r.id.clone()).collect();
    stored.sort();
    let mut want: Vec<String> = (0..150)
        .filter(|i| *i != 17 && *i != 90)
        .map(|i| format!("row-{i}"))
        .collect();
    want.sort();
    assert_eq!(stored, want, "every good row once, no poisoned row");
    assert_eq!(counters.dropped.get(), 2);
}

#[tokio::test]
async fn an_unavailable_control_plane_is_retried_and_nothing_is_dropped() {
    let fake = Arc::new(Fake::default());
    fake.unavailable_first.store(3, Ordering::SeqCst);
    let counters = ship_all(&fake, (0..10).map(|i| row(i, false)).collect()).await;
    assert_eq!(fake.stored.lock().len(), 10);
    assert_eq!(counters.dropped.get(), 0);
    assert!(counters.failures.get() >= 3);
}

#[test]
fn audit_strings_are_safe_for_postgres() {
    assert_eq!(clean("/a\0b"), "/a\\u{0}b");
    assert_eq!(clean("tab\there\u{7f}"), "tab\\u{9}here\\u{7f}");
    assert_eq!(clean("/items/ünïcode ok"), "/items/ünïcode ok");
    let long = "x".repeat(MAX_AUDIT_TEXT + 10);
    assert_eq!(clean(&long).chars().count(), MAX_AUDIT_TEXT + 1);
}
