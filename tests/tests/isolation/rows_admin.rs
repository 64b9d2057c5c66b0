//! Matrix rows for usage, quotas and API keys: the operator's tenant-scoped
//! management calls named with A's ids, and the roles that must not reach
//! them at all.

use annex_e2e::stack::{OTHER_TENANT, TENANT};
use annex_ops::Role;
use annex_proto::pb;
use serde_json::json;

use crate::cases::{Case, Entry, Seen, annex, answer, case, hidden};
use crate::ctx::A_QUOTA_CONCURRENCY;

fn installs(
    ch: tonic::transport::Channel,
) -> pb::installs_client::InstallsClient<tonic::transport::Channel> {
    pb::installs_client::InstallsClient::new(ch)
}

fn b_quota(extension: &str) -> pb::QuotaRef {
    pb::QuotaRef {
        tenant_id: OTHER_TENANT.into(),
        extension: extension.into(),
    }
}

pub fn usage_and_quota_cases() -> Vec<Case> {
    use Entry::*;
    let grpc = |s: &str| Seen::Grpc(s.to_owned());
    vec![
        case(
            "usage",
            GrpcOperator,
            "GetUsage of hello for B",
            Seen::Hidden,
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .get_usage(pb::GetUsageRequest {
                        tenant_id: OTHER_TENANT.into(),
                        extension: c.a_hello.registry_id.clone(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |u| {
                    if u.windows.is_empty() {
                        Seen::Hidden
                    } else {
                        Seen::Leaked(format!("{} windows", u.windows.len()))
                    }
                })
            },
        ),
        case(
            "usage",
            GrpcOperator,
            "GetUsage of everything for B",
            Seen::Hidden,
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .get_usage(pb::GetUsageRequest {
                        tenant_id: OTHER_TENANT.into(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |u| {
                    if u.windows
                        .iter()
                        .any(|w| w.registry_id == c.a_hello.registry_id)
                    {
                        Seen::Leaked(format!("{u:?}"))
                    } else {
                        hidden(&c, u)
                    }
                })
            },
        ),
        case(
            "usage",
            GrpcEdge,
            "GetUsage as an edge",
            grpc("PERMISSION_DENIED"),
            |c| async move {
                let r = installs(c.channel(Role::Edge).await)
                    .get_usage(pb::GetUsageRequest {
                        tenant_id: OTHER_TENANT.into(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |u| hidden(&c, u))
            },
        ),
        case(
            "usage",
            GrpcWorker,
            "GetUsage as a worker",
            grpc("PERMISSION_DENIED"),
            |c| async move {
                let r = installs(c.channel(Role::Worker).await)
                    .get_usage(pb::GetUsageRequest {
                        tenant_id: TENANT.into(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |u| Seen::Leaked(format!("{} windows", u.windows.len())))
            },
        ),
        case(
            "usage",
            Cli,
            "annex usage <hello>",
            Seen::Hidden,
            |c| async move { annex(&c, &["--json", "usage", &c.a_hello.registry_id]).await },
        ),
        case(
            "quotas",
            GrpcOperator,
            "SetQuota on A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .set_quota(pb::SetQuotaRequest {
                        quota: Some(b_quota(&c.a_hello.install_id)),
                        max_concurrency: 1,
                        requests_per_second: 1,
                    })
                    .await;
                answer(r, |q| Seen::Leaked(format!("set {q:?}")))
            },
        ),
        case(
            "quotas",
            GrpcOperator,
            "DeleteQuota on A's install as B",
            grpc("INSTALL_NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .delete_quota(b_quota(&c.a_hello.install_id))
                    .await;
                answer(r, |_| Seen::Leaked("deleted A's quota".into()))
            },
        ),
        case(
            "quotas",
            GrpcOperator,
            "ListQuotas of B",
            Seen::Hidden,
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .list_quotas(pb::ListQuotasRequest {
                        tenant_id: OTHER_TENANT.into(),
                    })
                    .await;
                answer(r, |q| {
                    if q.quotas
                        .iter()
                        .any(|q| q.max_concurrency == A_QUOTA_CONCURRENCY)
                    {
                        Seen::Leaked(format!("{q:?}"))
                    } else {
                        hidden(&c, q)
                    }
                })
            },
        ),
        case(
            "quotas",
            GrpcEdge,
            "SetQuota as an edge",
            grpc("PERMISSION_DENIED"),
            |c| async move {
                let r = installs(c.channel(Role::Edge).await)
                    .set_quota(pb::SetQuotaRequest {
                        quota: Some(b_quota(&c.a_hello.install_id)),
                        max_concurrency: 1,
                        requests_per_second: 1,
                    })
                    .await;
                answer(r, |q| Seen::Leaked(format!("set {q:?}")))
            },
        ),
        case(
            "quotas",
            Cli,
            "annex quota set --extension <A's install>",
            Seen::Cli(1, "INSTALL_NOT_FOUND".into()),
            |c| async move {
                annex(
                    &c,
                    &[
                        "quota",
                        "set",
                        "--extension",
                        &c.a_hello.install_id,
                        "--max-concurrency",
                        "1",
                    ],
                )
                .await
            },
        ),
        case(
            "quotas",
            Cli,
            "annex quota list",
            Seen::Hidden,
            |c| async move { annex(&c, &["--json", "quota", "list"]).await },
        ),
        case(
            "api keys",
            GrpcOperator,
            "RevokeApiKey of A's key as B",
            grpc("NOT_FOUND"),
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .revoke_api_key(pb::RevokeApiKeyRequest {
                        tenant_id: OTHER_TENANT.into(),
                        id: c.a_key_id.clone(),
                    })
                    .await;
                answer(r, |_| Seen::Leaked("revoked A's key".into()))
            },
        ),
        case(
            "api keys",
            GrpcOperator,
            "ListApiKeys of B",
            Seen::Hidden,
            |c| async move {
                let r = installs(c.channel(Role::Operator).await)
                    .list_api_keys(pb::ListApiKeysRequest {
                        tenant_id: OTHER_TENANT.into(),
                    })
                    .await;
                answer(r, |k| hidden(&c, k))
            },
        ),
        case(
            "api keys",
            EdgeApiKey,
            "A's key presented with x-alga-tenant B",
            Seen::Http(403, json!({"error": "tenant_mismatch"})),
            |c| async move {
                let p = format!("/api/ext/{}/hello", c.a_hello.registry_id);
                let (status, body) = c
                    .http(
                        "GET",
                        &p,
                        &[
                            ("x-api-key", &c.a_key_secret),
                            ("x-alga-tenant", OTHER_TENANT),
                        ],
                    )
                    .await;
                Seen::Http(status, body)
            },
        ),
        case(
            "api keys",
            Cli,
            "annex api-key revoke <A's key>",
            Seen::Cli(1, "NOT_FOUND".into()),
            |c| async move { annex(&c, &["api-key", "revoke", &c.a_key_id]).await },
        ),
        case(
            "quotas",
            GrpcWorker,
            "ListQuotas as a worker",
            grpc("PERMISSION_DENIED"),
            |c| async move {
                let r = installs(c.channel(Role::Worker).await)
                    .list_quotas(pb::ListQuotasRequest {
                        tenant_id: TENANT.into(),
                    })
                    .await;
                answer(r, |q| Seen::Leaked(format!("{q:?}")))
            },
        ),
        case(
            "api keys",
            GrpcEdge,
            "CreateApiKey for A as an edge",
            grpc("PERMISSION_DENIED"),
            |c| async move {
                let r = installs(c.channel(Role::Edge).await)
                    .create_api_key(pb::CreateApiKeyRequest {
                        tenant_id: TENANT.into(),
                        name: "b".into(),
                        ..Default::default()
                    })
                    .await;
                answer(r, |k| Seen::Leaked(format!("created {:?}", k.key)))
            },
        ),
        case(
            "api keys",
            GrpcEdge,
            "AuthenticateApiKey of B's secret names only B",
            Seen::Hidden,
            |c| async move {
                let r = pb::dispatch_client::DispatchClient::new(c.channel(Role::Edge).await)
                    .authenticate_api_key(pb::AuthenticateApiKeyRequest {
                        secret: c.b_key_secret.clone(),
                    })
                    .await;
                answer(r, |k| {
                    if k.tenant_id == OTHER_TENANT {
                        hidden(&c, k)
                    } else {
                        Seen::Leaked(format!("{k:?}"))
                    }
                })
            },
        ),
        case(
            "api keys",
            GrpcWorker,
            "ListApiKeys of A as a worker",
            grpc("PERMISSION_DENIED"),
            |c| async move {
                let r = installs(c.channel(Role::Worker).await)
                    .list_api_keys(pb::ListApiKeysRequest {
                        tenant_id: TENANT.into(),
                    })
                    .await;
                answer(r, |k| Seen::Leaked(format!("{k:?}")))
            },
        ),
    ]
}
