//! Fleet-wide quotas and usage accounting through the real binaries: a
//! control plane on PostgreSQL, a worker, two edges. A tenant's concurrency
//! quota is split across both edges (and the control plane), enforced with
//! 429 + Retry-After on every edge while another tenant keeps being served,
//! changes apply without restarts, and the worker's usage reaches
//! `extension_quota_usage` once per execution.

use std::net::SocketAddr;
use std::time::Duration;

use annex_e2e::stack::{OTHER_TENANT, TENANT};
use annex_e2e::{Resp, Stack};
use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::{assert_eventually, eventually};
use serde_json::json;

/// Calls at once per edge: more than any share below.
const BURST: usize = 4;

async fn set_quota(s: &Stack, max_concurrency: u32) {
    pb::installs_client::InstallsClient::new(s.channel(Role::Operator).await)
        .set_quota(pb::SetQuotaRequest {
            quota: Some(pb::QuotaRef {
                tenant_id: TENANT.into(),
                extension: String::new(),
            }),
            max_concurrency,
            requests_per_second: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("setting the quota: {e}"));
}

/// `BURST` concurrent calls of the misbehave guest's `/loop` (it spins until
/// the 2 s execution timeout, holding its slot) on `edge`.
async fn burst(s: &Stack, edge: SocketAddr) -> Vec<Resp> {
    let auth = s.bearer(&json!({}));
    let path = format!("/api/ext/{}/loop", s.misbehave.registry_id);
    let calls = (0..BURST).map(|_| {
        let (auth, path) = (auth.clone(), path.clone());
        tokio::spawn(async move {
            annex_e2e::send(edge, "GET", &path, &[("authorization", &auth)], b"").await
        })
    });
    let mut out = Vec::new();
    for c in futures::future::join_all(calls).await {
        out.push(c.unwrap_or_else(|e| panic!("call task: {e}")));
    }
    out
}

fn admitted(responses: &[Resp]) -> usize {
    responses.iter().filter(|r| r.status != 429).count()
}

/// Calls of the misbehave guest made, and how many the edges admitted.
#[derive(Debug, Default)]
struct Tally {
    calls: usize,
    admitted: usize,
}

/// Bursts on both edges at once until each admits exactly `want` (the
/// edges apply a quota change within about a second); returns the last
/// bursts, or their statuses when the deadline passed first.
async fn bursts_until(
    s: &Stack,
    edges: [SocketAddr; 2],
    want: usize,
    tally: &mut Tally,
) -> Result<[Vec<Resp>; 2], Vec<Vec<u16>>> {
    let mut last = Vec::new();
    let bursts = eventually(Duration::from_secs(20), async || {
        let (a, b) = tokio::join!(burst(s, edges[0]), burst(s, edges[1]));
        tally.calls += a.len() + b.len();
        tally.admitted += admitted(&a) + admitted(&b);
        if admitted(&a) == want && admitted(&b) == want {
            return Some([a, b]);
        }
        last = [a, b]
            .iter()
            .map(|r| r.iter().map(|r| r.status).collect())
            .collect();
        None
    })
    .await;
    bursts.map_err(|_| last)
}

#[tokio::test]
async fn a_fleet_wide_concurrency_quota_holds_on_every_edge_and_usage_adds_up() {
    let s = Stack::start().await;
    let edge2 = s.spawn_edge("edge-2", &[]).await;
    let edges = [s.edge.http, edge2.http];
    let other = s.install_for(OTHER_TENANT, &s.hello.registry_id).await;
    let other_auth = s.bearer(&json!({"tenant": OTHER_TENANT}));
    let other_path = format!("/api/ext/{}/hello", other.registry_id);
    let mut tally = Tally::default();

    // Two edges and one control plane: a fleet-wide limit of 2 is a share of
    // 1 each. Wait until both edges enforce it.
    set_quota(&s, 2).await;
    let last = bursts_until(&s, edges, 1, &mut tally)
        .await
        .unwrap_or_else(|statuses| {
            panic!(
                "each edge should admit exactly one of {BURST} concurrent calls; got {statuses:?}\n{}",
                s.logs()
            )
        });
    // Every refusal is the gateway's own 429 with Retry-After.
    for r in last.iter().flatten().filter(|r| r.status == 429) {
        assert_eq!(r.json(), json!({"error": "rate_limited"}));
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    for r in last.iter().flatten().filter(|r| r.status != 429) {
        assert_eq!(r.status, 504, "the admitted /loop runs into its timeout");
    }

    // While the tenant is at its limit on both edges, another tenant is served.
    let held = tokio::spawn({
        let (a, b) = (edges[0], edges[1]);
        let auth = s.bearer(&json!({}));
        let path = format!("/api/ext/{}/loop", s.misbehave.registry_id);
        async move {
            let headers = [("authorization", auth.as_str())];
            let (x, y) = tokio::join!(
                annex_e2e::send(a, "GET", &path, &headers, b""),
                annex_e2e::send(b, "GET", &path, &headers, b""),
            );
            [x.status, y.status]
        }
    });
    // Both held calls admitted and running on the worker: the tenant is at
    // its limit on both edges.
    assert_eventually!(
        Duration::from_secs(10),
        async || s.in_flight().await >= 2,
        "both held calls to run on the worker\n{}",
        s.logs()
    );
    let tenant_auth = s.bearer(&json!({}));
    let hello = format!("/api/ext/{}/hello", s.hello.registry_id);
    for edge in edges {
        let r = annex_e2e::get(edge, &other_path, &[("authorization", &other_auth)]).await;
        assert_eq!(
            r.status,
            200,
            "the other tenant is not limited: {}",
            r.text()
        );
        let r = annex_e2e::get(edge, &hello, &[("authorization", &tenant_auth)]).await;
        assert_eq!(
            r.status, 429,
            "the limited tenant's other extension shares its quota"
        );
    }
    let held = held.await.unwrap_or_else(|e| panic!("held calls: {e}"));
    tally.calls += 2;
    tally.admitted += held.iter().filter(|s| **s != 429).count();

    // Raised to 6 (a share of 2 per edge) without restarting anything.
    set_quota(&s, 6).await;
    if let Err(statuses) = bursts_until(&s, edges, 2, &mut tally).await {
        panic!("the raised quota never applied: {statuses:?}\n{}", s.logs());
    }
    // Lowered back to 2: one each again.
    set_quota(&s, 2).await;
    if let Err(statuses) = bursts_until(&s, edges, 1, &mut tally).await {
        panic!(
            "the lowered quota never applied: {statuses:?}\n{}",
            s.logs()
        );
    }
    assert!(tally.admitted < tally.calls);
    let misbehave_admitted = tally.admitted;

    // Usage: every admitted /loop ran on the worker and is counted once.
    assert_eventually!(
        Duration::from_secs(15),
        async || {
            let windows = s.usage_windows(TENANT, &s.misbehave.registry_id).await;
            windows.iter().map(|w| w.invocations).sum::<u64>() == misbehave_admitted as u64
        },
        "usage windows {:?} to add up to {misbehave_admitted} executions\n{}",
        s.usage_windows(TENANT, &s.misbehave.registry_id).await,
        s.logs()
    );
    // A few more heartbeats: nothing is counted twice.
    s.heartbeats(3).await;
    let windows = s.usage_windows(TENANT, &s.misbehave.registry_id).await;
    assert_eq!(
        windows.iter().map(|w| w.invocations).sum::<u64>(),
        misbehave_admitted as u64
    );
    assert!(windows.iter().all(|w| w.cpu_us > 0), "{windows:?}");
    assert!(
        windows.iter().all(|w| w.memory_byte_ms > 0),
        "peak memory is accounted: {windows:?}"
    );
    // The other tenant's calls are its own.
    assert_eventually!(
        Duration::from_secs(10),
        async || {
            let windows = s.usage_windows(OTHER_TENANT, &other.registry_id).await;
            windows.iter().map(|w| w.invocations).sum::<u64>() >= 2
        },
        "the other tenant's two calls to be accounted to it"
    );
}
