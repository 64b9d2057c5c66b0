//! The matrix as data: one [`Case`] per (resource, entry point, attempt)
//! with the exact answer tenant B must see, and the one [`check`] that runs
//! a case and compares. Answers are what a user meets: the HTTP status and
//! JSON body at the edge, the `annex-error-code` on gRPC, the CLI's exit
//! status and error code, or [`Seen::Hidden`] for a listing or stream that
//! answered without any of tenant A's data. Entry points a resource has no
//! route through have no row (the CLI has no KV or log-stream command of
//! its own beyond `annex logs`; workers reach data only with a grant).

use std::future::Future;
use std::sync::Arc;

use annex_e2e::stack::{OTHER_TENANT, TENANT};
use annex_ops::Role;
use annex_proto::pb;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::ctx::{A_CONFIG, A_KV, A_SECRET, Ctx, truncate};

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

fn http(status: u16, error: &str) -> Seen {
    Seen::Http(status, json!({"error": error}))
}

fn grpc(code: &str) -> Seen {
    Seen::Grpc(code.to_owned())
}

fn cli(code: &str) -> Seen {
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
async fn edge(c: &Ctx, method: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
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

fn installs(
    ch: tonic::transport::Channel,
) -> pb::installs_client::InstallsClient<tonic::transport::Channel> {
    pb::installs_client::InstallsClient::new(ch)
}

fn host(
    ch: tonic::transport::Channel,
) -> pb::host_services_client::HostServicesClient<tonic::transport::Channel> {
    pb::host_services_client::HostServicesClient::new(ch)
}

fn b_ref(extension: &str) -> pb::InstallRef {
    pb::InstallRef {
        tenant_id: OTHER_TENANT.into(),
        extension: extension.into(),
    }
}

/// B's grant with its claims rewritten to name A's probe install (the MAC
/// left as it was): what a compromised guest runtime could try.
fn forged_grant(c: &Ctx) -> String {
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
    all.extend(install_cases());
    all.extend(kv_cases());
    all.extend(secret_cases());
    all.extend(config_cases());
    all.extend(crate::cases_more::log_cases());
    all.extend(crate::cases_more::ui_cases());
    all.extend(crate::cases_more::usage_and_quota_cases());
    all.push(case(
        "captures",
        Entry::GrpcOperator,
        "request captures",
        Seen::NotBuilt("request captures are not built in Annex yet: add their rows when they are"),
        |_| async { Seen::NotBuilt("not built") },
    ));
    all
}

fn install_cases() -> Vec<Case> {
    use Entry::*;
    vec![
        case(
            "installs",
            EdgeSession,
            "B calls A's hello by registry id",
            http(404, "extension_not_available"),
            |c| async move {
                let p = format!("/api/ext/{}/hello", c.a_hello.registry_id);
                edge(&c, "GET", &p, &[("authorization", &c.b_auth)]).await
            },
        ),
        case(
            "installs",
            EdgeSession,
            "B calls A's hello by A's install id",
            http(404, "extension_not_available"),
            |c| async move {
                let p = format!("/api/ext/{}/hello", c.a_hello.install_id);
                edge(&c, "GET", &p, &[("authorization", &c.b_auth)]).await
            },
        ),
        case(
            "installs",
            EdgeSession,
            "B's session names A in x-alga-tenant",
            http(403, "tenant_mismatch"),
            |c| async move {
                let p = format!("/api/ext/{}/hello", c.a_hello.registry_id);
                edge(
                    &c,
                    "GET",
                    &p,
                    &[("authorization", &c.b_auth), ("x-alga-tenant", TENANT)],
                )
                .await
            },
        ),
        case(
            "installs",
            EdgeSession,
            "B's session through ext-proxy to A's hello",
            http(404, "extension_not_available"),
            |c| async move {
                let p = format!("/api/ext-proxy/{}/hello", c.a_hello.install_id);
                edge(&c, "POST", &p, &[("authorization", &c.b_auth)]).await
            },
        ),
        case(
            "installs",
            EdgeApiKey,
            "B's API key calls A's hello",
            http(404, "extension_not_available"),
            |c| async move {
                let p = format!("/api/ext/{}/hello", c.a_hello.registry_id);
                edge(&c, "GET", &p, &[("x-api-key", &c.b_key_secret)]).await
            },
        ),
        case(
            "installs",
            EdgeApiKey,
            "B's API key names A in x-tenant-id",
            http(403, "tenant_mismatch"),
            |c| async move {
                let p = format!("/api/ext/{}/hello", c.a_hello.registry_id);
                edge(
                    &c,
                    "GET",
                    &p,
                    &[("x-api-key", &c.b_key_secret), ("x-tenant-id", TENANT)],
                )
                .await
            },
        ),
        case(
            "installs",
            GrpcOperator,
            "GetInstall of A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .get_install(b_ref(&c.a_hello.install_id))
                    .await;
                answer(r, |i| hidden(&c, i))
            },
        ),
        case(
            "installs",
            GrpcOperator,
            "Disable A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .disable(b_ref(&c.a_hello.install_id))
                    .await;
                answer(r, |i| Seen::Leaked(format!("disabled {i:?}")))
            },
        ),
        case(
            "installs",
            GrpcOperator,
            "Uninstall A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .uninstall(b_ref(&c.a_hello.install_id))
                    .await;
                answer(r, |_| Seen::Leaked("uninstalled A's hello".into()))
            },
        ),
        case(
            "installs",
            GrpcOperator,
            "Upgrade A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .upgrade(pb::UpgradeRequest {
                        tenant_id: OTHER_TENANT.into(),
                        extension: c.a_hello.install_id.clone(),
                        version: "1.0.0".into(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |i| Seen::Leaked(format!("upgraded {i:?}")))
            },
        ),
        case(
            "installs",
            GrpcOperator,
            "ListInstalls of B",
            Seen::Hidden,
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .list_installs(pb::ListInstallsRequest {
                        tenant_id: OTHER_TENANT.into(),
                    })
                    .await;
                answer(r, |l| hidden(&c, l))
            },
        ),
        case(
            "installs",
            GrpcEdge,
            "Resolve A's install id for B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Edge).await)
                    .resolve(pb::ResolveRequest {
                        tenant_id: OTHER_TENANT.into(),
                        extension: c.a_hello.install_id.clone(),
                    })
                    .await;
                answer(r, |i| hidden(&c, i))
            },
        ),
        case(
            "installs",
            GrpcEdge,
            "Resolve hello (installed only for A) for B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Edge).await)
                    .resolve(pb::ResolveRequest {
                        tenant_id: OTHER_TENANT.into(),
                        extension: c.a_hello.registry_id.clone(),
                    })
                    .await;
                answer(r, |i| hidden(&c, i))
            },
        ),
        case(
            "installs",
            GrpcEdge,
            "Dispatch.Execute of A's install for B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = pb::dispatch_client::DispatchClient::new(c.channel(Role::Edge).await)
                    .execute(pb::DispatchExecuteRequest {
                        tenant_id: OTHER_TENANT.into(),
                        extension: c.a_hello.install_id.clone(),
                        http: Some(pb::HttpRequest {
                            method: "GET".into(),
                            path: "/hello".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await;
                answer(r, |resp| {
                    Seen::Leaked(format!("executed: {}", truncate(&format!("{resp:?}"))))
                })
            },
        ),
        case(
            "installs",
            GrpcWorker,
            "Resolve as a worker",
            grpc("PERMISSION_DENIED"),
            |c| async move {
                let r = installs(c.channel(Role::Worker).await)
                    .resolve(pb::ResolveRequest {
                        tenant_id: TENANT.into(),
                        extension: c.a_hello.install_id.clone(),
                    })
                    .await;
                answer(r, |i| {
                    Seen::Leaked(format!("resolved {}", truncate(&format!("{i:?}"))))
                })
            },
        ),
        case(
            "installs",
            Cli,
            "annex status <A's install>",
            cli("INSTALL_NOT_FOUND"),
            |c| async move { annex(&c, &["status", &c.a_hello.install_id]).await },
        ),
        case(
            "installs",
            Cli,
            "annex disable <A's install>",
            cli("INSTALL_NOT_FOUND"),
            |c| async move { annex(&c, &["disable", &c.a_hello.install_id]).await },
        ),
        case(
            "installs",
            Cli,
            "annex installs",
            Seen::Hidden,
            |c| async move { annex(&c, &["--json", "installs"]).await },
        ),
        case(
            "installs",
            Cli,
            "annex call <A's hello>",
            cli("extension_not_available"),
            |c| async move { annex(&c, &["call", &c.a_hello.registry_id, "/hello"]).await },
        ),
    ]
}

fn kv_cases() -> Vec<Case> {
    use Entry::*;
    let (ns, key, _) = A_KV;
    vec![
        case(
            "kv",
            EdgeSession,
            "B's probe reads A's namespace and key",
            Seen::Http(200, json!({"err": "missing"})),
            move |c| async move {
                let p = format!(
                    "/api/ext/{}/storage/get?ns={ns}&key={key}",
                    c.b_probe.install_id
                );
                edge(&c, "GET", &p, &[("authorization", &c.b_auth)]).await
            },
        ),
        case(
            "kv",
            EdgeSession,
            "B's probe lists A's namespace",
            Seen::Http(200, json!({"ok": []})),
            move |c| async move {
                let p = format!("/api/ext/{}/storage/list?ns={ns}", c.b_probe.install_id);
                edge(&c, "GET", &p, &[("authorization", &c.b_auth)]).await
            },
        ),
        case(
            "kv",
            EdgeApiKey,
            "B's probe reads A's key with B's API key",
            Seen::Http(200, json!({"err": "missing"})),
            move |c| async move {
                let p = format!(
                    "/api/ext/{}/storage/get?ns={ns}&key={key}",
                    c.b_probe.install_id
                );
                edge(&c, "GET", &p, &[("x-api-key", &c.b_key_secret)]).await
            },
        ),
        case(
            "kv",
            EdgeSession,
            "B's probe calls A's probe install id",
            http(404, "extension_not_available"),
            move |c| async move {
                let p = format!(
                    "/api/ext/{}/storage/get?ns={ns}&key={key}",
                    c.a_probe.install_id
                );
                edge(&c, "GET", &p, &[("authorization", &c.b_auth)]).await
            },
        ),
        case(
            "kv",
            GrpcWorker,
            "StorageGet of A's key with B's grant",
            grpc("NOT_FOUND"),
            move |c| async move {
                let r = host(c.channel(Role::Worker).await)
                    .storage_get(pb::StorageGetRequest {
                        grant: c.b_grant.clone(),
                        namespace: ns.into(),
                        key: key.into(),
                    })
                    .await;
                answer(r, |rec| hidden(&c, rec))
            },
        ),
        case(
            "kv",
            GrpcWorker,
            "StorageList of A's namespace with B's grant",
            Seen::Hidden,
            move |c| async move {
                let r = host(c.channel(Role::Worker).await)
                    .storage_list(pb::StorageListRequest {
                        grant: c.b_grant.clone(),
                        namespace: ns.into(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |l| hidden(&c, l))
            },
        ),
        case(
            "kv",
            GrpcWorker,
            "StorageGet with B's grant rewritten to A's install",
            grpc("GRANT_INVALID"),
            move |c| async move {
                let r = host(c.channel(Role::Worker).await)
                    .storage_get(pb::StorageGetRequest {
                        grant: forged_grant(&c),
                        namespace: ns.into(),
                        key: key.into(),
                    })
                    .await;
                answer(r, |rec| Seen::Leaked(format!("{rec:?}")))
            },
        ),
        case(
            "kv",
            GrpcWorker,
            "StoragePut into A's key with B's rewritten grant",
            grpc("GRANT_INVALID"),
            move |c| async move {
                let r = host(c.channel(Role::Worker).await)
                    .storage_put(pb::StoragePutRequest {
                        grant: forged_grant(&c),
                        namespace: ns.into(),
                        key: key.into(),
                        value: b"b-value".to_vec(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |rec| Seen::Leaked(format!("wrote {rec:?}")))
            },
        ),
        case(
            "kv",
            GrpcWorker,
            "StorageGet without a grant",
            grpc("GRANT_INVALID"),
            move |c| async move {
                let r = host(c.channel(Role::Worker).await)
                    .storage_get(pb::StorageGetRequest {
                        grant: String::new(),
                        namespace: ns.into(),
                        key: key.into(),
                    })
                    .await;
                answer(r, |rec| Seen::Leaked(format!("{rec:?}")))
            },
        ),
        case(
            "kv",
            GrpcEdge,
            "StorageGet as an edge",
            grpc("PERMISSION_DENIED"),
            move |c| async move {
                let r = host(c.channel(Role::Edge).await)
                    .storage_get(pb::StorageGetRequest {
                        grant: c.b_grant.clone(),
                        namespace: ns.into(),
                        key: key.into(),
                    })
                    .await;
                answer(r, |rec| hidden(&c, rec))
            },
        ),
        case(
            "kv",
            GrpcOperator,
            "StorageGet as an operator",
            grpc("PERMISSION_DENIED"),
            move |c| async move {
                let r = host(c.channel(Role::Operator).await)
                    .storage_get(pb::StorageGetRequest {
                        grant: c.b_grant.clone(),
                        namespace: ns.into(),
                        key: key.into(),
                    })
                    .await;
                answer(r, |rec| hidden(&c, rec))
            },
        ),
        case(
            "kv",
            EdgeSession,
            "B's probe writes the same namespace and key",
            Seen::Hidden,
            move |c| async move {
                let p = format!(
                    "/api/ext/{}/storage/put?ns={ns}&key={key}",
                    c.b_probe.install_id
                );
                let (status, body) = c
                    .http_body("POST", &p, &[("authorization", &c.b_auth)], b"b-value")
                    .await;
                if status == 200 && body.get("ok").is_some() {
                    hidden(&c, body)
                } else {
                    Seen::Http(status, body)
                }
            },
        ),
    ]
}

fn secret_cases() -> Vec<Case> {
    use Entry::*;
    vec![
        case(
            "secrets",
            EdgeSession,
            "B's probe reads A's secret name",
            Seen::Http(200, json!({"err": "missing"})),
            |c| async move {
                let p = format!(
                    "/api/ext/{}/secrets/get?key={}",
                    c.b_probe.install_id, A_SECRET.0
                );
                edge(&c, "GET", &p, &[("authorization", &c.b_auth)]).await
            },
        ),
        case(
            "secrets",
            EdgeSession,
            "B's probe lists secret names",
            Seen::Http(200, json!({"keys": []})),
            |c| async move {
                let p = format!("/api/ext/{}/secrets/list", c.b_probe.install_id);
                edge(&c, "GET", &p, &[("authorization", &c.b_auth)]).await
            },
        ),
        case(
            "secrets",
            EdgeApiKey,
            "B's probe reads A's secret name with B's API key",
            Seen::Http(200, json!({"err": "missing"})),
            |c| async move {
                let p = format!(
                    "/api/ext/{}/secrets/get?key={}",
                    c.b_probe.install_id, A_SECRET.0
                );
                edge(&c, "GET", &p, &[("x-api-key", &c.b_key_secret)]).await
            },
        ),
        case(
            "secrets",
            GrpcWorker,
            "GetSecrets with B's grant",
            Seen::Hidden,
            |c| async move {
                let r = host(c.channel(Role::Worker).await)
                    .get_secrets(pb::GetSecretsRequest {
                        grant: c.b_grant.clone(),
                    })
                    .await;
                answer(r, |s| hidden(&c, s))
            },
        ),
        case(
            "secrets",
            GrpcWorker,
            "GetSecrets with B's grant rewritten to A's install",
            grpc("GRANT_INVALID"),
            |c| async move {
                let r = host(c.channel(Role::Worker).await)
                    .get_secrets(pb::GetSecretsRequest {
                        grant: forged_grant(&c),
                    })
                    .await;
                answer(r, |s| Seen::Leaked(format!("{s:?}")))
            },
        ),
        case(
            "secrets",
            GrpcOperator,
            "SetSecrets on A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .set_secrets(pb::SetSecretsRequest {
                        install: Some(b_ref(&c.a_probe.install_id)),
                        secrets: [(A_SECRET.0.into(), "b-overwrite".into())].into(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |m| Seen::Leaked(format!("wrote {m:?}")))
            },
        ),
        case(
            "secrets",
            GrpcOperator,
            "ListSecretKeys of A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .list_secret_keys(b_ref(&c.a_probe.install_id))
                    .await;
                answer(r, |k| hidden(&c, k))
            },
        ),
        case(
            "secrets",
            GrpcEdge,
            "Resolve B's own probe: no envelope of A's",
            Seen::Hidden,
            |c| async move {
                let r = installs(c.channel(Role::Edge).await)
                    .resolve(pb::ResolveRequest {
                        tenant_id: OTHER_TENANT.into(),
                        extension: c.a_probe.registry_id.clone(),
                    })
                    .await;
                answer(r, |i| {
                    if i.secret_envelope.is_some() {
                        Seen::Leaked("B's resolve carries a secret envelope".into())
                    } else {
                        hidden(&c, i)
                    }
                })
            },
        ),
        case(
            "secrets",
            GrpcEdge,
            "SetSecrets as an edge",
            grpc("PERMISSION_DENIED"),
            |c| async move {
                let r = installs(c.channel(Role::Edge).await)
                    .set_secrets(pb::SetSecretsRequest {
                        install: Some(b_ref(&c.a_probe.install_id)),
                        secrets: [(A_SECRET.0.into(), "x".into())].into(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |m| Seen::Leaked(format!("wrote {m:?}")))
            },
        ),
        case(
            "secrets",
            Cli,
            "annex secrets list-keys <A's install>",
            cli("INSTALL_NOT_FOUND"),
            |c| async move { annex(&c, &["secrets", "list-keys", &c.a_probe.install_id]).await },
        ),
        case(
            "secrets",
            Cli,
            "annex secrets set <A's install>",
            cli("INSTALL_NOT_FOUND"),
            |c| async move {
                annex(
                    &c,
                    &[
                        "secrets",
                        "set",
                        &c.a_probe.install_id,
                        "api_token=b-overwrite",
                    ],
                )
                .await
            },
        ),
    ]
}

fn config_cases() -> Vec<Case> {
    use Entry::*;
    vec![
        case(
            "config",
            EdgeSession,
            "B's probe reads A's config key",
            Seen::Http(200, json!({"value": null})),
            |c| async move {
                let p = format!(
                    "/api/ext/{}/config/get?key={}",
                    c.b_probe.install_id, A_CONFIG.0
                );
                edge(&c, "GET", &p, &[("authorization", &c.b_auth)]).await
            },
        ),
        case(
            "config",
            EdgeApiKey,
            "B's probe reads A's config key with B's API key",
            Seen::Http(200, json!({"value": null})),
            |c| async move {
                let p = format!(
                    "/api/ext/{}/config/get?key={}",
                    c.b_probe.install_id, A_CONFIG.0
                );
                edge(&c, "GET", &p, &[("x-api-key", &c.b_key_secret)]).await
            },
        ),
        case(
            "config",
            GrpcOperator,
            "GetConfig of A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .get_config(b_ref(&c.a_probe.install_id))
                    .await;
                answer(r, |cfg| hidden(&c, cfg))
            },
        ),
        case(
            "config",
            GrpcOperator,
            "SetConfig on A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .set_config(pb::SetConfigRequest {
                        install: Some(b_ref(&c.a_probe.install_id)),
                        config: [(A_CONFIG.0.into(), "red".into())].into(),
                    })
                    .await;
                answer(r, |cfg| Seen::Leaked(format!("wrote {cfg:?}")))
            },
        ),
        case(
            "config",
            GrpcEdge,
            "GetConfig of A's install for B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Edge).await)
                    .get_config(b_ref(&c.a_probe.install_id))
                    .await;
                answer(r, |cfg| hidden(&c, cfg))
            },
        ),
        case(
            "config",
            GrpcWorker,
            "GetConfig as a worker",
            grpc("PERMISSION_DENIED"),
            |c| async move {
                let r = installs(c.channel(Role::Worker).await)
                    .get_config(b_ref(&c.a_probe.install_id))
                    .await;
                answer(r, |cfg| hidden(&c, cfg))
            },
        ),
        case(
            "config",
            Cli,
            "annex config get <A's install>",
            cli("INSTALL_NOT_FOUND"),
            |c| async move { annex(&c, &["config", "get", &c.a_probe.install_id]).await },
        ),
        case(
            "config",
            Cli,
            "annex config set <A's install>",
            cli("INSTALL_NOT_FOUND"),
            |c| async move { annex(&c, &["config", "set", &c.a_probe.install_id, "color=red"]).await },
        ),
    ]
}
