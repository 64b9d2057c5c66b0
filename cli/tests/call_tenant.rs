//! `annex call --tenant X` calls as tenant X even when the environment
//! holds a token for another tenant (sourcing `annex dev`'s `dev.env` sets
//! `ANNEX_TOKEN` for tenant `dev`), against a stub edge that records the
//! bearer token it receives.

mod support;

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::run_annex;

const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// An HTTP server answering 200 to everything, recording each request's
/// bearer token.
fn stub_edge() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
                let record = record.clone();
                async move {
                    let token = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or_default()
                        .to_owned();
                    record.lock().expect("lock").push(token);
                    "ok"
                }
            });
            let _ = axum::serve(listener, app).await;
        });
    });
    let addr = rx.recv().expect("stub address");
    (format!("http://{addr}"), seen)
}

/// The `tenant` claim of a JWT.
fn tenant_of(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("JSON");
    claims["tenant"].as_str().expect("tenant claim").to_owned()
}

#[test]
fn a_tenant_on_the_command_line_wins_over_a_token_for_another_tenant_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret"), SECRET).expect("secret");
    let (edge, seen) = stub_edge();
    // The token `dev.env` sets: tenant `dev`.
    let dev_token = run_annex(
        dir.path(),
        &["token", "--tenant", "dev", "--secret-file", "secret"],
        &[],
    )
    .ok()
    .stdout
    .trim()
    .to_owned();
    assert_eq!(tenant_of(&dev_token), "dev");
    let env = [
        ("ANNEX_EDGE_URL", edge.as_str()),
        ("ANNEX_TOKEN", dev_token.as_str()),
        ("ANNEX_JWT_SECRET_FILE", "secret"),
        ("ANNEX_TENANT", "dev"),
    ];
    let last = || seen.lock().expect("lock").last().cloned().expect("a call");

    // --tenant other: a dev token for `other`, and a note saying so.
    let run = run_annex(
        dir.path(),
        &["call", "ext", "/x", "--tenant", "other"],
        &env,
    )
    .ok();
    assert_eq!(tenant_of(&last()), "other");
    assert!(
        run.stderr.contains("ignoring ANNEX_TOKEN"),
        "{}",
        run.stderr
    );
    // The global option before the subcommand counts the same.
    run_annex(
        dir.path(),
        &["--tenant", "other", "call", "ext", "/x"],
        &env,
    )
    .ok();
    assert_eq!(tenant_of(&last()), "other");

    // Without --tenant on the command line the environment's token is used
    // as it is, whatever ANNEX_TENANT says.
    let other_env = [
        ("ANNEX_EDGE_URL", edge.as_str()),
        ("ANNEX_TOKEN", dev_token.as_str()),
        ("ANNEX_JWT_SECRET_FILE", "secret"),
        ("ANNEX_TENANT", "other"),
    ];
    run_annex(dir.path(), &["call", "ext", "/x"], &other_env).ok();
    assert_eq!(last(), dev_token);

    // --tenant dev matches the environment's token: it is sent unchanged.
    run_annex(dir.path(), &["call", "ext", "/x", "--tenant", "dev"], &env).ok();
    assert_eq!(last(), dev_token);

    // --token and --tenant on the command line that disagree: a usage error.
    let line = run_annex(
        dir.path(),
        &[
            "call", "ext", "/x", "--tenant", "other", "--token", &dev_token,
        ],
        &env,
    )
    .fails_with(2);
    assert!(
        line.contains("\"dev\"") && line.contains("\"other\""),
        "{line}"
    );

    // An environment token for another tenant and no secret to mint with:
    // an error naming the way out, and nothing sent as the wrong tenant.
    let calls = seen.lock().expect("lock").len();
    let no_secret = [
        ("ANNEX_EDGE_URL", edge.as_str()),
        ("ANNEX_TOKEN", dev_token.as_str()),
        ("ANNEX_JWT_SECRET_FILE", "missing"),
    ];
    let line = run_annex(
        dir.path(),
        &["call", "ext", "/x", "--tenant", "other"],
        &no_secret,
    )
    .fails_with(1);
    assert!(line.contains("pass --token"), "{line}");
    assert_eq!(seen.lock().expect("lock").len(), calls);
}
