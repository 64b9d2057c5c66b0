//! The runner's answer table, row by row, in Alga's order of checks; the
//! framework's own refusals; the service token; the other routes.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{
    EXTENSION, Fixture, JsonRequest as _, JsonResponse as _, Options, TENANT, b64, envelope,
    guest_json,
};

#[tokio::test]
async fn success_is_http_200_with_the_guests_answer() {
    let f = Fixture::start().await;
    let hex = f.publish("hello");
    let (status, answer) = f.execute(&envelope(&hex, "GET", "/hello")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["error"], json!(null));
    assert_eq!(answer["headers"]["content-type"], "application/json");
    assert_eq!(
        guest_json(&answer),
        json!({"message": "hello", "tenantId": TENANT, "path": "/hello"})
    );
    // The guest's error status is an answer too, not an error.
    let (_, missing) = f.execute(&envelope(&hex, "DELETE", "/nope")).await;
    assert_eq!(
        (missing["status"].clone(), missing["error"].clone()),
        (json!(404), json!(null))
    );
}

#[tokio::test]
async fn missing_routing_headers_answer_400_in_the_envelope() {
    let f = Fixture::start().await;
    let hex = f.publish("hello");
    for (tenant, extension) in [("", EXTENSION), (TENANT, " ")] {
        let response = f
            .request("/v1/execute")
            .header("x-alga-tenant", tenant)
            .header("x-alga-extension", extension)
            .json(&envelope(&hex, "GET", "/hello"))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), StatusCode::OK);
        let answer: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(
            answer,
            json!({"status": 400, "headers": {}, "body_b64": null, "error": "missing_routing_headers"})
        );
    }
    let response = f
        .request("/v1/execute")
        .json(&envelope(&hex, "GET", "/hello"))
        .send()
        .await
        .expect("answers");
    let answer: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(answer["error"], "missing_routing_headers");
}

#[tokio::test]
async fn routing_headers_that_name_another_tenant_are_refused() {
    let f = Fixture::start().await;
    let hex = f.publish("hello");
    let mut body = envelope(&hex, "GET", "/hello");
    body["context"]["tenant_id"] = json!("tenant-b");
    let (status, answer) = f.execute(&body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"], 400);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("routing_mismatch: ")),
        "{answer}"
    );
}

#[tokio::test]
async fn without_a_bundle_store_every_execution_is_engine_init_failed() {
    let f = Fixture::with(Options {
        no_bundle_store: true,
        ..Options::default()
    })
    .await;
    let (status, answer) = f
        .execute(&envelope(&"ab".repeat(32), "GET", "/hello"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"], 500);
    assert_eq!(
        answer["error"],
        "engine_init_failed: BUNDLE_STORE_BASE is not set"
    );
}

#[tokio::test]
async fn a_bundle_that_cannot_be_fetched_is_bundle_fetch_failed() {
    let f = Fixture::start().await;
    let hex = "cd".repeat(32);
    let (status, answer) = f.execute(&envelope(&hex, "GET", "/hello")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"], 502);
    assert_eq!(
        answer["error"],
        format!("bundle_fetch_failed: bundle sha256:{hex} not found")
    );
    let mut bad = envelope(&hex, "GET", "/hello");
    bad["context"]["content_hash"] = json!("sha256:xyz");
    let (_, answer) = f.execute(&bad).await;
    assert_eq!(answer["status"], 502);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("bundle_fetch_failed: invalid content hash")),
        "{answer}"
    );
}

#[tokio::test]
async fn unknown_capabilities_are_checked_after_the_bundle_loads() {
    let f = Fixture::start().await;
    let hex = f.publish("hello");
    let mut body = envelope(&hex, "GET", "/hello");
    body["providers"] = json!(["cap:http.fetch", "cap:nope", " fs.write "]);
    let (_, answer) = f.execute(&body).await;
    assert_eq!(answer["status"], 400);
    assert_eq!(answer["error"], "unknown_capabilities: cap:nope, fs.write");
    // With no bundle to load, the fetch failure wins, as in Alga's runner.
    let mut both = body.clone();
    both["context"]["content_hash"] = json!(format!("sha256:{}", "ef".repeat(32)));
    let (_, answer) = f.execute(&both).await;
    assert_eq!(answer["status"], 502, "{answer}");
}

#[tokio::test]
async fn an_envelope_that_does_not_open_is_secret_decrypt_failed() {
    let f = Fixture::start().await;
    let hex = f.publish("probe");
    let mut body = envelope(&hex, "GET", "/context");
    body["secret_envelope"] =
        json!({"ciphertext_b64": "not base64!", "algorithm": "inline/base64"});
    let (status, answer) = f.execute(&body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({"status": 500, "headers": {}, "body_b64": null, "error": "secret_decrypt_failed"})
    );
    body["secret_envelope"] =
        json!({"ciphertext_b64": b64(r#"{"n": 1}"#), "algorithm": "inline/base64"});
    let (_, answer) = f.execute(&body).await;
    assert_eq!(answer["error"], "secret_decrypt_failed");
}

#[tokio::test]
async fn guest_failures_and_a_bad_body_are_execute_failed() {
    let f = Fixture::start().await;
    let probe = f.publish("probe");
    let mut body = envelope(&probe, "POST", "/context");
    body["http"]["body_b64"] = json!("%%%");
    let (_, answer) = f.execute(&body).await;
    assert_eq!(answer["status"], 500);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("execute_failed: invalid body base64: ")),
        "{answer}"
    );
    let misbehave = f.publish("misbehave");
    let (_, panicked) = f.execute(&envelope(&misbehave, "GET", "/panic")).await;
    assert_eq!(panicked["status"], 500);
    assert!(
        panicked["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("execute_failed: "))
    );
    let mut looping = envelope(&misbehave, "GET", "/loop");
    looping["limits"] = json!({"timeout_ms": 200});
    let (_, timed_out) = f.execute(&looping).await;
    assert_eq!(timed_out["status"], 500);
    assert_eq!(
        timed_out["error"],
        "execute_failed: execution exceeded its time limit of 200 ms"
    );
}

#[tokio::test]
async fn malformed_requests_get_the_frameworks_statuses() {
    let f = Fixture::start().await;
    let hex = f.publish("hello");
    let send = |request: reqwest::RequestBuilder| async move {
        request
            .header("x-alga-tenant", TENANT)
            .header("x-alga-extension", EXTENSION)
            .send()
            .await
            .expect("answers")
            .status()
    };
    let body = envelope(&hex, "GET", "/hello").to_string();
    let no_type = send(f.request("/v1/execute").body(body.clone())).await;
    assert_eq!(no_type, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let syntax = send(
        f.request("/v1/execute")
            .header("content-type", "application/json")
            .body("{\"context\":"),
    )
    .await;
    assert_eq!(syntax, StatusCode::BAD_REQUEST);
    let mut missing = envelope(&hex, "GET", "/hello");
    missing["context"]
        .as_object_mut()
        .expect("context")
        .remove("content_hash");
    let unprocessable = send(f.request("/v1/execute").json(&missing)).await;
    assert_eq!(unprocessable, StatusCode::UNPROCESSABLE_ENTITY);
    let mut user = envelope(&hex, "GET", "/hello");
    user["user"] = json!({"user_id": "u"});
    assert_eq!(
        send(f.request("/v1/execute").json(&user)).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut big = envelope(&hex, "POST", "/echo");
    big["http"]["body_b64"] = json!("A".repeat(2 * 1024 * 1024));
    assert_eq!(
        send(f.request("/v1/execute").json(&big)).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn the_service_token_is_required() {
    let f = Fixture::start().await;
    let hex = f.publish("hello");
    for token in [None, Some("wrong-token-wrong-token"), Some("")] {
        let mut request = f
            .bare(Method::POST, "/v1/execute")
            .header("x-alga-tenant", TENANT)
            .header("x-alga-extension", EXTENSION)
            .json(&envelope(&hex, "GET", "/hello"));
        if let Some(t) = token {
            request = request.header("x-runner-service-token", t);
        }
        let response = request.send().await.expect("answers");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let answer: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(answer["error"], "unauthorized");
    }
    // Before the body is even read: a malformed one is still 401.
    let response = f
        .bare(Method::POST, "/v1/execute")
        .body("not json")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let warmup = f
        .bare(Method::POST, "/warmup")
        .json(&json!({"content_hash": hex}))
        .send()
        .await
        .expect("answers");
    assert_eq!(warmup.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn answers_are_never_cached() {
    let f = Fixture::start().await;
    let hex = f.publish("hello");
    let response = f
        .request("/v1/execute")
        .header("x-alga-tenant", TENANT)
        .header("x-alga-extension", EXTENSION)
        .json(&envelope(&hex, "GET", "/hello"))
        .send()
        .await
        .expect("answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
}

#[tokio::test]
async fn healthz_warmup_and_the_routes_left_to_the_edge() {
    let f = Fixture::start().await;
    let hex = f.publish("hello");
    let health = f
        .bare(Method::GET, "/healthz")
        .send()
        .await
        .expect("answers");
    assert_eq!(health.status(), StatusCode::OK);
    let health: serde_json::Value = health.json().await.expect("JSON");
    assert_eq!(
        health,
        json!({"cache_writable": true, "bundle_store": "ok", "ext_cache_max_bytes": null})
    );

    let refused = f
        .request("/warmup")
        .json(&json!({"content_hash": format!("sha256:{hex}")}))
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.text().await.expect("text"),
        "warmup unsupported without tenant + extension context"
    );
    let warmed = f
        .request("/warmup")
        .header("x-alga-tenant", TENANT)
        .header("x-alga-extension", EXTENSION)
        .json(&json!({"content_hash": format!("sha256:{hex}")}))
        .send()
        .await
        .expect("answers");
    assert_eq!(warmed.status(), StatusCode::OK);
    let warmed: serde_json::Value = warmed.json().await.expect("JSON");
    assert!(
        ["compiled", "disk", "memory"].contains(&warmed["source"].as_str().unwrap_or_default()),
        "{warmed}"
    );

    for path in ["/", "/ext-ui/e/sha256:ab/index.html"] {
        let r = f.bare(Method::GET, path).send().await.expect("answers");
        assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED, "{path}");
        assert!(r.text().await.expect("text").contains("docs/operators.md"));
    }
}

#[tokio::test]
async fn a_draining_worker_answers_worker_unavailable_without_running() {
    let f = Fixture::start().await;
    let hex = f.publish("probe");
    f.api.executor.drain_state().drain();
    let mut put = envelope(&hex, "PUT", "/storage/put?ns=n&key=k");
    put["providers"] = json!(["cap:storage.kv"]);
    let (status, answer) = f.execute(&put).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({"status": 503, "headers": {}, "body_b64": null, "error": "worker_unavailable: worker is draining"})
    );
    assert!(f.host.storage_ops().is_empty(), "the guest did not run");
    let health = f
        .bare(Method::GET, "/healthz")
        .send()
        .await
        .expect("answers");
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn with_certificate_files_the_api_speaks_tls() {
    let ca = annex_ops::devcerts::DevCa::generate().expect("CA");
    let material = ca
        .issue(annex_ops::Role::Worker, "runner")
        .expect("certificate");
    let dir = crate::support::tmp_dir("runner-api-tls");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &material.cert_pem).expect("cert file");
    std::fs::write(&key, &material.key_pem).expect("key file");
    let f = Fixture::with(Options {
        flags: vec![
            format!("--runner-api-tls-cert={}", cert.display()),
            format!("--runner-api-tls-key={}", key.display()),
        ],
        ..Options::default()
    })
    .await;
    let hex = f.publish("hello");
    annex_ops::tls::install_crypto_provider();
    let root = reqwest::Certificate::from_pem(&material.ca_pem).expect("CA PEM");
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .expect("client");
    let response = client
        .post(f.api.url("https", "/v1/execute"))
        .header("x-runner-service-token", super::TOKEN)
        .header("x-alga-tenant", TENANT)
        .header("x-alga-extension", EXTENSION)
        .json(&envelope(&hex, "GET", "/hello"))
        .send()
        .await
        .expect("answers over TLS");
    assert_eq!(response.status(), StatusCode::OK);
    let answer = response.json().await.expect("JSON");
    assert_eq!(answer["status"], 200, "{answer}");
    // Plain HTTP gets no answer on a TLS listener.
    let plain = f.bare(Method::GET, "/healthz").send().await;
    assert!(plain.is_err(), "{plain:?}");
}
