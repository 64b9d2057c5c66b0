//! The matrix as data: one [`Case`] per (resource, entry point, attempt)
//! with the exact answer tenant B must see, and the one [`check`] that runs
//! a case and compares. Answers are what a user meets: the HTTP status and
//! JSON body at the edge, the `annex-error-code` on gRPC, the CLI's exit
//! status and error code, or [`Seen::Hidden`] for a listing or stream that
//! answered without any of tenant A's data. Entry points a resource has no
//! route through have no row (the CLI has no KV or log-stream command of
//! its own beyond `annex logs`; workers reach data only with a grant).
//! The rows themselves are in `rows_installs.rs`, `rows_data.rs` (KV,
//! secrets, config), `rows_logs.rs` (logs, debug stream, UI files) and
//! `rows_admin.rs` (usage, quotas, API keys); this module holds the shapes
//! and the helpers they share.

use std::future::Future;
use std::sync::Arc;

use annex_e2e::stack::{OTHER_TENANT, TENANT};
use annex_proto::pb;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::ctx::Ctx;

/// Where B comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    /// The edge without credentials (`/ext-ui`).
    EdgePublic,
    /// The edge with B's session token.
    EdgeSession,
    /// The edge with B's API key.
    EdgeApiKey,
    GrpcOperator,
    GrpcEdge,
    GrpcWorker,
    /// The `annex` binary with `--tenant` B.
    Cli,
}

impl Entry {
    pub const ALL: [Entry; 7] = [
        Entry::EdgePublic,
        Entry::EdgeSession,
        Entry::EdgeApiKey,
        Entry::GrpcOperator,
        Entry::GrpcEdge,
        Entry::GrpcWorker,
        Entry::Cli,
    ];
}

/// What B saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Http(u16, Value),
    /// The `annex-error-code` of a refused gRPC call.
    Grpc(String),
    /// The CLI's exit status and the code in its error line.
    Cli(i32, String),
    /// Answered, and nothing of A's in the answer.
    Hidden,
    /// Something of A's reached B.
    Leaked(String),
    /// The resource does not exist in Annex yet; the row says so.
    NotBuilt(&'static str),
}

type Run = Box<dyn Fn(Arc<Ctx>) -> BoxFuture<'static, Seen> + Send + Sync>;

pub struct Case {
    pub resource: &'static str,
    pub entry: Entry,
    pub action: &'static str,
    pub expect: Seen,
    run: Run,
}

pub fn case<F, Fut>(
    resource: &'static str,
    entry: Entry,
    action: &'static str,
    expect: Seen,
    run: F,
) -> Case
where
    F: Fn(Arc<Ctx>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Seen> + Send + 'static,
{
    Case {
        resource,
        entry,
        action,
        expect,
        run: Box::new(move |c| Box::pin(run(c))),
    }
}

/// Runs one case: `Ok` with what was seen when it is the expected answer
/// (a not-built row is `Ok(NotBuilt)` without running anything).
pub async fn check(ctx: &Arc<Ctx>, case: &Case) -> Result<Seen, String> {
    if let Seen::NotBuilt(_) = case.expect {
        return Ok(case.expect.clone());
    }
    let seen = (case.run)(ctx.clone()).await;
    let line = format!(
        "{} × {:?}: {}: expected {:?}, saw {:?}",
        case.resource, case.entry, case.action, case.expect, seen
    );
    eprintln!(
        "{} {line}",
        if seen == case.expect { "ok  " } else { "FAIL" }
    );
    if seen == case.expect && !matches!(seen, Seen::Leaked(_)) {
        Ok(seen)
    } else {
        Err(line)
    }
}

pub fn http(status: u16, error: &str) -> Seen {
    Seen::Http(status, json!({"error": error}))
}

pub fn grpc(code: &str) -> Seen {
    Seen::Grpc(code.to_owned())
}

pub fn cli(code: &str) -> Seen {
    Seen::Cli(1, code.to_owned())
}

/// A gRPC answer: the refusal's code, or what `ok` makes of the response.
pub fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>, ok: impl FnOnce(T) -> Seen) -> Seen {
    match r {
        Ok(r) => ok(r.into_inner()),
        Err(s) => Seen::Grpc(
            s.metadata()
                .get("annex-error-code")
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| format!("{:?}", s.code()), str::to_owned),
        ),
    }
}

/// A successful answer must not mention A.
pub fn hidden(c: &Ctx, debug: impl std::fmt::Debug) -> Seen {
    let text = format!("{debug:?}");
    c.mentions_a(&text).map_or(Seen::Hidden, Seen::Leaked)
}

/// An edge answer as B sees it; a 200 that mentions A is a leak.
pub async fn edge(c: &Ctx, method: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
    let (status, body) = c.http(method, path, headers).await;
    match c.mentions_a(&body.to_string()) {
        Some(leak) if status < 400 => Seen::Leaked(leak),
        _ => Seen::Http(status, body),
    }
}

/// The CLI's answer: the code of its error line (`error: CODE: …`, or the
/// edge's `{"error":"code"}`), or [`Seen::Hidden`] for a success whose
/// output does not mention A.
pub async fn annex(c: &Ctx, args: &[&str]) -> Seen {
    let (status, stdout, err) = c.annex(args).await;
    if status == 0 {
        return c.mentions_a(&stdout).map_or(Seen::Hidden, Seen::Leaked);
    }
    let code = if let Some(i) = err.find(r#""error":""#) {
        err[i + 9..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_owned()
    } else {
        err.strip_prefix("error: ")
            .and_then(|rest| rest.split_once(':'))
            .map_or(err.clone(), |(code, _)| code.to_owned())
    };
    Seen::Cli(status, code)
}

pub fn installs(
    ch: tonic::transport::Channel,
) -> pb::installs_client::InstallsClient<tonic::transport::Channel> {
    pb::installs_client::InstallsClient::new(ch)
}

pub fn host(
    ch: tonic::transport::Channel,
) -> pb::host_services_client::HostServicesClient<tonic::transport::Channel> {
    pb::host_services_client::HostServicesClient::new(ch)
}

pub fn b_ref(extension: &str) -> pb::InstallRef {
    pb::InstallRef {
        tenant_id: OTHER_TENANT.into(),
        extension: extension.into(),
    }
}

/// B's grant with its claims rewritten to name A's probe install (the MAC
/// left as it was): what a compromised guest runtime could try.
pub fn forged_grant(c: &Ctx) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let mut parts = c.b_grant.splitn(3, '.');
    let (Some(v), Some(claims), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("B's grant is not v1.<claims>.<mac>: {}", c.b_grant);
    };
    let mut claims: Value = B64
        .decode(claims)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("B's grant claims are not JSON"));
    claims["tenant"] = json!(TENANT);
    claims["install"] = json!(c.a_probe.install_id);
    format!("{v}.{}.{mac}", B64.encode(claims.to_string()))
}

/// Every case. Read down a resource to see each entry point's answer.
pub fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(crate::rows_installs::install_cases());
    all.extend(crate::rows_data::kv_cases());
    all.extend(crate::rows_data::secret_cases());
    all.extend(crate::rows_data::config_cases());
    all.extend(crate::rows_logs::log_cases());
    all.extend(crate::rows_logs::ui_cases());
    all.extend(crate::rows_admin::usage_and_quota_cases());
    all.push(case(
        "captures",
        Entry::GrpcOperator,
        "request captures",
        Seen::NotBuilt("request captures are not built in Annex yet: add their rows when they are"),
        |_| async { Seen::NotBuilt("not built") },
    ));
    all
}
