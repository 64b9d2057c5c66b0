//! Host calls of runner-API executions: gated by the envelope's `providers`
//! (plus the defaults), secrets from the envelope, config from
//! `context.config`, the user from `user`, and storage, scheduler,
//! clients and ui-proxy reaching the (stub) host application the way
//! Alga's runner reaches it. The JavaScript guest answers Alga's echo case.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{EXTENSION, Fixture, HOST_TOKEN, TENANT, b64, envelope, guest_json};

async fn probe(f: &Fixture, body: Value) -> Value {
    let (_, answer) = f.execute(&body).await;
    assert_eq!(answer["status"], 200, "{answer}");
    guest_json(&answer)
}

fn with_caps(mut body: Value, caps: &[&str]) -> Value {
    body["providers"] = json!(caps);
    body
}

fn secret_envelope(body: &mut Value, algorithm: &str, secrets: Value) {
    body["secret_envelope"] = json!({
        "ciphertext_b64": b64(&secrets.to_string()),
        "algorithm": algorithm,
        "version": "5f0c",
        "expires_at": "2030-01-01T00:00:00Z"
    });
}

#[tokio::test]
async fn capabilities_come_from_providers_and_the_defaults() {
    let f = Fixture::start().await;
    let hex = f.publish("probe");
    let mut body = envelope(&hex, "GET", "/secrets/get?key=api_key");
    secret_envelope(&mut body, "inline/base64", json!({"api_key": "k-1"}));
    assert_eq!(probe(&f, body.clone()).await, json!({"err": "denied"}));
    assert_eq!(
        probe(&f, envelope(&hex, "PUT", "/storage/put?ns=n&key=k")).await,
        json!({"err": "denied"})
    );
    let mut fetch = envelope(&hex, "POST", "/fetch");
    fetch["http"]["body_b64"] = json!(b64(r#"{"method": "GET", "url": "http://example.com/"}"#));
    assert_eq!(probe(&f, fetch).await, json!({"err": "not-allowed"}));
    // The defaults: context and user, without any provider.
    let context = probe(&f, envelope(&hex, "GET", "/context")).await;
    assert_eq!(context["tenantId"], TENANT);
    assert_eq!(context["extensionId"], EXTENSION);
    assert_eq!(context["installId"], "install-1");
    assert_eq!(
        probe(&f, envelope(&hex, "GET", "/user")).await,
        json!({"err": "not-available"})
    );
    // Granted.
    assert_eq!(
        probe(&f, with_caps(body, &["cap:secrets.get"])).await,
        json!({"ok": "k-1"})
    );
}

#[tokio::test]
async fn secrets_come_from_the_envelope() {
    let f = Fixture::start().await;
    let hex = f.publish("probe");
    let mut body = with_caps(envelope(&hex, "GET", "/secrets/list"), &["cap:secrets.get"]);
    secret_envelope(
        &mut body,
        "inline/base64",
        json!({"api_key": "k", "other": "o"}),
    );
    assert_eq!(
        probe(&f, body.clone()).await,
        json!({"keys": ["api_key", "other"]})
    );
    body["http"]["path"] = json!("/secrets/get?key=absent");
    assert_eq!(probe(&f, body).await, json!({"err": "missing"}));
    // No envelope: missing, as in Alga's runner.
    let none = with_caps(
        envelope(&hex, "GET", "/secrets/get?key=api_key"),
        &["cap:secrets.get"],
    );
    assert_eq!(probe(&f, none).await, json!({"err": "missing"}));
    // Vault transit envelopes need Vault: refused with Alga's error.
    let mut vault = with_caps(envelope(&hex, "GET", "/context"), &["cap:secrets.get"]);
    vault["secret_envelope"] = json!({"ciphertext_b64": "vault:v1:abc", "algorithm": "vault-transit:v1",
                                      "key_path": "ext", "mount": "transit"});
    let (_, answer) = f.execute(&vault).await;
    assert_eq!(answer["status"], 500);
    assert_eq!(answer["error"], "secret_decrypt_failed");
}

#[tokio::test]
async fn config_and_user_reach_the_guest_through_their_interfaces() {
    let f = Fixture::start().await;
    let hex = f.publish("probe");
    let mut body = envelope(&hex, "GET", "/config/get");
    body["http"]["query"] = json!({"key": "region"});
    body["context"]["config"] = json!({"region": "eu", "tier": "gold"});
    assert_eq!(probe(&f, body).await, json!({"value": "eu"}));
    let mut user = envelope(&hex, "GET", "/user-v2");
    user["user"] = json!({"user_id": "u1", "user_email": "u@x", "user_name": "U One",
                          "user_type": "client", "company_name": "Acme", "client_id": "c9",
                          "additional_fields": {"locale": "de", "contact_id": "k"}});
    assert_eq!(
        probe(&f, user).await,
        json!({"ok": {"tenantId": TENANT, "clientName": "Acme", "userId": "u1", "userEmail": "u@x",
                      "userName": "U One", "userType": "client", "clientId": "c9",
                      "additionalFields": [["contact_id", "k"], ["locale", "de"]]}})
    );
}

#[tokio::test]
async fn storage_goes_to_algas_storage_api_as_base64_bytes() {
    let f = Fixture::start().await;
    let hex = f.publish("probe");
    let caps = ["cap:storage.kv"];
    let mut put = with_caps(envelope(&hex, "PUT", "/storage/put?ns=notes&key=a"), &caps);
    put["http"]["body_b64"] = json!(b64("first"));
    let put_answer = probe(&f, put.clone()).await;
    assert_eq!(put_answer["ok"]["revision"], 1, "{put_answer}");
    // A stale revision is a conflict.
    put["http"]["path"] = json!("/storage/put?ns=notes&key=a&rev=7");
    assert_eq!(probe(&f, put).await, json!({"err": "conflict"}));
    let get = probe(
        &f,
        with_caps(envelope(&hex, "GET", "/storage/get?ns=notes&key=a"), &caps),
    )
    .await;
    assert_eq!(get["ok"]["revision"], 1);
    assert_eq!(get["ok"]["key"], "a");
    let list = probe(
        &f,
        with_caps(envelope(&hex, "GET", "/storage/list?ns=notes"), &caps),
    )
    .await;
    assert_eq!(list["ok"].as_array().map(Vec::len), Some(1), "{list}");
    let delete = with_caps(
        envelope(&hex, "DELETE", "/storage/delete?ns=notes&key=a"),
        &caps,
    );
    assert_eq!(probe(&f, delete.clone()).await, json!({"ok": null}));
    assert_eq!(probe(&f, delete).await, json!({"err": "conflict"}));
    let missing = with_caps(envelope(&hex, "GET", "/storage/get?ns=notes&key=a"), &caps);
    assert_eq!(probe(&f, missing).await, json!({"err": "missing"}));
    assert_eq!(
        f.host.storage_ops(),
        [
            "put notes/a",
            "put notes/a",
            "get notes/a",
            "list notes/",
            "delete notes/a",
            "delete notes/a",
            "get notes/a"
        ]
    );
    // Without an install id, nothing leaves the worker.
    let mut no_install = with_caps(envelope(&hex, "GET", "/storage/get?ns=notes&key=a"), &caps);
    no_install["context"]["install_id"] = json!(null);
    assert_eq!(probe(&f, no_install).await, json!({"err": "denied"}));
    assert_eq!(f.host.storage_ops().len(), 7);
}

#[tokio::test]
async fn scheduler_clients_and_ui_proxy_reach_the_host_application() {
    let f = Fixture::start().await;
    let hex = f.publish("probe");
    let schedules = probe(
        &f,
        with_caps(
            envelope(&hex, "GET", "/scheduler/list"),
            &["cap:scheduler.manage"],
        ),
    )
    .await;
    assert_eq!(schedules["ok"][0]["id"], "s1", "{schedules}");
    // A refused create keeps the host application's reason.
    let created = probe(
        &f,
        with_caps(
            envelope(&hex, "POST", "/scheduler/create"),
            &["cap:scheduler.manage"],
        ),
    )
    .await;
    assert_eq!(created["success"], false);
    assert_eq!(created["error"], "Invalid cron expression");
    assert_eq!(
        created["fieldErrors"],
        r#"{"cron":"Minimum interval is 5 minutes"}"#
    );

    let mut clients = with_caps(envelope(&hex, "GET", "/clients/list"), &["cap:client.read"]);
    clients["user"] =
        json!({"user_id": "u1", "user_email": "e", "user_name": "n", "user_type": "internal"});
    let list = probe(&f, clients).await;
    assert_eq!(list["ok"]["items"][0]["clientName"], "Acme", "{list}");
    let sent = f.host.clients_calls.lock().clone();
    assert_eq!(sent[0]["operation"], "list");
    assert_eq!(
        sent[0]["user"],
        json!({"userId": "u1", "userType": "internal"})
    );

    let mut proxy = with_caps(
        envelope(&hex, "GET", "/ui-proxy?route=/proxy/ping"),
        &["cap:ui.proxy"],
    );
    secret_envelope(&mut proxy, "inline/base64", json!({"api_key": "ext-key"}));
    assert_eq!(probe(&f, proxy).await, json!({"ok": "pong"}));
    let headers = f
        .host
        .ui_proxy_headers
        .lock()
        .clone()
        .expect("ui-proxy was called");
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(h("x-api-key").as_deref(), Some("ext-key"));
    assert_eq!(h("x-alga-tenant").as_deref(), Some(TENANT));
    assert_eq!(h("x-alga-extension").as_deref(), Some(EXTENSION));
    assert_eq!(h("x-ext-install-id").as_deref(), Some("install-1"));
    assert_eq!(h("x-request-id").as_deref(), Some("req-1"));
    // The host application's token never reaches the UI proxy.
    assert!(
        headers
            .values()
            .all(|v| v.as_bytes() != HOST_TOKEN.as_bytes())
    );
}

#[tokio::test]
async fn the_javascript_guest_answers_algas_echo_case() {
    let f = Fixture::start().await;
    let hex = f.publish("js-echo");
    let mut body = envelope(&hex, "POST", "/dynamic/echo");
    body["http"]["query"] = json!({"foo": "bar"});
    body["http"]["body_b64"] =
        json!(base64::engine::general_purpose::STANDARD.encode([1u8, 2, 3, 250]));
    let (_, answer) = f.execute(&body).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["headers"]["x-generated-by"], "js-component");
    assert_eq!(
        guest_json(&answer),
        json!({"ok": true, "tenantId": TENANT, "extensionId": EXTENSION, "method": "POST",
               "path": "/dynamic/echo?foo=bar", "echo": [1, 2, 3, 250]})
    );
}
