//! Idempotency record cases (docs/design/idempotency.md): one claimant at a
//! time, replay of a completed record, conflicts, lease renewal and
//! takeover, a lost claimant's late calls refused, release, scoping,
//! expiry and the sweep.

use annex_control_plane::store::{ClaimOutcome, IdempotencyClaim, IdempotencyScope};
use serde_json::json;

use super::*;

store_cases!(
    idempotency_a_completed_record_replays_and_only_its_claimant_completes,
    idempotency_another_request_with_the_key_conflicts,
    idempotency_a_lapsed_lease_is_taken_over_and_the_lost_owner_refused,
    idempotency_renewal_keeps_the_claim,
    idempotency_release_lets_the_next_claim_run,
    idempotency_is_scoped_to_tenant_and_install,
    idempotency_concurrent_claims_have_one_winner,
    idempotency_records_expire_and_are_swept,
);

// ---- fixtures ----

fn scope(tenant: &str, install: Uuid, key: &str) -> IdempotencyScope {
    IdempotencyScope {
        tenant_id: tenant.to_owned(),
        install_id: install,
        key: key.to_owned(),
    }
}

fn hash(of: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(of.as_bytes()))
    )
}

/// A claim of request `request` by `token`, its lease ending `lease` seconds
/// after `secs`, the record kept for an hour.
fn claim(request: &str, token: Uuid, secs: i64, lease: i64) -> IdempotencyClaim {
    IdempotencyClaim {
        request_hash: hash(request),
        token,
        lease_expires_at: at(NOW + secs + lease),
        expires_at: at(NOW + secs + 3600),
    }
}

async fn claim_at(
    store: &DynStore,
    scope: &IdempotencyScope,
    c: IdempotencyClaim,
    secs: i64,
) -> ClaimOutcome {
    store
        .idempotency_claim(scope, c, at(NOW + secs))
        .await
        .expect("claim")
}

fn response(n: u32) -> serde_json::Value {
    json!({"status": 200 + n, "headers": {"content-type": "text/plain"}, "body_b64": "aGk="})
}

async fn complete_at(
    store: &DynStore,
    scope: &IdempotencyScope,
    token: Uuid,
    n: u32,
    secs: i64,
) -> bool {
    store
        .idempotency_complete(
            scope,
            token,
            response(n),
            at(NOW + secs + 3600),
            at(NOW + secs),
        )
        .await
        .expect("complete")
}

// ---- cases ----

async fn idempotency_a_completed_record_replays_and_only_its_claimant_completes(store: DynStore) {
    let s = scope("t1", Uuid::new_v4(), "order-1");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        claim_at(&store, &s, claim("r", a, 0, 30), 0).await,
        ClaimOutcome::Claimed
    );
    // The same claimant again (its answer was lost): still its claim.
    assert_eq!(
        claim_at(&store, &s, claim("r", a, 1, 30), 1).await,
        ClaimOutcome::Claimed
    );
    // Another claimant waits for the lease.
    assert_eq!(
        claim_at(&store, &s, claim("r", b, 2, 30), 2).await,
        ClaimOutcome::InProgress {
            lease_expires_at: at(NOW + 31)
        }
    );
    assert!(
        !complete_at(&store, &s, b, 9, 3).await,
        "a claimant without the record completes nothing"
    );
    assert!(complete_at(&store, &s, a, 1, 3).await);
    for (token, secs) in [(b, 4), (a, 5), (Uuid::new_v4(), 100)] {
        assert_eq!(
            claim_at(&store, &s, claim("r", token, secs, 30), secs).await,
            ClaimOutcome::Completed(response(1)),
            "claim at +{secs}s"
        );
    }
    // A completed record is no one's to complete, renew or release again.
    assert!(!complete_at(&store, &s, a, 2, 6).await);
    assert!(
        !store
            .idempotency_renew(&s, a, at(NOW + 60), at(NOW + 6))
            .await
            .expect("renew")
    );
    assert!(!store.idempotency_release(&s, a).await.expect("release"));
    assert_eq!(
        claim_at(&store, &s, claim("r", b, 7, 30), 7).await,
        ClaimOutcome::Completed(response(1))
    );
}

async fn idempotency_another_request_with_the_key_conflicts(store: DynStore) {
    let s = scope("t1", Uuid::new_v4(), "k");
    let a = Uuid::new_v4();
    assert_eq!(
        claim_at(&store, &s, claim("r1", a, 0, 30), 0).await,
        ClaimOutcome::Claimed
    );
    // While the first runs, and even by its own claimant.
    for token in [a, Uuid::new_v4()] {
        assert_eq!(
            claim_at(&store, &s, claim("r2", token, 1, 30), 1).await,
            ClaimOutcome::Conflict
        );
    }
    // After its lease lapsed: a lapsed lease is taken over only by the same request.
    assert_eq!(
        claim_at(&store, &s, claim("r2", Uuid::new_v4(), 40, 30), 40).await,
        ClaimOutcome::Conflict
    );
    assert!(complete_at(&store, &s, a, 0, 2).await);
    assert_eq!(
        claim_at(&store, &s, claim("r2", Uuid::new_v4(), 50, 30), 50).await,
        ClaimOutcome::Conflict
    );
}

async fn idempotency_a_lapsed_lease_is_taken_over_and_the_lost_owner_refused(store: DynStore) {
    let s = scope("t1", Uuid::new_v4(), "k");
    let (lost, next) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        claim_at(&store, &s, claim("r", lost, 0, 10), 0).await,
        ClaimOutcome::Claimed
    );
    assert_eq!(
        claim_at(&store, &s, claim("r", next, 9, 10), 9).await,
        ClaimOutcome::InProgress {
            lease_expires_at: at(NOW + 10)
        }
    );
    // At the lease's end the next claim takes the record over.
    assert_eq!(
        claim_at(&store, &s, claim("r", next, 10, 10), 10).await,
        ClaimOutcome::Claimed
    );
    // The lost owner comes back late: nothing it does changes the record.
    assert!(
        !store
            .idempotency_renew(&s, lost, at(NOW + 40), at(NOW + 11))
            .await
            .expect("renew")
    );
    assert!(!complete_at(&store, &s, lost, 7, 12).await);
    assert!(!store.idempotency_release(&s, lost).await.expect("release"));
    assert_eq!(
        claim_at(&store, &s, claim("r", Uuid::new_v4(), 13, 10), 13).await,
        ClaimOutcome::InProgress {
            lease_expires_at: at(NOW + 20)
        }
    );
    assert!(complete_at(&store, &s, next, 2, 14).await);
    assert_eq!(
        claim_at(&store, &s, claim("r", lost, 15, 10), 15).await,
        ClaimOutcome::Completed(response(2))
    );
}

async fn idempotency_renewal_keeps_the_claim(store: DynStore) {
    let s = scope("t1", Uuid::new_v4(), "k");
    let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        claim_at(&store, &s, claim("r", owner, 0, 10), 0).await,
        ClaimOutcome::Claimed
    );
    assert!(
        store
            .idempotency_renew(&s, owner, at(NOW + 30), at(NOW + 8))
            .await
            .expect("renew")
    );
    assert!(
        !store
            .idempotency_renew(&s, other, at(NOW + 60), at(NOW + 8))
            .await
            .expect("renew"),
        "only the claimant renews"
    );
    assert_eq!(
        claim_at(&store, &s, claim("r", other, 20, 10), 20).await,
        ClaimOutcome::InProgress {
            lease_expires_at: at(NOW + 30)
        }
    );
    assert_eq!(
        claim_at(&store, &s, claim("r", other, 30, 10), 30).await,
        ClaimOutcome::Claimed
    );
}

async fn idempotency_release_lets_the_next_claim_run(store: DynStore) {
    let s = scope("t1", Uuid::new_v4(), "k");
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        claim_at(&store, &s, claim("r", first, 0, 30), 0).await,
        ClaimOutcome::Claimed
    );
    assert!(
        !store
            .idempotency_release(&s, second)
            .await
            .expect("release"),
        "only the claimant releases"
    );
    assert!(store.idempotency_release(&s, first).await.expect("release"));
    assert!(!store.idempotency_release(&s, first).await.expect("release"));
    // Released: the key is free, even for another request.
    assert_eq!(
        claim_at(&store, &s, claim("r2", second, 1, 30), 1).await,
        ClaimOutcome::Claimed
    );
    assert!(!complete_at(&store, &s, first, 1, 2).await);
    assert!(complete_at(&store, &s, second, 2, 2).await);
    assert_eq!(
        claim_at(&store, &s, claim("r2", first, 3, 30), 3).await,
        ClaimOutcome::Completed(response(2))
    );
}

async fn idempotency_is_scoped_to_tenant_and_install(store: DynStore) {
    let (install, other_install) = (Uuid::new_v4(), Uuid::new_v4());
    let s = scope("t1", install, "shared-key");
    let a = Uuid::new_v4();
    assert_eq!(
        claim_at(&store, &s, claim("r", a, 0, 30), 0).await,
        ClaimOutcome::Claimed
    );
    assert!(complete_at(&store, &s, a, 1, 1).await);
    for other in [
        scope("t1", other_install, "shared-key"),
        scope("t2", install, "shared-key"),
        scope("t1", install, "Shared-Key"),
    ] {
        let token = Uuid::new_v4();
        assert_eq!(
            claim_at(&store, &other, claim("r", token, 2, 30), 2).await,
            ClaimOutcome::Claimed,
            "{other:?}"
        );
        assert!(complete_at(&store, &other, token, 5, 3).await);
    }
    assert_eq!(
        claim_at(&store, &s, claim("r", Uuid::new_v4(), 4, 30), 4).await,
        ClaimOutcome::Completed(response(1))
    );
}

async fn idempotency_concurrent_claims_have_one_winner(store: DynStore) {
    let s = scope("t1", Uuid::new_v4(), "race");
    let claims: Vec<_> = (0..8)
        .map(|_| {
            let (store, s) = (store.clone(), s.clone());
            tokio::spawn(
                async move { claim_at(&store, &s, claim("r", Uuid::new_v4(), 0, 30), 0).await },
            )
        })
        .collect();
    let mut claimed = 0;
    for c in claims {
        match c.await.expect("task") {
            ClaimOutcome::Claimed => claimed += 1,
            ClaimOutcome::InProgress { lease_expires_at } => {
                assert_eq!(lease_expires_at, at(NOW + 30));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(claimed, 1);
}

async fn idempotency_records_expire_and_are_swept(store: DynStore) {
    let install = Uuid::new_v4();
    let kept = scope("t1", install, "kept");
    let done = scope("t1", install, "done");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    // `done` completes at +0 and is kept until +3600; `kept` is in
    // progress, kept until +7200.
    assert_eq!(
        claim_at(&store, &done, claim("r", a, 0, 30), 0).await,
        ClaimOutcome::Claimed
    );
    assert!(complete_at(&store, &done, a, 1, 0).await);
    let long = IdempotencyClaim {
        expires_at: at(NOW + 7200),
        ..claim("r", b, 0, 30)
    };
    assert_eq!(
        claim_at(&store, &kept, long, 0).await,
        ClaimOutcome::Claimed
    );
    assert_eq!(
        claim_at(&store, &done, claim("r", b, 3599, 30), 3599).await,
        ClaimOutcome::Completed(response(1))
    );
    assert_eq!(
        store
            .idempotency_sweep(at(NOW + 3599), 100)
            .await
            .expect("sweep"),
        0
    );
    // Expired: the record is gone for claims, even one for another request.
    assert_eq!(
        claim_at(&store, &done, claim("r2", b, 3600, 30), 3600).await,
        ClaimOutcome::Claimed
    );
    assert!(store.idempotency_release(&done, b).await.expect("release"));
    assert!(complete_at(&store, &kept, b, 3, 10).await);
    // `kept` completed at +10, kept until +3610; sweeping at +3700 takes it.
    assert_eq!(
        store
            .idempotency_sweep(at(NOW + 3700), 100)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(
        claim_at(&store, &kept, claim("r9", b, 3701, 30), 3701).await,
        ClaimOutcome::Claimed
    );
    // The sweep deletes at most `limit` records per call.
    for i in 0..3 {
        let s = scope("t2", install, &format!("k{i}"));
        assert_eq!(
            claim_at(&store, &s, claim("r", a, 0, 30), 0).await,
            ClaimOutcome::Claimed
        );
    }
    assert_eq!(
        store
            .idempotency_sweep(at(NOW + 9000), 2)
            .await
            .expect("sweep"),
        2
    );
    assert_eq!(
        store
            .idempotency_sweep(at(NOW + 9000), 2)
            .await
            .expect("sweep"),
        2,
        "the third t2 record and `kept`'s new one"
    );
    assert_eq!(
        store
            .idempotency_sweep(at(NOW + 9000), 2)
            .await
            .expect("sweep"),
        0
    );
}
