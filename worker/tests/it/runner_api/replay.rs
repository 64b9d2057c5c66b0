//! Idempotent replay: a repeated `x-idempotency-key` gets the stored answer
//! and the guest does not run again (its storage write is not repeated);
//! keys are scoped to tenant, extension and install; failures are not kept.

use serde_json::json;

use super::{Fixture, JsonRequest as _, JsonResponse as _, b64, envelope};

fn put(hex: &str, value: &str) -> serde_json::Value {
    let mut body = envelope(hex, "POST", "/storage/put?ns=counter&key=k");
    body["providers"] = json!(["cap:storage.kv"]);
    body["http"]["body_b64"] = json!(b64(value));
    body
}

#[tokio::test]
async fn a_repeated_key_replays_the_answer_without_running_the_guest() {
    let f = Fixture::start().await;
    let hex = f.publish("probe");
    let key = [("x-idempotency-key", "idem-1")];
    let (_, first) = f.execute_with(&put(&hex, "one"), &key).await;
    assert_eq!(first["status"], 200, "{first}");
    let response = f
        .request("/v1/execute")
        .header("x-alga-tenant", super::TENANT)
        .header("x-alga-extension", super::EXTENSION)
        .header("x-idempotency-key", "idem-1")
        .json(&put(&hex, "two"))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        response
            .headers()
            .get("x-idempotent-replay")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let second: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(second, first);
    assert_eq!(
        f.host.storage_ops(),
        ["put counter/k"],
        "the guest ran once"
    );

    // Another key, or no key, runs the guest.
    let (_, third) = f
        .execute_with(&put(&hex, "three"), &[("x-idempotency-key", "idem-2")])
        .await;
    assert_eq!(third["status"], 200);
    let (_, fourth) = f.execute(&put(&hex, "four")).await;
    assert_eq!(fourth["status"], 200);
    assert_eq!(f.host.storage_ops().len(), 3);
}

#[tokio::test]
async fn keys_are_scoped_to_the_install() {
    let f = Fixture::start().await;
    let hex = f.publish("probe");
    let key = [("x-idempotency-key", "shared")];
    let (_, first) = f.execute_with(&put(&hex, "a"), &key).await;
    assert_eq!(first["status"], 200, "{first}");
    let mut other_install = put(&hex, "b");
    other_install["context"]["install_id"] = json!("install-2");
    let (_, second) = f.execute_with(&other_install, &key).await;
    assert_eq!(second["status"], 200);
    assert_eq!(
        f.host.storage_ops().len(),
        2,
        "each install ran its own call"
    );
}

#[tokio::test]
async fn failures_are_not_replayed() {
    let f = Fixture::start().await;
    let hex = "aa".repeat(32);
    let key = [("x-idempotency-key", "idem-fail")];
    let (_, first) = f.execute_with(&envelope(&hex, "GET", "/hello"), &key).await;
    assert_eq!(first["status"], 502, "{first}");
    // The bundle appears; the same key now runs and succeeds.
    let real = f.publish("hello");
    let (_, second) = f
        .execute_with(&envelope(&real, "GET", "/hello"), &key)
        .await;
    assert_eq!(second["status"], 200, "{second}");
}

#[tokio::test]
async fn concurrent_duplicates_run_the_guest_once() {
    let f = std::sync::Arc::new(Fixture::start().await);
    let hex = f.publish("probe");
    let calls = (0..4).map(|i| {
        let f = f.clone();
        let body = put(&hex, &format!("v{i}"));
        tokio::spawn(async move {
            f.execute_with(&body, &[("x-idempotency-key", "together")])
                .await
                .1
        })
    });
    let answers = futures::future::join_all(calls).await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.expect("joins")).collect();
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(answers[0]["status"], 200);
    assert_eq!(f.host.storage_ops(), ["put counter/k"]);
}
