//! A guest attacking the host through what it hands back: thousands of
//! response headers, huge header values, statuses no HTTP stack accepts,
//! a body above every limit, and log floods. Each is refused or capped in
//! the worker, before anything downstream (the gRPC answer, the edge, the
//! worker's own log, the debug stream) has to hold it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use annex_proto::pb;
use annex_testkit::assert_eventually;
use annex_worker::testing::{Call, StubBackend};
use parking_lot::Mutex;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::support::{publisher, worker};

fn outcome(r: &pb::ExecuteResponse) -> pb::Outcome {
    pb::Outcome::try_from(r.outcome).unwrap_or(pb::Outcome::Unspecified)
}

fn misbehave(path: &str) -> Call {
    Call::new(&publisher().publish("misbehave"), "GET", path)
}

#[tokio::test]
async fn a_response_with_thousands_of_headers_is_refused() {
    let (w, _) = worker().await;
    let r = w
        .execute(misbehave("/hostile/headers").query("n", "33000").build())
        .await;
    assert_eq!(outcome(&r), pb::Outcome::Rejected, "{:?}", r.error);
    assert_eq!(r.status, 502);
    assert!(r.headers.is_empty() && r.body.is_none());
    assert_eq!(
        r.error,
        "execute_failed: response refused: 33001 headers, above the limit of 100"
    );
    // At the limit (99 plus content-type) the answer goes through.
    let r = w
        .execute(misbehave("/hostile/headers").query("n", "99").build())
        .await;
    assert_eq!(outcome(&r), pb::Outcome::Ok, "{:?}", r.error);
    assert_eq!(r.headers.len(), 100);
}

#[tokio::test]
async fn a_response_with_huge_header_values_is_refused() {
    let (w, _) = worker().await;
    let r = w
        .execute(
            misbehave("/hostile/headers")
                .query("n", "10")
                .query("bytes", "8000")
                .build(),
        )
        .await;
    assert_eq!(outcome(&r), pb::Outcome::Rejected, "{:?}", r.error);
    assert_eq!(r.status, 502);
    assert!(
        r.error.starts_with("execute_failed: response refused: ")
            && r.error
                .ends_with("bytes of headers, above the limit of 65536"),
        "{}",
        r.error
    );
}

#[tokio::test]
async fn statuses_outside_http_are_refused() {
    let (w, _) = worker().await;
    for code in ["1000", "99", "65535", "600"] {
        let r = w
            .execute(misbehave("/hostile/status").query("code", code).build())
            .await;
        assert_eq!(outcome(&r), pb::Outcome::Rejected, "{code}: {:?}", r.error);
        assert_eq!(r.status, 502, "{code}");
        assert_eq!(
            r.error,
            format!("execute_failed: response refused: status {code} is not an HTTP status"),
        );
    }
    // 0 is Alga's "unset" (the proxy path answers 200 for it); 100..=599 pass.
    for code in [0, 100, 599] {
        let r = w
            .execute(
                misbehave("/hostile/status")
                    .query("code", &code.to_string())
                    .build(),
            )
            .await;
        assert_eq!(outcome(&r), pb::Outcome::Ok, "{code}: {:?}", r.error);
        assert_eq!(r.status, code);
    }
}

#[tokio::test]
async fn no_request_lifts_the_response_body_ceiling() {
    let (w, _) = worker().await;
    let r = w
        .execute(
            misbehave("/giant")
                .query("mb", "40")
                .max_response_bytes(u64::MAX)
                .build(),
        )
        .await;
    assert_eq!(outcome(&r), pb::Outcome::Rejected, "{:?}", r.error);
    assert!(r.body.is_none());
    assert_eq!(
        r.error,
        "execute_failed: response body of 41943040 bytes exceeds the limit of 33554432 bytes"
    );
}

/// `target: "ext"` events the worker wrote to its own log, per tenant:
/// how many and how many message bytes.
#[derive(Default)]
struct ExtEvents(Mutex<HashMap<String, (usize, usize)>>);

impl ExtEvents {
    fn of(&self, tenant: &str) -> (usize, usize) {
        self.0.lock().get(tenant).copied().unwrap_or_default()
    }
}

#[derive(Default)]
struct Fields {
    tenant: String,
    message: usize,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "tenant" => self.tenant = format!("{value:?}"),
            "message" => self.message = format!("{value:?}").len(),
            _ => {}
        }
    }
}

struct Counting(Arc<ExtEvents>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Counting {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "ext" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut all = self.0.0.lock();
        let entry = all.entry(fields.tenant).or_default();
        entry.0 += 1;
        entry.1 += fields.message;
    }
}

/// The process-wide subscriber counting guest log lines (installed once).
fn ext_events() -> Arc<ExtEvents> {
    static EVENTS: OnceLock<Arc<ExtEvents>> = OnceLock::new();
    EVENTS
        .get_or_init(|| {
            let events = Arc::new(ExtEvents::default());
            let subscriber = tracing_subscriber::registry().with(Counting(events.clone()));
            tracing::subscriber::set_global_default(subscriber)
                .unwrap_or_else(|e| panic!("installing the counting subscriber: {e}"));
            events
        })
        .clone()
}

#[tokio::test]
async fn a_log_flood_is_capped_before_the_worker_writes_it() {
    let events = ext_events();
    let (w, backend) = worker().await;
    // 5,000 lines of 8 KiB: 39 MiB written to the worker's log in a
    // quarter of a second before the caps were checked first.
    let r = w
        .execute(
            misbehave("/hostile/logflood")
                .tenant("tenant-logflood")
                .query("n", "5000")
                .build(),
        )
        .await;
    assert_eq!(outcome(&r), pb::Outcome::Ok, "{:?}", r.error);
    let notice = assert_eventually!(
        Duration::from_secs(5),
        async || backend.logs_containing("log truncated").pop(),
        "the log-truncated notice"
    );
    assert_eq!(notice.stream, "system");
    let (lines, bytes) = events.of("tenant-logflood");
    assert!(lines <= 256, "{lines} guest lines reached the worker's log");
    assert!(
        bytes <= 300 * 1024,
        "{bytes} bytes of guest lines reached the worker's log"
    );
    let published = backend
        .logs
        .lock()
        .iter()
        .filter(|e| e.tenant_id == "tenant-logflood")
        .count();
    assert!(published <= 256, "{published} events published");
    assert_eq!(backend.logs_containing("log truncated").len(), 1);
}

#[tokio::test]
async fn a_stdout_flood_is_capped_like_log_calls() {
    let events = ext_events();
    let (w, backend) = worker().await;
    let r = w
        .execute(
            misbehave("/hostile/printflood")
                .tenant("tenant-printflood")
                .build(),
        )
        .await;
    assert_eq!(outcome(&r), pb::Outcome::Ok, "{:?}", r.error);
    assert_eventually!(
        Duration::from_secs(5),
        async || {
            backend
                .logs_containing("log truncated")
                .into_iter()
                .find(|e| e.tenant_id == "tenant-printflood")
        },
        "tenant-printflood's log-truncated notice"
    );
    let (lines, _) = events.of("tenant-printflood");
    assert!(
        lines <= 256,
        "{lines} stdout lines reached the worker's log"
    );
}

#[tokio::test]
async fn log_shipping_to_a_hung_control_plane_stays_one_bounded_queue() {
    // A control plane that takes every log batch and never answers.
    let backend = Arc::new(StubBackend {
        logs_hang: true,
        ..Default::default()
    });
    let w = annex_worker::testing::TestWorker::start(
        annex_worker::testing::test_settings(Some(crate::support::tmp_dir("worker-cache"))),
        publisher(),
        Some(backend.clone()),
    )
    .await;
    let hash = publisher().publish("misbehave");
    // Every execution logs; none may wait for the hung control plane.
    for _ in 0..20 {
        let r = w.execute(Call::new(&hash, "GET", "/stdout").build()).await;
        assert_eq!(outcome(&r), pb::Outcome::Ok, "{:?}", r.error);
    }
    assert_eventually!(
        Duration::from_secs(5),
        async || backend.log_calls.load(Ordering::SeqCst) >= 1,
        "a log publish to reach the backend"
    );
    // Before, each execution spawned its own publishing task, without a
    // deadline: twenty executions, twenty publishes hanging at once.
    assert_eq!(backend.log_peak.load(Ordering::SeqCst), 1);
}
