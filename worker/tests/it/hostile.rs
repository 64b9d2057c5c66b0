//! A guest attacking the host through what it hands back: thousands of
//! response headers, huge header values, statuses no HTTP stack accepts,
//! a body above every limit, and log floods. Each is refused or capped in
//! the worker, before anything downstream (the gRPC answer, the edge, the
//! worker's own log, the debug stream) has to hold it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use annex_proto::pb;
use annex_worker::backend::{HostBackend, HostError, NoHostBackend};
use annex_worker::testing::Call;
use parking_lot::Mutex;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::support::{eventually, publisher, worker};

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
    let notice = eventually(Duration::from_secs(5), || {
        backend.logs_containing("log truncated").pop()
    })
    .await;
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
    eventually(Duration::from_secs(5), || {
        backend
            .logs_containing("log truncated")
            .into_iter()
            .find(|e| e.tenant_id == "tenant-printflood")
    })
    .await;
    let (lines, _) = events.of("tenant-printflood");
    assert!(
        lines <= 256,
        "{lines} stdout lines reached the worker's log"
    );
}

/// A control plane that takes every log batch and never answers.
#[derive(Default)]
struct HangingLogs {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    calls: AtomicUsize,
}

struct Leaving<'a>(&'a AtomicUsize);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl HostBackend for HangingLogs {
    async fn storage_get(
        &self,
        g: &str,
        n: &str,
        k: &str,
    ) -> Result<Option<annex_worker::backend::StorageRecord>, HostError> {
        NoHostBackend.storage_get(g, n, k).await
    }
    async fn storage_put(
        &self,
        g: &str,
        n: &str,
        k: &str,
        v: Vec<u8>,
        r: Option<u64>,
    ) -> Result<annex_worker::backend::StorageRecord, HostError> {
        NoHostBackend.storage_put(g, n, k, v, r).await
    }
    async fn storage_delete(&self, g: &str, n: &str, k: &str) -> Result<bool, HostError> {
        NoHostBackend.storage_delete(g, n, k).await
    }
    async fn storage_list(
        &self,
        g: &str,
        n: &str,
        c: Option<&str>,
    ) -> Result<Vec<annex_worker::backend::StorageRecord>, HostError> {
        NoHostBackend.storage_list(g, n, c).await
    }
    async fn get_secrets(
        &self,
        g: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, HostError> {
        NoHostBackend.get_secrets(g).await
    }
    async fn list_schedules(&self, g: &str) -> Result<Vec<pb::ScheduleInfo>, HostError> {
        NoHostBackend.list_schedules(g).await
    }
    async fn get_schedule(&self, g: &str, id: &str) -> Result<Option<pb::ScheduleInfo>, HostError> {
        NoHostBackend.get_schedule(g, id).await
    }
    async fn create_schedule(
        &self,
        r: pb::CreateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        NoHostBackend.create_schedule(r).await
    }
    async fn update_schedule(
        &self,
        r: pb::UpdateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        NoHostBackend.update_schedule(r).await
    }
    async fn delete_schedule(
        &self,
        g: &str,
        id: &str,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        NoHostBackend.delete_schedule(g, id).await
    }
    async fn get_endpoints(&self, g: &str) -> Result<Vec<pb::EndpointInfo>, HostError> {
        NoHostBackend.get_endpoints(g).await
    }
    async fn call_host_api(
        &self,
        g: &str,
        a: annex_worker::backend::HostApi,
        b: String,
    ) -> Result<annex_worker::backend::HostApiResponse, HostError> {
        NoHostBackend.call_host_api(g, a, b).await
    }
    async fn call_ui_proxy(
        &self,
        g: &str,
        c: annex_worker::backend::UiProxyCall,
    ) -> Result<annex_worker::backend::HostApiResponse, HostError> {
        NoHostBackend.call_ui_proxy(g, c).await
    }
    async fn publish_logs(&self, _: Vec<pb::LogEvent>) -> Result<(), HostError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let _leaving = Leaving(&self.in_flight);
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test]
async fn log_shipping_to_a_hung_control_plane_stays_one_bounded_queue() {
    let backend = Arc::new(HangingLogs::default());
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
    eventually(Duration::from_secs(5), || {
        (backend.calls.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    // Before, each execution spawned its own publishing task, without a
    // deadline: twenty executions, twenty publishes hanging at once.
    assert_eq!(backend.peak.load(Ordering::SeqCst), 1);
}
