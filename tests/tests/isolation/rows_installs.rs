//! Matrix rows for installs: B calling, resolving, executing, changing or
//! listing A's installs through every entry point.

use annex_e2e::stack::{OTHER_TENANT, TENANT};
use annex_ops::Role;
use annex_proto::pb;

use crate::cases::{
    Case, Entry, Seen, annex, answer, b_ref, case, cli, edge, grpc, hidden, http, installs,
};
use crate::ctx::truncate;

pub fn install_cases() -> Vec<Case> {
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
