//! `annex call` and `annex logs`: the edge's public HTTP contracts from the
//! command line. The bearer token is `--token`/`ANNEX_TOKEN`, or a dev JWT
//! minted on the spot from the dev secret for `--tenant` (what `annex dev`
//! trusts). A tenant named on the command line is never overridden by a
//! token from the environment for another tenant (sourcing `annex dev`'s
//! `dev.env` sets `ANNEX_TOKEN` for tenant `dev`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::Context;
use super::token::{self, Claims};
use crate::cli::{CallArgs, EdgeArgs, LogsArgs};
use crate::failure::usage;
use crate::output::{Report, note};

/// The token to send: given (unless the environment's token is not for the
/// tenant `--tenant` names), or minted for the tenant from the dev secret.
fn bearer(cx: &Context, edge: &EdgeArgs) -> anyhow::Result<String> {
    let given = edge
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let explicit = cx
        .global
        .tenant_on_command_line
        .then(|| cx.global.tenant.as_deref().map(str::trim))
        .flatten()
        .filter(|t| !t.is_empty());
    match (given, explicit) {
        (Some(t), None) => return Ok(t.to_owned()),
        (Some(t), Some(tenant)) => match token::tenant_claim(t) {
            Some(claimed) if claimed == tenant => return Ok(t.to_owned()),
            Some(claimed) if !edge.token_from_env => {
                return Err(usage(format!(
                    "--token is for tenant {claimed:?}, but --tenant says {tenant:?}"
                )));
            }
            None if !edge.token_from_env => return Ok(t.to_owned()),
            claimed => {
                // ANNEX_TOKEN for another (or an unknown) tenant: call as the
                // tenant the command line names.
                let secret = token::load_secret(&edge.secret_file).with_context(|| {
                    format!(
                        "ANNEX_TOKEN is not a token for tenant {tenant:?} and there is no dev JWT secret at {} to mint one; pass --token for that tenant",
                        edge.secret_file.display()
                    )
                })?;
                if let Some(claimed) = claimed {
                    note(format!(
                        "ignoring ANNEX_TOKEN (tenant {claimed:?}); calling as tenant {tenant:?} with a dev token"
                    ));
                }
                return token::mint(&secret, &Claims::dev(tenant));
            }
        },
        (None, _) => {}
    }
    let tenant = cx.tenant()?;
    let secret_file: &Path = &edge.secret_file;
    let secret = token::load_secret(secret_file).with_context(|| {
        format!(
            "no --token given and no dev JWT secret at {} (run `annex dev`, or pass --token)",
            secret_file.display()
        )
    })?;
    token::mint(&secret, &Claims::dev(&tenant))
}

fn url(edge: &str, tail: &str) -> String {
    format!(
        "{}/{}",
        edge.trim_end_matches('/'),
        tail.trim_start_matches('/')
    )
}

pub async fn call(cx: &Context, args: CallArgs) -> anyhow::Result<Report> {
    let token = bearer(cx, &args.edge)?;
    let method = reqwest::Method::from_bytes(args.method.to_uppercase().as_bytes())
        .map_err(|_| usage(format!("{:?} is not an HTTP method", args.method)))?;
    let target = url(
        &args.edge.edge,
        &format!(
            "api/ext/{}/{}",
            args.extension,
            args.path.trim_start_matches('/')
        ),
    );
    let body = match (&args.data, &args.data_file) {
        (Some(d), _) => Some(d.clone().into_bytes()),
        (None, Some(f)) => {
            Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, None) => None,
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()
        .context("building the HTTP client")?;
    let mut request = client.request(method, &target).bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", &args.content_type)
            .body(body);
    }
    let resp = request
        .send()
        .await
        .with_context(|| format!("calling {target}"))?;
    let status = resp.status();
    let headers: serde_json::Map<String, serde_json::Value> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let bytes = resp.bytes().await.context("reading the response")?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if !status.is_success() {
        // One line, the edge's error code included (e.g. {"error":"endpoint_not_found"}).
        anyhow::bail!("HTTP {} from {target}: {}", status.as_u16(), text.trim());
    }
    Ok(Report::new(
        text.clone(),
        json!({"status": status.as_u16(), "headers": headers, "body": text}),
    ))
}

pub async fn logs(cx: &Context, args: LogsArgs) -> anyhow::Result<Report> {
    let token = bearer(cx, &args.edge)?;
    let mut target = url(
        &args.edge.edge,
        &format!("api/ext-debug/stream?extensionId={}", args.extension),
    );
    if let Some(r) = &args.request_id {
        target.push_str(&format!("&requestId={r}"));
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")?;
    let mut resp = client
        .get(&target)
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .with_context(|| format!("opening {target}"))?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        anyhow::bail!("HTTP {status} from {target}: {}", text.trim());
    }
    let deadline = args
        .for_secs
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut buf = String::new();
    let mut seen = 0usize;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, resp.chunk()).await {
                Ok(chunk) => chunk,
                Err(_) => break,
            },
            None => resp.chunk().await,
        };
        let Some(chunk) = next.context("reading the log stream")? else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    print_event(data.trim(), cx.global.json);
                    seen += 1;
                }
            }
            if args.limit.is_some_and(|n| seen >= n) {
                return Ok(Report::new(String::new(), json!({"events": seen})));
            }
        }
    }
    Ok(Report::new(String::new(), json!({"events": seen})))
}

fn print_event(data: &str, json: bool) {
    if json {
        println!("{data}");
        return;
    }
    match serde_json::from_str::<serde_json::Value>(data) {
        Ok(v) => {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
            println!(
                "{} {:5} {:6} {} {}",
                v.get("ts")
                    .and_then(|t| t.as_i64())
                    .map_or(String::new(), |ms| {
                        chrono::DateTime::from_timestamp_millis(ms)
                            .map(|t| t.format("%H:%M:%S%.3f").to_string())
                            .unwrap_or_default()
                    }),
                s("level"),
                s("stream"),
                s("requestId"),
                s("message")
            );
        }
        Err(_) => println!("{data}"),
    }
}
