//! Matrix rows for guest logs, the debug stream and UI files. A log stream is checked by
//! order, not by waiting: A logs a marker and A's own watcher sees it, then
//! B logs its marker; B's stream must show B's marker and never A's.

use std::time::Duration;

use annex_e2e::stack::{OTHER_TENANT, TENANT};
use annex_ops::Role;
use annex_proto::pb;
use serde_json::json;
use tokio::sync::mpsc;

use crate::cases::{Case, Entry, Seen, annex, case};
use crate::ctx::{Ctx, truncate};

/// How long a marker may take to travel worker → control plane → stream.
const MARKER_DEADLINE: Duration = Duration::from_secs(30);

/// Log messages of a stream, as they arrive.
type Lines = mpsc::UnboundedReceiver<String>;

async fn grpc_log_lines(c: &Ctx, role: Role, tenant: &str) -> Result<Lines, Seen> {
    let mut client = pb::host_services_client::HostServicesClient::new(c.channel(role).await);
    let req = pb::WatchLogsRequest {
        tenant_id: tenant.into(),
        extension_id: c.a_probe.registry_id.clone(),
        ..Default::default()
    };
    let mut stream = match client.watch_logs(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            return Err(Seen::Grpc(
                s.metadata()
                    .get("annex-error-code")
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| format!("{:?}", s.code()), str::to_owned),
            ));
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(e)) = stream.message().await {
            if tx
                .send(format!("{} {} {}", e.tenant_id, e.install_id, e.message))
                .is_err()
            {
                break;
            }
        }
    });
    Ok(rx)
}

/// The edge's debug stream for `auth`, as `data:` lines.
/// B's debug stream of probe (its own install) through the edge.
async fn sse_lines(c: &Ctx, auth: (&str, &str)) -> Result<Lines, Seen> {
    sse_query(c, auth, &format!("extensionId={}", c.a_probe.registry_id)).await
}

/// The edge's debug stream for `auth` and `query`, as `data:` lines.
async fn sse_query(c: &Ctx, auth: (&str, &str), query: &str) -> Result<Lines, Seen> {
    use http_body_util::BodyExt as _;
    let edge = c.stack.edge.http;
    let path = format!("/api/ext-debug/stream?{query}");
    let stream = tokio::net::TcpStream::connect(edge)
        .await
        .map_err(|e| Seen::Leaked(format!("connect: {e}")))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| Seen::Leaked(format!("handshake: {e}")))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", edge.to_string())
        .header(auth.0, auth.1)
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| Seen::Leaked(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Seen::Leaked(format!("send: {e}")))?;
    if resp.status() != 200 {
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(Seen::Http(
            status,
            serde_json::from_slice(&body).unwrap_or(json!(null)),
        ));
    }
    let mut body = resp.into_body();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                for line in String::from_utf8_lossy(data).lines() {
                    if let Some(d) = line.strip_prefix("data:")
                        && tx.send(d.trim().to_owned()).is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// Reads `lines` until one contains `marker`; every line read is returned.
async fn until(lines: &mut Lines, marker: &str) -> Result<Vec<String>, Vec<String>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + MARKER_DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) => {
                let done = line.contains(marker);
                seen.push(line);
                if done {
                    return Ok(seen);
                }
            }
            _ => return Err(seen),
        }
    }
}

/// A logs, A's watcher sees it, B logs; then B's `b_lines` must hold B's
/// marker and nothing of A's.
async fn logs_exclude_a(c: &Ctx, mut b_lines: Lines, tag: &str) -> Seen {
    let mut a_lines = match grpc_log_lines(c, Role::Edge, TENANT).await {
        Ok(l) => l,
        Err(seen) => return seen,
    };
    let (a_marker, b_marker) = (format!("a-marker-{tag}"), format!("b-marker-{tag}"));
    c.probe_as_a("GET", &format!("/log?msg={a_marker}"), b"")
        .await;
    if let Err(seen) = until(&mut a_lines, &a_marker).await {
        return Seen::Leaked(format!("A's own watcher never saw its marker: {seen:?}"));
    }
    let p = format!("/api/ext/{}/log?msg={b_marker}", c.b_probe.install_id);
    let (status, body) = c.http("GET", &p, &[("authorization", &c.b_auth)]).await;
    if status != 200 {
        return Seen::Http(status, body);
    }
    match until(&mut b_lines, &b_marker).await {
        Ok(seen) => seen
            .iter()
            .find_map(|l| c.mentions_a(l))
            .map_or(Seen::Hidden, Seen::Leaked),
        Err(seen) => Seen::Leaked(format!(
            "B's stream never showed B's own marker: {}",
            truncate(&format!("{seen:?}"))
        )),
    }
}

/// For a stream that should show nothing at all: A logs and A's watcher
/// sees it, then B logs and B's own control stream (probe, through the
/// edge) shows B's marker; by then A's event has passed every subscriber,
/// so whatever `target` holds must contain nothing of A's.
async fn quiet_for_a(c: &Ctx, mut target: Lines, tag: &str) -> Seen {
    let control = match sse_lines(c, ("authorization", &c.b_auth)).await {
        Ok(l) => l,
        Err(seen) => return seen,
    };
    match logs_exclude_a(c, control, tag).await {
        Seen::Hidden => {}
        other => return other,
    }
    let mut held = Vec::new();
    while let Ok(line) = target.try_recv() {
        held.push(line);
    }
    held.iter()
        .find_map(|l| c.mentions_a(l))
        .map_or(Seen::Hidden, Seen::Leaked)
}

pub fn log_cases() -> Vec<Case> {
    use Entry::*;
    vec![
        case(
            "logs",
            GrpcEdge,
            "WatchLogs of probe for B while A logs",
            Seen::Hidden,
            |c| async move {
                match grpc_log_lines(&c, Role::Edge, OTHER_TENANT).await {
                    Ok(lines) => logs_exclude_a(&c, lines, "grpc-edge").await,
                    Err(seen) => seen,
                }
            },
        ),
        case(
            "logs",
            GrpcOperator,
            "WatchLogs of probe for B while A logs",
            Seen::Hidden,
            |c| async move {
                match grpc_log_lines(&c, Role::Operator, OTHER_TENANT).await {
                    Ok(lines) => logs_exclude_a(&c, lines, "grpc-operator").await,
                    Err(seen) => seen,
                }
            },
        ),
        case(
            "logs",
            GrpcWorker,
            "WatchLogs as a worker",
            Seen::Grpc("PERMISSION_DENIED".into()),
            |c| async move {
                match grpc_log_lines(&c, Role::Worker, TENANT).await {
                    Ok(_) => Seen::Leaked("a worker opened a log stream".into()),
                    Err(seen) => seen,
                }
            },
        ),
        case(
            "debug stream",
            EdgeSession,
            "B's debug stream of probe while A logs",
            Seen::Hidden,
            |c| async move {
                match sse_lines(&c, ("authorization", &c.b_auth)).await {
                    Ok(lines) => logs_exclude_a(&c, lines, "sse-session").await,
                    Err(seen) => seen,
                }
            },
        ),
        case(
            "debug stream",
            EdgeApiKey,
            "B's API key's debug stream of probe while A logs",
            Seen::Hidden,
            |c| async move {
                match sse_lines(&c, ("x-api-key", &c.b_key_secret)).await {
                    Ok(lines) => logs_exclude_a(&c, lines, "sse-api-key").await,
                    Err(seen) => seen,
                }
            },
        ),
        case(
            "debug stream",
            EdgeSession,
            "B asks for A's tenant by parameter",
            Seen::Http(403, json!({"error": "tenant_mismatch"})),
            |c| async move {
                let p = format!(
                    "/api/ext-debug/stream?extensionId={}&tenantId={TENANT}",
                    c.a_probe.registry_id
                );
                let (status, body) = c.http("GET", &p, &[("authorization", &c.b_auth)]).await;
                Seen::Http(status, body)
            },
        ),
        case(
            "debug stream",
            EdgeSession,
            "B's debug stream of hello (installed only for A) while A logs",
            Seen::Hidden,
            |c| async move {
                let q = format!("extensionId={}", c.a_hello.registry_id);
                match sse_query(&c, ("authorization", &c.b_auth), &q).await {
                    Ok(lines) => quiet_for_a(&c, lines, "sse-hello").await,
                    Err(seen) => seen,
                }
            },
        ),
        case(
            "debug stream",
            EdgeSession,
            "B's debug stream naming A's install id while A logs",
            Seen::Hidden,
            |c| async move {
                let q = format!(
                    "extensionId={}&installId={}",
                    c.a_probe.registry_id, c.a_probe.install_id
                );
                match sse_query(&c, ("authorization", &c.b_auth), &q).await {
                    Ok(lines) => quiet_for_a(&c, lines, "sse-install").await,
                    Err(seen) => seen,
                }
            },
        ),
        case(
            "debug stream",
            EdgeSession,
            "B's debug stream with A's install id as the extension while A logs",
            Seen::Hidden,
            |c| async move {
                let q = format!("extensionId={}", c.a_probe.install_id);
                match sse_query(&c, ("authorization", &c.b_auth), &q).await {
                    Ok(lines) => quiet_for_a(&c, lines, "sse-install-as-ext").await,
                    Err(seen) => seen,
                }
            },
        ),
        case(
            "debug stream",
            Cli,
            "annex logs <hello> for B, 3 s",
            Seen::Hidden,
            |c| async move { annex(&c, &["logs", &c.a_hello.registry_id, "--for", "3"]).await },
        ),
    ]
}

pub fn ui_cases() -> Vec<Case> {
    use Entry::*;
    let ui = |c: &Ctx, ext: &str, tenant: &str| {
        format!(
            "/ext-ui/{ext}/{}/index.html?tenant={tenant}",
            c.a_hello.content_hash.replace(':', "%3A")
        )
    };
    vec![
        case(
            "ui files",
            EdgePublic,
            "A's UI with ?tenant=B",
            Seen::Http(404, json!("")),
            move |c| async move {
                let (status, body) = c
                    .http("GET", &ui(&c, &c.a_hello.registry_id, OTHER_TENANT), &[])
                    .await;
                Seen::Http(status, body)
            },
        ),
        case(
            "ui files",
            EdgePublic,
            "A's UI by A's install id with ?tenant=B",
            Seen::Http(404, json!("")),
            move |c| async move {
                let (status, body) = c
                    .http("GET", &ui(&c, &c.a_hello.install_id, OTHER_TENANT), &[])
                    .await;
                Seen::Http(status, body)
            },
        ),
        case(
            "ui files",
            EdgePublic,
            "A's hello UI hash under B's probe install",
            Seen::Http(404, json!("")),
            move |c| async move {
                let (status, body) = c
                    .http("GET", &ui(&c, &c.b_probe.install_id, OTHER_TENANT), &[])
                    .await;
                Seen::Http(status, body)
            },
        ),
    ]
}
