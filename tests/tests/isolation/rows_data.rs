//! Matrix rows for A's data: KV entries, secrets and config, read and
//! written through B's own install, B's grant (and a forged one), the
//! management roles and the CLI.

use annex_e2e::stack::OTHER_TENANT;
use annex_ops::Role;
use annex_proto::pb;
use serde_json::json;

use crate::cases::{
    Case, Entry, Seen, annex, answer, b_ref, case, cli, edge, forged_grant, grpc, hidden, host,
    http, installs,
};
use crate::ctx::{A_CONFIG, A_KV, A_SECRET};

pub fn kv_cases() -> Vec<Case> {
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

pub fn secret_cases() -> Vec<Case> {
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

pub fn config_cases() -> Vec<Case> {
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
