//! Rollout cases: one active rollout per install, changes only against the
//! revision read (two replicas deciding at once: one wins), the history,
//! canaries placed beside the install's version, per-version health from
//! the execution log, rollouts gone with their install.

use annex_control_plane::store::{
    ExecutionRow, NewRollout, RolloutChange, RolloutEvent, RolloutPolicy, RolloutRow, RolloutState,
    RolloutStep, RolloutVariant,
};
use serde_json::json;

use super::*;

store_cases!(
    one_active_rollout_per_install,
    changes_apply_only_at_the_revision_read,
    finished_rollouts_stay_readable_and_newest_comes_first,
    canaries_of_active_rollouts_are_placed,
    version_stats_count_failures_and_p99_per_version,
    rollouts_go_with_their_install,
);

fn policy() -> RolloutPolicy {
    RolloutPolicy {
        steps: vec![
            RolloutStep {
                weights: vec![1000],
                hold_secs: 30,
            },
            RolloutStep {
                weights: vec![10_000],
                hold_secs: 30,
            },
        ],
        max_error_rate: 0.05,
        max_p99_ms: 0,
        min_calls: 10,
        disable_missing_schedules: false,
    }
}

fn event(action: &str) -> RolloutEvent {
    RolloutEvent {
        at: at(NOW),
        action: action.to_owned(),
        actor: "operator:test".to_owned(),
        detail: format!("{action} detail"),
    }
}

/// An install of 1.0.0 and a published 1.1.0 of the same extension.
async fn fixture(store: &DynStore, tenant: &str) -> (InstallRow, VersionRow, VersionRow) {
    let name = format!("roll-{}", Uuid::new_v4().simple());
    let (_, stable) = publish(store, "acme", &name, "1.0.0").await;
    let (_, canary) = publish(store, "acme", &name, "1.1.0").await;
    let row = install(store, tenant, &stable).await;
    (row, stable, canary)
}

fn new_rollout(install: &InstallRow, canary: &VersionRow) -> NewRollout {
    NewRollout {
        id: Uuid::new_v4(),
        tenant_id: install.tenant_id.clone(),
        install_id: install.id,
        registry_id: install.registry_id,
        stable_version_id: install.version_id,
        variants: vec![RolloutVariant {
            version_id: canary.id,
            weight: 1000,
        }],
        policy: policy(),
        event: event("start"),
    }
}

fn change(row: &RolloutRow, state: RolloutState, weight: u32, action: &str) -> RolloutChange {
    RolloutChange {
        state,
        step: row.step + 1,
        restart_step: true,
        variants: vec![RolloutVariant {
            version_id: row.variants[0].version_id,
            weight,
        }],
        reason: (state != RolloutState::Active).then(|| format!("{action} reason")),
        event: event(action),
    }
}

async fn one_active_rollout_per_install(store: DynStore) {
    let (install, _, canary) = fixture(&store, "t1").await;
    let row = store
        .create_rollout(new_rollout(&install, &canary))
        .await
        .expect("create");
    assert_eq!(row.state, RolloutState::Active);
    assert_eq!((row.step, row.revision), (0, 1));
    assert_eq!(row.stable_weight(), 9000);
    assert_eq!(row.policy, policy());
    assert_eq!(row.history, vec![event("start")]);
    let again = store.create_rollout(new_rollout(&install, &canary)).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(_))),
        "{again:?}"
    );
    // Once it ends, a new one may start.
    store
        .update_rollout(
            row.id,
            row.revision,
            change(&row, RolloutState::Aborted, 0, "abort"),
        )
        .await
        .expect("abort");
    store
        .create_rollout(new_rollout(&install, &canary))
        .await
        .expect("a second rollout after the first ended");
    // An install that does not exist has no rollout.
    let mut missing = new_rollout(&install, &canary);
    missing.install_id = Uuid::new_v4();
    assert!(store.create_rollout(missing).await.is_err());
}

async fn changes_apply_only_at_the_revision_read(store: DynStore) {
    let (install, _, canary) = fixture(&store, "t1").await;
    let row = store
        .create_rollout(new_rollout(&install, &canary))
        .await
        .expect("create");
    // Two replicas read revision 1; the first to write wins.
    let stepped = store
        .update_rollout(
            row.id,
            row.revision,
            change(&row, RolloutState::Active, 5000, "step"),
        )
        .await
        .expect("step");
    assert_eq!((stepped.step, stepped.revision), (1, 2));
    assert_eq!(stepped.variants[0].weight, 5000);
    assert!(stepped.step_started_at >= row.step_started_at);
    let late = store
        .update_rollout(
            row.id,
            row.revision,
            change(&row, RolloutState::RolledBack, 0, "rollback"),
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::RevisionMismatch)),
        "{late:?}"
    );
    // At the current revision it applies, and the rollout is over.
    let rolled = store
        .update_rollout(
            row.id,
            stepped.revision,
            change(&stepped, RolloutState::RolledBack, 0, "rollback"),
        )
        .await
        .expect("rollback");
    assert_eq!(rolled.state, RolloutState::RolledBack);
    assert_eq!(rolled.reason.as_deref(), Some("rollback reason"));
    assert_eq!(rolled.variants[0].weight, 0);
    let actions: Vec<&str> = rolled.history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["start", "step", "rollback"]);
    // A finished rollout takes no more changes.
    let after = store
        .update_rollout(
            row.id,
            rolled.revision,
            change(&rolled, RolloutState::Active, 10_000, "step"),
        )
        .await;
    assert!(
        matches!(after, Err(StoreError::RevisionMismatch)),
        "{after:?}"
    );
    let unknown = store
        .update_rollout(
            Uuid::new_v4(),
            1,
            change(&rolled, RolloutState::Aborted, 0, "abort"),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );
}

async fn finished_rollouts_stay_readable_and_newest_comes_first(store: DynStore) {
    let (install, _, canary) = fixture(&store, "t1").await;
    let (other, _, other_canary) = fixture(&store, "t2").await;
    let first = store
        .create_rollout(new_rollout(&install, &canary))
        .await
        .expect("create");
    let other_row = store
        .create_rollout(new_rollout(&other, &other_canary))
        .await
        .expect("create");
    store
        .update_rollout(
            first.id,
            1,
            change(&first, RolloutState::Promoted, 10_000, "promote"),
        )
        .await
        .expect("promote");
    let second = store
        .create_rollout(new_rollout(&install, &canary))
        .await
        .expect("create");
    let latest = store
        .latest_rollout(install.id)
        .await
        .expect("latest")
        .expect("a rollout");
    assert_eq!(latest.id, second.id);
    let old = store
        .find_rollout(first.id)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(old.state, RolloutState::Promoted);
    assert!(
        store
            .find_rollout(Uuid::new_v4())
            .await
            .expect("find")
            .is_none()
    );
    let active: Vec<Uuid> = store
        .active_rollouts()
        .await
        .expect("active")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(active.len(), 2);
    assert!(active.contains(&second.id) && active.contains(&other_row.id));
    assert!(
        store
            .latest_rollout(Uuid::new_v4())
            .await
            .expect("latest")
            .is_none()
    );
}

async fn canaries_of_active_rollouts_are_placed(store: DynStore) {
    let (install, stable, canary) = fixture(&store, "t1").await;
    let hashes = store.active_content_hashes().await.expect("hashes");
    assert!(hashes.contains(&stable.bundle.content_hash));
    assert!(!hashes.contains(&canary.bundle.content_hash));
    let row = store
        .create_rollout(new_rollout(&install, &canary))
        .await
        .expect("create");
    let hashes = store.active_content_hashes().await.expect("hashes");
    assert!(hashes.contains(&stable.bundle.content_hash));
    assert!(hashes.contains(&canary.bundle.content_hash));
    store
        .update_rollout(
            row.id,
            1,
            change(&row, RolloutState::RolledBack, 0, "rollback"),
        )
        .await
        .expect("rollback");
    let hashes = store.active_content_hashes().await.expect("hashes");
    assert!(!hashes.contains(&canary.bundle.content_hash));
}

fn execution(
    registry: Uuid,
    version: Uuid,
    started: i64,
    status: &str,
    http_status: u16,
    duration_ms: u64,
    error: Option<&str>,
) -> ExecutionRow {
    ExecutionRow {
        id: Uuid::new_v4(),
        tenant_id: "t1".to_owned(),
        registry_id: registry,
        version_id: version,
        request_id: None,
        started_at: at(started),
        finished_at: Some(at(started + 1)),
        status: status.to_owned(),
        metrics: json!({"http_status": http_status, "duration_ms": duration_ms}),
        error: error.map(str::to_owned),
    }
}

async fn version_stats_count_failures_and_p99_per_version(store: DynStore) {
    let registry = Uuid::new_v4();
    let (stable, canary, idle) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut rows = Vec::new();
    // Stable: 100 calls of 1..=100 ms, two guest 5xx answers.
    for i in 0..100u64 {
        let (status, code) = if i < 2 {
            ("upstream_error", 503)
        } else {
            ("ok", 200)
        };
        rows.push(execution(
            registry,
            stable,
            NOW + 10,
            status,
            code,
            i + 1,
            None,
        ));
    }
    // Canary: a trap, a timeout, a guest 404 (not a failure), a refusal
    // while compiling and a policy denial (neither counts), two ok.
    rows.push(execution(
        registry,
        canary,
        NOW + 10,
        "error",
        502,
        7,
        Some("runner_error"),
    ));
    rows.push(execution(
        registry,
        canary,
        NOW + 10,
        "timeout",
        504,
        900,
        Some("timeout"),
    ));
    rows.push(execution(
        registry,
        canary,
        NOW + 10,
        "upstream_error",
        404,
        3,
        None,
    ));
    rows.push(execution(
        registry,
        canary,
        NOW + 10,
        "error",
        503,
        1,
        Some("component_compiling"),
    ));
    rows.push(execution(
        registry,
        canary,
        NOW + 10,
        "policy_denied",
        403,
        1,
        None,
    ));
    rows.push(execution(registry, canary, NOW + 10, "ok", 200, 5, None));
    rows.push(execution(registry, canary, NOW + 10, "ok", 200, 5, None));
    // Before the window, another extension, another tenant: not counted.
    rows.push(execution(registry, canary, NOW - 10, "error", 502, 1, None));
    rows.push(execution(
        Uuid::new_v4(),
        canary,
        NOW + 10,
        "error",
        502,
        1,
        None,
    ));
    rows.push(ExecutionRow {
        tenant_id: "t2".into(),
        ..execution(registry, canary, NOW + 10, "error", 502, 1, None)
    });
    store.record_executions(rows).await.expect("record");
    let stats = store
        .version_stats("t1", registry, &[stable, canary, idle], at(NOW))
        .await
        .expect("stats");
    assert_eq!(stats.len(), 3);
    assert_eq!(stats[0].version_id, stable);
    assert_eq!(
        (stats[0].calls, stats[0].failures, stats[0].p99_ms),
        (100, 2, 99)
    );
    assert_eq!(stats[1].version_id, canary);
    assert_eq!(
        (stats[1].calls, stats[1].failures, stats[1].p99_ms),
        (6, 2, 900)
    );
    assert_eq!(stats[2].version_id, idle);
    assert_eq!(
        (stats[2].calls, stats[2].failures, stats[2].p99_ms),
        (0, 0, 0)
    );
}

async fn rollouts_go_with_their_install(store: DynStore) {
    let (install, _, canary) = fixture(&store, "t1").await;
    let row = store
        .create_rollout(new_rollout(&install, &canary))
        .await
        .expect("create");
    assert!(store.delete_install(install.id).await.expect("delete"));
    assert!(store.find_rollout(row.id).await.expect("find").is_none());
    assert!(store.active_rollouts().await.expect("active").is_empty());
}
