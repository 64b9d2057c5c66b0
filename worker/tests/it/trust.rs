//! Trust keys from a control plane that fails: a worker keeps serving the
//! extensions it has compiled with the last keys it listed, and never asks
//! the control plane on the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annex_proto::pb;
use annex_proto::pb::trust_server::{Trust, TrustServer};
use annex_worker::backend::NoHostBackend;
use annex_worker::bundles::GrpcTrust;
use annex_worker::server::Sources;
use annex_worker::testing::{Call, TestWorker, test_settings};
use parking_lot::Mutex;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::support::publisher;

/// A control plane's `Trust` service whose database can go away.
#[derive(Default)]
struct FakeTrust {
    keys: Mutex<Vec<pb::PublisherKey>>,
    down: AtomicBool,
    lists: AtomicUsize,
}

/// The fake as a tonic service.
struct Service(Arc<FakeTrust>);

#[tonic::async_trait]
impl Trust for Service {
    async fn add_key(
        &self,
        _: Request<pb::AddKeyRequest>,
    ) -> Result<Response<pb::PublisherKey>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_keys(
        &self,
        _: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let fake = &self.0;
        fake.lists.fetch_add(1, Ordering::SeqCst);
        if fake.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("store unavailable: database down"));
        }
        Ok(Response::new(pb::ListKeysResponse {
            keys: fake.keys.lock().clone(),
            revision: 1,
        }))
    }

    async fn revoke_key(
        &self,
        _: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::PublisherKey>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// The fake, serving on 127.0.0.1, with the test publisher's key, and a
/// channel to it.
async fn fake_trust() -> (Arc<FakeTrust>, tonic::transport::Channel) {
    let fake = Arc::new(FakeTrust::default());
    fake.keys.lock().push(pb::PublisherKey {
        key_id: "k1".into(),
        publisher: "annex".into(),
        public_key: publisher().trust.keys[0].public_key.to_pem(),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = TrustServer::new(Service(fake.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_lazy();
    (fake, channel)
}

async fn worker_trusting(trust: GrpcTrust) -> TestWorker {
    let sources = Sources {
        backend: Arc::new(NoHostBackend),
        bundles: Arc::new(publisher().bundles.clone()),
        trust: Arc::new(trust),
    };
    TestWorker::start_with(test_settings(None), sources).await
}

#[tokio::test]
async fn compiled_extensions_keep_answering_while_the_keys_cannot_be_listed() {
    let (fake, channel) = fake_trust().await;
    // Refreshed every 50 ms: the outage below lasts forty periods.
    let w = worker_trusting(GrpcTrust::new(channel, Duration::from_millis(50))).await;
    let hash = publisher().publish("hello");
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.status, 200, "{:?}", r.error);

    fake.down.store(true, Ordering::SeqCst);
    let lists_before = fake.lists.load(Ordering::SeqCst);
    let outage = Instant::now();
    let mut calls = 0;
    while outage.elapsed() < Duration::from_secs(2) {
        let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
        assert_eq!(
            (r.status, r.error.as_str()),
            (200, ""),
            "call {calls} failed during the outage"
        );
        calls += 1;
    }
    // The keys were asked for in the background meanwhile, and failed.
    assert!(fake.lists.load(Ordering::SeqCst) > lists_before);
    assert!(calls > 0);
}

/// Calls hello until `done` accepts an answer, for at most 20 s.
async fn until(w: &TestWorker, done: impl Fn(&pb::ExecuteResponse) -> bool) -> pb::ExecuteResponse {
    let hash = publisher().publish("hello");
    let mut last = None;
    annex_testkit::assert_eventually!(
        Duration::from_secs(20),
        async || {
            let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
            if done(&r) {
                return Some(r);
            }
            last = Some(r);
            None
        },
        "the expected answer from hello; last answer: {last:?}"
    )
}

#[tokio::test]
async fn keys_older_than_the_maximum_age_stop_loads_until_listed_again() {
    let (fake, channel) = fake_trust().await;
    let trust = GrpcTrust::with_max_age(
        channel,
        Duration::from_millis(50),
        Duration::from_millis(500),
    );
    let w = worker_trusting(trust).await;
    until(&w, |r| r.status == 200).await;
    fake.down.store(true, Ordering::SeqCst);
    let r = until(&w, |r| r.status != 200).await;
    assert_eq!(r.status, 502);
    assert!(
        r.error.starts_with(
            "bundle_fetch_failed: trust keys unavailable: the last trust keys were listed"
        ) && r.error.contains("beyond the limit of 500ms")
            && r.error
                .ends_with("(last listing failed: store unavailable: database down)"),
        "{}",
        r.error
    );
    fake.down.store(false, Ordering::SeqCst);
    until(&w, |r| r.status == 200).await;
}

#[tokio::test]
async fn a_revocation_announced_by_the_control_plane_stops_loads_at_once() {
    let (fake, channel) = fake_trust().await;
    // Without the announcement the keys would be listed again in an hour.
    let trust = Arc::new(GrpcTrust::new(channel, Duration::from_secs(3600)));
    let sources = Sources {
        backend: Arc::new(NoHostBackend),
        bundles: Arc::new(publisher().bundles.clone()),
        trust: trust.clone(),
    };
    let w = TestWorker::start_with(test_settings(None), sources).await;
    until(&w, |r| r.status == 200).await;
    if let Some(key) = fake.keys.lock().first_mut() {
        key.revoked = true;
    }
    trust.refresh_now();
    let r = until(&w, |r| r.status != 200).await;
    assert_eq!(r.status, 502);
    assert!(r.error.contains("revoked"), "{}", r.error);
}

#[tokio::test]
async fn a_key_added_after_the_last_listing_admits_its_bundle_at_once() {
    let (fake, channel) = fake_trust().await;
    let key = fake.keys.lock().pop().expect("the publisher's key");
    // Listed (without the key) at start, next in an hour.
    let w = worker_trusting(GrpcTrust::new(channel, Duration::from_secs(3600))).await;
    annex_testkit::assert_eventually!(
        Duration::from_secs(10),
        async || fake.lists.load(Ordering::SeqCst) > 0,
        "the keys to be listed"
    );
    // The operator trusts the key, then publishes: the first load sees it.
    fake.keys.lock().push(key);
    let hash = publisher().publish("hello");
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!((r.status, r.error.as_str()), (200, ""));
}

#[tokio::test]
async fn a_key_added_just_after_a_relisting_admits_its_bundle_within_the_second() {
    let (fake, channel) = fake_trust().await;
    let key = fake.keys.lock().pop().expect("the publisher's key");
    let w = worker_trusting(GrpcTrust::new(channel, Duration::from_secs(3600))).await;
    annex_testkit::assert_eventually!(
        Duration::from_secs(10),
        async || fake.lists.load(Ordering::SeqCst) > 0,
        "the keys to be listed"
    );
    // Not trusted yet: the load lists the keys once more, and refuses.
    let hash = publisher().publish("hello");
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!(r.status, 502, "{}", r.error);
    let listed = fake.lists.load(Ordering::SeqCst);
    // The operator trusts the key at once: the next load, sooner than a
    // second after that listing, waits for the next one instead of refusing.
    fake.keys.lock().push(key);
    let r = w.execute(Call::new(&hash, "GET", "/hello").build()).await;
    assert_eq!((r.status, r.error.as_str()), (200, ""));
    assert_eq!(
        fake.lists.load(Ordering::SeqCst),
        listed + 1,
        "one more listing"
    );
}
