//! A calibration target: an HTTP server with the edge's URL shapes that
//! answers at once, to measure the harness's own ceiling on this machine
//! (`annex-loadtest stub`) and to test the harness. It says nothing about
//! Annex. Routes: `/hello`, `/echo` (answers 400 unless the body is exactly
//! `x-expect-len` bytes, when that header is sent), and under
//! `/api/ext/{id}/`: `hello`, `echo`, `storage/get|put`, `secrets/get`, and
//! `loop` (504 after 20 ms, like a guest hitting its timeout).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

/// What the stub has seen.
#[derive(Debug, Default)]
pub struct Seen {
    pub requests: AtomicU64,
    /// The `{id}`s of `/api/ext/{id}/...` requests.
    pub installs: Mutex<BTreeSet<String>>,
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    seen: Arc<Seen>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move { handle(&seen, method, uri, headers, body).await }
        },
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn handle(
    seen: &Seen,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    seen.requests.fetch_add(1, Ordering::Relaxed);
    let path = uri.path();
    let (install, rest) = match path.strip_prefix("/api/ext/") {
        Some(p) => p.split_once('/').unwrap_or((p, "")),
        None => ("", path.trim_start_matches('/')),
    };
    if !install.is_empty()
        && let Ok(mut installs) = seen.installs.lock()
        && !installs.contains(install)
    {
        installs.insert(install.to_owned());
    }
    match (method, rest) {
        (Method::GET, "hello") => (StatusCode::OK, r#"{"message":"hello"}"#.into()),
        (Method::POST, "echo") => {
            let want = headers
                .get("x-expect-len")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            match want {
                Some(n) if n != body.len() => (StatusCode::BAD_REQUEST, "wrong length".into()),
                _ => (StatusCode::OK, String::from_utf8_lossy(&body).into_owned()),
            }
        }
        (Method::GET, "storage/get") | (Method::POST, "storage/put") => {
            (StatusCode::OK, r#"{"ok":{"value":[]}}"#.into())
        }
        (Method::GET, "secrets/get") => (StatusCode::OK, r#"{"ok":"s3cret"}"#.into()),
        (Method::GET, "loop") => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            (StatusCode::GATEWAY_TIMEOUT, "timeout".into())
        }
        _ => (StatusCode::NOT_FOUND, "not found".into()),
    }
}
