//! The matrix's world: one stack, tenant A's resources (config, secrets, KV,
//! logs, a quota, an API key, usage, UI files) and tenant B's own install,
//! API key and execution grant; how each entry point is called (edge HTTP,
//! gRPC as a role, the `annex` binary); and the check that A's data is
//! unchanged after every case ran. Setup asserts that A itself can read
//! each resource, so a refusal to B is never a broken fixture.

use std::sync::Arc;
use std::time::Duration;

use annex_e2e::stack::{Installed, OTHER_TENANT, PUBLISHER, TENANT};
use annex_e2e::{Stack, eventually_ms, http::try_send};
use annex_ops::Role;
use annex_proto::pb;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// Tenant A's values, which must never reach B and must be the same after
/// the matrix ran.
pub const A_CONFIG: (&str, &str) = ("color", "blue");
pub const A_SECRET: (&str, &str) = ("api_token", "a-secret-value");
pub const A_KV: (&str, &str, &str) = ("shared", "k", "a-value");
pub const A_QUOTA_CONCURRENCY: u32 = 50;

/// Everything the cases use.
pub struct Ctx {
    pub stack: Stack,
    /// A's `hello` install (with UI files), installed only for A.
    pub a_hello: Installed,
    /// `probe` (storage, secrets, logs, config), installed for A and for B.
    pub a_probe: Installed,
    pub b_probe: Installed,
    pub a_auth: String,
    pub b_auth: String,
    pub a_key_id: String,
    pub a_key_secret: String,
    pub b_key_secret: String,
    /// The execution grant the control plane signed for B's probe install.
    pub b_grant: String,
}

impl Ctx {
    pub async fn start() -> Arc<Ctx> {
        let stack = Stack::start().await;
        let a_hello = stack.hello.clone();
        let wasm = std::fs::read(annex_worker::testing::guest("probe"))
            .unwrap_or_else(|e| panic!("probe guest: {e}"));
        let manifest = json!({
            "name": "com.annex.e2e.probe", "publisher": PUBLISHER, "version": "1.0.0",
            "runtime": "wasm-rust@1",
            "capabilities": ["cap:storage.kv", "cap:secrets.get", "cap:log.emit"],
            "api": {"endpoints": [
                {"method": "GET", "path": "/storage/get", "handler": "dist/main"},
                {"method": "POST", "path": "/storage/put", "handler": "dist/main"},
                {"method": "GET", "path": "/storage/list", "handler": "dist/main"},
                {"method": "GET", "path": "/secrets/get", "handler": "dist/main"},
                {"method": "GET", "path": "/secrets/list", "handler": "dist/main"},
                {"method": "GET", "path": "/config/get", "handler": "dist/main"},
                {"method": "GET", "path": "/log", "handler": "dist/main"}
            ]}
        });
        let a_probe = stack.publish_and_install(&manifest, &wasm).await;
        let b_probe = stack.install_for(OTHER_TENANT, &a_probe.registry_id).await;
        let a_auth = stack.bearer(&json!({}));
        let b_auth = stack.bearer(&json!({"tenant": OTHER_TENANT, "sub": "user-b"}));

        let op = stack.channel(Role::Operator).await;
        let mut installs = pb::installs_client::InstallsClient::new(op.clone());
        let a_ref = pb::InstallRef {
            tenant_id: TENANT.into(),
            extension: a_probe.install_id.clone(),
        };
        installs
            .set_config(pb::SetConfigRequest {
                install: Some(a_ref.clone()),
                config: [(A_CONFIG.0.into(), A_CONFIG.1.into())].into(),
            })
            .await
            .unwrap_or_else(|e| panic!("A's config: {e}"));
        installs
            .set_secrets(pb::SetSecretsRequest {
                install: Some(a_ref),
                secrets: [(A_SECRET.0.into(), A_SECRET.1.into())].into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("A's secrets: {e}"));
        installs
            .set_quota(pb::SetQuotaRequest {
                quota: Some(pb::QuotaRef {
                    tenant_id: TENANT.into(),
                    extension: a_hello.install_id.clone(),
                }),
                max_concurrency: A_QUOTA_CONCURRENCY,
                requests_per_second: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("A's quota: {e}"));
        let key = |tenant: &str| pb::CreateApiKeyRequest {
            tenant_id: tenant.into(),
            name: format!("{tenant} key"),
            permissions: vec!["extension:read".into(), "extension:write".into()],
        };
        let a_key = installs
            .create_api_key(key(TENANT))
            .await
            .unwrap_or_else(|e| panic!("A's API key: {e}"))
            .into_inner();
        let b_key = installs
            .create_api_key(key(OTHER_TENANT))
            .await
            .unwrap_or_else(|e| panic!("B's API key: {e}"))
            .into_inner();
        let resolved = pb::installs_client::InstallsClient::new(stack.channel(Role::Edge).await)
            .resolve(pb::ResolveRequest {
                tenant_id: OTHER_TENANT.into(),
                extension: b_probe.install_id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("resolving B's probe: {e}"))
            .into_inner();
        let ctx = Ctx {
            a_hello,
            a_probe,
            b_probe,
            a_auth,
            b_auth,
            a_key_id: a_key.key.map(|k| k.id).unwrap_or_default(),
            a_key_secret: a_key.secret,
            b_key_secret: b_key.secret,
            b_grant: resolved.execution_grant,
            stack,
        };
        ctx.seed_a().await;
        Arc::new(ctx)
    }

    /// A writes its KV entry and reads back each of its resources itself,
    /// and has usage recorded for `hello`.
    async fn seed_a(&self) {
        let (ns, key, value) = A_KV;
        let put = self
            .probe_as_a(
                "POST",
                &format!("/storage/put?ns={ns}&key={key}"),
                value.as_bytes(),
            )
            .await;
        assert!(put.get("ok").is_some(), "A's put: {put}");
        for (path, want) in self.a_reads() {
            let got = self.probe_as_a("GET", &path, b"").await;
            assert_eq!(got, want, "A reading its own {path}");
        }
        let hello = format!("/api/ext/{}/hello", self.a_hello.registry_id);
        let r = self
            .http("GET", &hello, &[("authorization", &self.a_auth)])
            .await;
        assert_eq!(r.0, 200, "A's hello: {:?}", r.1);
        let usage = eventually_ms(60_000, || async {
            !self
                .stack
                .usage_windows(TENANT, &self.a_hello.registry_id)
                .await
                .is_empty()
        })
        .await;
        assert!(usage, "no usage window for A's hello");
    }

    /// A's reads of its own data through its probe, and what they must answer.
    fn a_reads(&self) -> Vec<(String, Value)> {
        let (ns, key, value) = A_KV;
        vec![
            (
                format!("/storage/get?ns={ns}&key={key}"),
                json!({"ok": {"namespace": ns, "key": key, "value": value}}),
            ),
            (
                format!("/secrets/get?key={}", A_SECRET.0),
                json!({"ok": A_SECRET.1}),
            ),
            (
                format!("/config/get?key={}", A_CONFIG.0),
                json!({"value": A_CONFIG.1}),
            ),
        ]
    }

    /// Calls A's probe as A and returns its JSON (fields the checks do not
    /// compare, such as revisions and timestamps, removed).
    pub async fn probe_as_a(&self, method: &str, path: &str, body: &[u8]) -> Value {
        let url = format!("/api/ext/{}{path}", self.a_probe.install_id);
        let (status, v) = self
            .http_body(method, &url, &[("authorization", &self.a_auth)], body)
            .await;
        assert_eq!(status, 200, "{method} {path}: {v}");
        strip_volatile(v)
    }

    /// One HTTP call to the edge: status and JSON body (or the text as a
    /// JSON string); a connection failure is status 0.
    pub async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        self.http_body(method, path, headers, b"").await
    }

    pub async fn http_body(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Value) {
        let call = try_send(self.stack.edge.http, method, path, headers, body);
        match tokio::time::timeout(Duration::from_secs(30), call).await {
            Ok(Ok(r)) => (
                r.status,
                serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(r.text())),
            ),
            Ok(Err(e)) => (0, Value::String(e)),
            Err(_) => (0, Value::String("no answer within 30 s".into())),
        }
    }

    pub async fn channel(&self, role: Role) -> Channel {
        self.stack.channel(role).await
    }

    /// Runs the `annex` binary as an operator for tenant B: exit status,
    /// stdout and the first stderr line.
    pub async fn annex(&self, args: &[&str]) -> (i32, String, String) {
        let files = annex_ops::devcerts::role_files(&self.stack.pki, Role::Operator);
        let secret = self.stack.jwt_secret_file.display().to_string();
        let out = tokio::process::Command::new(annex_e2e::stack::bin("annex"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "ANNEX_CONTROL_PLANE_URL",
                format!("https://{}", self.stack.cp_addr),
            )
            .env("ANNEX_TLS_CA", files.ca.display().to_string())
            .env("ANNEX_TLS_CERT", files.cert.display().to_string())
            .env("ANNEX_TLS_KEY", files.key.display().to_string())
            .env("ANNEX_TLS_SERVER_NAME", "localhost")
            .env("ANNEX_TENANT", OTHER_TENANT)
            .env("ANNEX_EDGE_URL", format!("http://{}", self.stack.edge.http))
            .env("ANNEX_JWT_SECRET_FILE", secret)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out)
            .await
            .unwrap_or_else(|_| panic!("annex {args:?} did not finish within 60 s"))
            .unwrap_or_else(|e| panic!("annex {args:?}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr.lines().next().unwrap_or_default().to_owned(),
        )
    }

    /// Whether any of A's identifiers or values appears in `text`.
    pub fn mentions_a(&self, text: &str) -> Option<String> {
        let a = [
            self.a_hello.install_id.as_str(),
            self.a_probe.install_id.as_str(),
            self.a_key_id.as_str(),
            TENANT,
            A_SECRET.1,
            A_KV.2,
            "a-marker",
        ];
        a.iter()
            .find(|needle| !needle.is_empty() && text.contains(**needle))
            .map(|n| format!("{n:?} in {}", truncate(text)))
    }

    /// Every way A's data could have been changed by B, checked as A.
    pub async fn a_is_unchanged(&self) -> Vec<String> {
        let mut changed = Vec::new();
        for (path, want) in self.a_reads() {
            let got = self.probe_as_a("GET", &path, b"").await;
            if got != want {
                changed.push(format!("{path}: {got} (was {want})"));
            }
        }
        let hello = format!("/api/ext/{}/hello", self.a_hello.registry_id);
        let r = self
            .http("GET", &hello, &[("authorization", &self.a_auth)])
            .await;
        if r.0 != 200 {
            changed.push(format!("A's hello answers {} {}", r.0, r.1));
        }
        let r = self
            .http("GET", &hello, &[("x-api-key", &self.a_key_secret)])
            .await;
        if r.0 != 200 {
            changed.push(format!("A's API key answers {} {}", r.0, r.1));
        }
        let quotas = pb::installs_client::InstallsClient::new(self.channel(Role::Operator).await)
            .list_quotas(pb::ListQuotasRequest {
                tenant_id: TENANT.into(),
            })
            .await
            .map(|r| r.into_inner().quotas)
            .unwrap_or_default();
        if !quotas.iter().any(|q| {
            q.install_id == self.a_hello.install_id && q.max_concurrency == A_QUOTA_CONCURRENCY
        }) {
            changed.push(format!("A's quota: {quotas:?}"));
        }
        changed
    }
}

/// Drops what changes between reads of the same data (revisions, times).
fn strip_volatile(mut v: Value) -> Value {
    if let Some(entry) = v.get_mut("ok").and_then(Value::as_object_mut) {
        entry.retain(|k, _| matches!(k.as_str(), "namespace" | "key" | "value"));
    }
    v
}

pub fn truncate(text: &str) -> String {
    text.chars().take(300).collect()
}
