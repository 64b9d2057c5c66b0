//! `annex capture start|stop|list|show|export` and `annex replay` (docs/design/replay.md).
//!
//! A replay runs in this process on the worker crate's engine
//! (`annex_worker::capture::replay`): the capture's tape answers every host call, clock
//! reading and random draw, so nothing is reached over the network, and the same capture
//! and bundle give the same answer every time. The capture and its bundle come from the
//! control plane (`annex replay <ID>`) or from a file written by `annex capture export`
//! (`annex replay --file`, no control plane needed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use annex_proto::pb;
use annex_worker::capture::replay::{self, ReplayInput, Replayed};
use annex_worker::capture::tape::{Answer, Tape};
use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Context, blocking};
use crate::cli::{CaptureCommand, ReplayArgs};
use crate::client::{ControlPlane, remote};
use crate::failure::usage;
use crate::output::{Report, fields, note, table, time, time_json};

/// The format of `annex capture export` files.
const EXPORT_FORMAT: &str = "annex-capture-export/1";

pub async fn run(cx: &Context, cmd: CaptureCommand) -> anyhow::Result<Report> {
    match cmd {
        CaptureCommand::Start {
            install,
            sample,
            failures,
            retention_hours,
            max_bytes,
        } => {
            start(
                cx,
                install.name(),
                pb::StartCaptureRequest {
                    install: None,
                    sample_ppm: sample.unwrap_or(0),
                    failures,
                    retention_hours: retention_hours.unwrap_or(0),
                    max_bytes: max_bytes.unwrap_or(0),
                },
            )
            .await
        }
        CaptureCommand::Stop { install } => stop(cx, install.name()).await,
        CaptureCommand::List { extension, limit } => {
            list(cx, extension.as_deref(), limit.unwrap_or(0)).await
        }
        CaptureCommand::Show { id, reveal_secrets } => show(cx, &id, reveal_secrets).await,
        CaptureCommand::Export {
            id,
            output,
            reveal_secrets,
        } => export(cx, &id, &output, reveal_secrets).await,
    }
}

fn install_ref(tenant: &str, extension: &str) -> pb::CaptureInstallRef {
    pb::CaptureInstallRef {
        tenant_id: tenant.to_owned(),
        extension: extension.to_owned(),
    }
}

fn percent(ppm: u32) -> String {
    format!("{}%", f64::from(ppm) / 10_000.0)
}

fn policy_json(p: &pb::CapturePolicy) -> Value {
    json!({
        "install_id": p.install_id,
        "sample_ppm": p.sample_ppm,
        "failures": p.failures,
        "retention_hours": p.retention_hours,
        "max_bytes": p.max_bytes,
        "created_at": time_json(p.created_at.as_ref()),
    })
}

async fn start(
    cx: &Context,
    extension: &str,
    mut request: pb::StartCaptureRequest,
) -> anyhow::Result<Report> {
    if request.sample_ppm == 0 && !request.failures {
        return Err(usage(
            "capture start needs --sample PERCENT, --failures, or both",
        ));
    }
    let tenant = cx.tenant()?;
    request.install = Some(install_ref(&tenant, extension));
    let cp = cx.connect().await?;
    let policy = cp
        .captures()
        .start_capture(request)
        .await
        .map_err(remote)
        .with_context(|| format!("starting capture of {extension} for tenant {tenant}"))?
        .into_inner();
    let text = format!(
        "capturing {extension}: {} of calls{}, kept {} h, at most {} bytes each",
        percent(policy.sample_ppm),
        if policy.failures {
            " and every failure"
        } else {
            ""
        },
        policy.retention_hours,
        policy.max_bytes
    );
    Ok(Report::new(text, policy_json(&policy)))
}

async fn stop(cx: &Context, extension: &str) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    cp.captures()
        .stop_capture(install_ref(&tenant, extension))
        .await
        .map_err(remote)
        .with_context(|| format!("stopping capture of {extension} for tenant {tenant}"))?;
    Ok(Report::new(
        format!("stopped capturing {extension}"),
        json!({ "stopped": extension }),
    ))
}

fn summary_json(s: &pb::CaptureSummary) -> Value {
    json!({
        "capture_id": s.capture_id,
        "tenant_id": s.tenant_id,
        "install_id": s.install_id,
        "request_id": s.request_id,
        "content_hash": s.content_hash,
        "reason": s.reason,
        "outcome": s.outcome,
        "status": s.status,
        "method": s.method,
        "path": s.path,
        "size_bytes": s.size_bytes,
        "secret_keys": s.secret_keys,
        "created_at": time_json(s.created_at.as_ref()),
        "expires_at": time_json(s.expires_at.as_ref()),
    })
}

async fn list(cx: &Context, extension: Option<&str>, limit: u32) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let listed = cp
        .captures()
        .list_captures(pb::ListCapturesRequest {
            tenant_id: tenant.clone(),
            extension: extension.unwrap_or_default().to_owned(),
            limit,
        })
        .await
        .map_err(remote)
        .with_context(|| format!("listing the captures of tenant {tenant}"))?
        .into_inner();
    let rows: Vec<Vec<String>> = listed
        .captures
        .iter()
        .map(|c| {
            vec![
                c.capture_id.clone(),
                time(c.created_at.as_ref()),
                format!("{} {}", c.method, c.path),
                format!("{} {}", c.outcome, c.status),
                c.reason.clone(),
                c.size_bytes.to_string(),
            ]
        })
        .collect();
    let mut text = String::new();
    if let Some(p) = &listed.policy {
        let _ = writeln!(
            text,
            "policy: {} of calls{}, kept {} h",
            percent(p.sample_ppm),
            if p.failures { " and every failure" } else { "" },
            p.retention_hours
        );
    }
    if rows.is_empty() {
        text.push_str("no captures");
    } else {
        text.push_str(&table(
            &[
                "CAPTURE", "CREATED", "REQUEST", "OUTCOME", "REASON", "BYTES",
            ],
            &rows,
        ));
    }
    Ok(Report::new(
        text,
        json!({
            "captures": listed.captures.iter().map(summary_json).collect::<Vec<_>>(),
            "policy": listed.policy.as_ref().map(policy_json),
        }),
    ))
}

/// One capture from the control plane.
async fn fetch(
    cp: &ControlPlane,
    tenant: &str,
    id: &str,
    reveal: bool,
) -> anyhow::Result<(pb::CaptureSummary, Tape, BTreeMap<String, String>)> {
    let capture = cp
        .captures()
        .get_capture(pb::GetCaptureRequest {
            tenant_id: tenant.to_owned(),
            capture_id: id.to_owned(),
            reveal_secrets: reveal,
        })
        .await
        .map_err(remote)
        .with_context(|| format!("reading capture {id} of tenant {tenant}"))?
        .into_inner();
    let tape = Tape::from_json(&capture.tape)?;
    Ok((
        capture.summary.unwrap_or_default(),
        tape,
        capture.secrets.into_iter().collect(),
    ))
}

fn answer_line(answer: &Answer) -> String {
    match answer {
        Answer::Failed { status, message } => format!("failed {status}: {message}"),
        Answer::Record(None) => "no record".to_owned(),
        Answer::Record(Some(r)) => {
            format!("revision {} ({} bytes)", r.revision, r.value.decode().len())
        }
        Answer::Records(r) => format!("{} records", r.len()),
        Answer::Deleted(d) => format!("deleted: {d}"),
        Answer::SecretKeys(keys) => format!("keys {}", keys.join(", ")),
        Answer::Http(h) => format!("{} ({} bytes)", h.status, h.body.decode().len()),
        Answer::HttpError(e) => e.clone(),
        Answer::Message(b) => format!("{} bytes", b.decode().len()),
        Answer::WasiHttp { status, body, .. } => {
            format!("{status} ({} bytes)", body.decode().len())
        }
    }
}

fn body_text(body: Option<&[u8]>) -> String {
    String::from_utf8_lossy(body.unwrap_or_default()).into_owned()
}

async fn show(cx: &Context, id: &str, reveal: bool) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let (summary, tape, secrets) = fetch(&cp, &tenant, id, reveal).await?;
    let request = replay::captured_request(&tape)?;
    let response = replay::recorded_response(&tape)?;
    let http = request.http.clone().unwrap_or_default();
    let mut text = fields(&[
        ("capture", summary.capture_id.clone()),
        ("request", format!("{} {}", http.method, http.path)),
        ("request id", summary.request_id.clone()),
        ("bundle", summary.content_hash.clone()),
        ("config version", tape.config_version.clone()),
        ("outcome", format!("{} {}", summary.outcome, summary.status)),
        ("reason", summary.reason.clone()),
        (
            "clock readings",
            format!(
                "{} wall, {} monotonic",
                tape.wall_clock.len(),
                tape.monotonic_clock.len()
            ),
        ),
        ("created", time(summary.created_at.as_ref())),
        ("expires", time(summary.expires_at.as_ref())),
    ]);
    for (i, call) in tape.calls.iter().enumerate() {
        let _ = writeln!(
            text,
            "#{i} {} -> {}",
            call.ask.describe(),
            answer_line(&call.answer)
        );
    }
    if tape.truncated {
        text.push_str("(the capture reached its size cap; later calls are missing)\n");
    }
    for (k, v) in &secrets {
        let _ = writeln!(text, "secret {k} = {v}");
    }
    let _ = write!(
        text,
        "response {}\n{}",
        response.status,
        body_text(response.body.as_deref())
    );
    Ok(Report::new(
        text,
        json!({
            "capture": summary_json(&summary),
            "tape": tape,
            "secrets": secrets,
        }),
    ))
}

/// An `annex capture export` file.
#[derive(Debug, Serialize, Deserialize)]
struct Export {
    format: String,
    capture: Value,
    tape: Tape,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// The captured `bundle.tar.zst`, base64.
    bundle: String,
}

/// The bundle `content_hash` from the registry.
async fn fetch_bundle(cp: &ControlPlane, content_hash: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = cp
        .registry()
        .fetch_bundle(pb::FetchBundleRequest {
            content_hash: content_hash.to_owned(),
        })
        .await
        .map_err(remote)
        .with_context(|| format!("fetching bundle {content_hash}"))?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(part) = stream
        .message()
        .await
        .map_err(remote)
        .with_context(|| format!("fetching bundle {content_hash}"))?
    {
        if let Some(pb::fetch_bundle_response::Part::Chunk(chunk)) = part.part {
            bytes.extend_from_slice(&chunk);
        }
    }
    Ok(bytes)
}

async fn export(cx: &Context, id: &str, output: &Path, reveal: bool) -> anyhow::Result<Report> {
    let tenant = cx.tenant()?;
    let cp = cx.connect().await?;
    let (summary, tape, secrets) = fetch(&cp, &tenant, id, reveal).await?;
    let bundle = fetch_bundle(&cp, &summary.content_hash).await?;
    let file = Export {
        format: EXPORT_FORMAT.to_owned(),
        capture: summary_json(&summary),
        tape,
        secrets,
        bundle: B64.encode(&bundle),
    };
    let bytes = serde_json::to_vec_pretty(&file).context("encoding the export")?;
    std::fs::write(output, &bytes).with_context(|| format!("writing {}", output.display()))?;
    if reveal {
        note(format!(
            "{} holds the secret values the guest read, in clear",
            output.display()
        ));
    }
    Ok(Report::new(
        format!("wrote capture {id} to {}", output.display()),
        json!({ "capture_id": id, "path": output.display().to_string(), "bytes": bytes.len() }),
    ))
}

/// Largest export file read (a 3 MiB tape and a bundle of up to 200 MiB, base64).
const MAX_EXPORT_BYTES: u64 = 300 * 1024 * 1024;

fn read_export(path: &Path) -> anyhow::Result<Export> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_EXPORT_BYTES {
        return Err(usage(format!(
            "{} is larger than any export",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let export: Export = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not an `annex capture export` file", path.display()))?;
    if export.format != EXPORT_FORMAT {
        return Err(usage(format!(
            "{} has format {}; this annex reads {EXPORT_FORMAT}",
            path.display(),
            export.format
        )));
    }
    Ok(export)
}

pub async fn replay(cx: &Context, args: ReplayArgs) -> anyhow::Result<Report> {
    let (tape, secrets, captured_bundle) = match (&args.file, &args.id) {
        (Some(path), _) => {
            let path = path.clone();
            let export = blocking(move || read_export(&path)).await?;
            let bundle = B64
                .decode(&export.bundle)
                .context("decoding the export's bundle")?;
            (export.tape, export.secrets, Some(bundle))
        }
        (None, Some(id)) => {
            let tenant = cx.tenant()?;
            let cp = cx.connect().await?;
            let (summary, tape, secrets) = fetch(&cp, &tenant, id, args.reveal_secrets).await?;
            let bundle = match &args.bundle {
                Some(_) => None,
                None => Some(fetch_bundle(&cp, &summary.content_hash).await?),
            };
            (tape, secrets, bundle)
        }
        (None, None) => return Err(usage("replay needs a capture id or --file")),
    };
    let bundle = match &args.bundle {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => captured_bundle.unwrap_or_default(),
    };
    let read_secrets = tape
        .calls
        .iter()
        .any(|c| matches!(c.answer, Answer::SecretKeys(ref keys) if !keys.is_empty()));
    if read_secrets && secrets.is_empty() {
        note(format!(
            "the guest read secrets; without --reveal-secrets it sees {} for each",
            annex_worker::capture::SEALED
        ));
    }
    let started = Instant::now();
    let replayed = replay::replay(ReplayInput {
        tape,
        secrets,
        bundle,
        cache_dir: args.cache_dir.clone(),
    })
    .await?;
    let elapsed = started.elapsed();
    Ok(replay_report(&replayed, elapsed))
}

fn replay_report(r: &Replayed, elapsed: std::time::Duration) -> Report {
    let response = &r.response;
    let mut text = String::new();
    let outcome = annex_outcome(response.outcome);
    let _ = writeln!(text, "{} {}", response.status, outcome);
    let mut headers: Vec<_> = response.headers.iter().collect();
    headers.sort();
    for (k, v) in headers {
        let _ = writeln!(text, "{k}: {v}");
    }
    if !response.error.is_empty() {
        let _ = writeln!(text, "error: {}", response.error);
    }
    let _ = writeln!(text, "\n{}", body_text(response.body.as_deref()));
    match &r.divergence {
        Some(d) => {
            let _ = writeln!(text, "divergence: {d}");
        }
        None => text.push_str("no divergence: the guest asked for exactly what was recorded\n"),
    }
    let _ = write!(
        text,
        "{}",
        if r.same_response {
            "the response is identical to the recorded one"
        } else {
            "the response differs from the recorded one"
        }
    );
    let body = response.body.as_deref().unwrap_or_default();
    Report::new(
        text,
        json!({
            "content_hash": r.content_hash,
            "response": {
                "status": response.status,
                "outcome": outcome,
                "headers": response.headers,
                "body": String::from_utf8(body.to_vec()).unwrap_or_else(|_| B64.encode(body)),
                "error": response.error,
            },
            "same_response": r.same_response,
            "divergence": r.divergence,
            "replay_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        }),
    )
}

fn annex_outcome(outcome: i32) -> String {
    pb::Outcome::try_from(outcome)
        .unwrap_or(pb::Outcome::Unspecified)
        .as_str_name()
        .trim_start_matches("OUTCOME_")
        .to_lowercase()
}
