//! The debug log over real mTLS with two control-plane replicas on one
//! database: what a worker publishes through one replica, a watcher on the
//! other reads: the recent tail first, then new events as they arrive, and
//! polls resume after the id the last answer gave.

mod support;

use std::time::Duration;

use annex_ops::Role;
use annex_proto::{ErrorCode, pb};
use annex_testkit::{ControlPlane, ControlPlaneOptions, StoreChoice};
use support::code;

fn event(tenant: &str, message: &str) -> pb::LogEvent {
    pb::LogEvent {
        ts_ms: 1_750_000_000_000,
        level: "info".into(),
        stream: "log".into(),
        tenant_id: tenant.into(),
        extension_id: "11111111-2222-3333-4444-555555555555".into(),
        install_id: "inst-1".into(),
        message: message.into(),
        ..Default::default()
    }
}

fn messages(events: &[pb::LogEvent]) -> Vec<&str> {
    events.iter().map(|e| e.message.as_str()).collect()
}

fn request(tenant: &str, after_id: &str, limit: u32) -> pb::ListLogsRequest {
    pb::ListLogsRequest {
        tenant_id: tenant.into(),
        extension_id: "11111111-2222-3333-4444-555555555555".into(),
        after_id: after_id.into(),
        limit,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_watcher_on_another_replica_gets_the_tail_then_new_events_and_polls_resume_by_id() {
    let a = support::start().await;
    let b = ControlPlane::start_with(ControlPlaneOptions {
        store: StoreChoice::Given(a.store.clone()),
        ..ControlPlaneOptions::default()
    })
    .await;
    let mut batch: Vec<_> = (0..5).map(|n| event("t1", &format!("m{n}"))).collect();
    batch.insert(2, event("t2", "another tenant's"));
    batch.push(event("t1", "nul \0 inside"));
    a.publish_logs(batch).await;

    let mut on_b = pb::host_services_client::HostServicesClient::new(b.channel(Role::Edge).await);
    // The first poll: the newest events, oldest first, and where to resume.
    let page = on_b
        .list_logs(request("t1", "", 3))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(messages(&page.events), ["m3", "m4", "nul \u{fffd} inside"]);
    assert_eq!(page.last_id, page.events[2].id);
    assert!(page.events.iter().all(|e| e.tenant_id == "t1"));
    let nothing = on_b
        .list_logs(request("t1", &page.last_id, 100))
        .await
        .expect("list again")
        .into_inner();
    assert!(nothing.events.is_empty());
    assert_eq!(
        nothing.last_id, page.last_id,
        "nothing new: resume from the same place"
    );

    // A stream starts with its tail, then follows.
    let mut watch = on_b
        .watch_logs(pb::WatchLogsRequest {
            tenant_id: "t1".into(),
            extension_id: "11111111-2222-3333-4444-555555555555".into(),
            tail: 2,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("an event within the deadline")
            .expect("stream")
            .expect("event")
    };
    assert_eq!(next().await.message, "m4");
    assert_eq!(next().await.message, "nul \u{fffd} inside");
    a.publish_logs(vec![event("t2", "theirs"), event("t1", "m5")])
        .await;
    let live = next().await;
    assert_eq!(live.message, "m5");
    assert!(live.id.parse::<u64>().expect("decimal id") > page.last_id.parse::<u64>().expect("id"));

    let resumed = on_b
        .list_logs(request("t1", &page.last_id, 100))
        .await
        .expect("resume")
        .into_inner();
    assert_eq!(messages(&resumed.events), ["m5"]);
    assert_eq!(resumed.last_id, live.id);

    // Ids are this log's: anything else is refused, not guessed at.
    let refused = on_b
        .list_logs(request("t1", "1700000000000-0", 10))
        .await
        .expect_err("a foreign id");
    assert_eq!(code(&refused), ErrorCode::InvalidArgument);
    // Workers publish; they do not read.
    let worker = pb::host_services_client::HostServicesClient::new(b.channel(Role::Worker).await)
        .list_logs(request("t1", "", 10))
        .await
        .expect_err("worker role");
    assert_eq!(worker.code(), tonic::Code::PermissionDenied);
}
