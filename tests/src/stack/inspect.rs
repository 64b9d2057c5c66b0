//! What tests read off a running stack: session tokens for [`TENANT`],
//! the processes' log tails, rows from the deployment's Postgres (audit,
//! quota usage, worker heartbeats), `Worker.Stats` over mTLS and the
//! edge's readiness.

use std::time::Duration;

use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::assert_eventually;
use tonic::transport::{Channel, Endpoint};

use super::{AUDIENCE, Stack, TENANT};
use crate::http::get;

impl Stack {
    /// A session token for [`TENANT`] with `overrides` applied (`null` removes a claim).
    pub fn token(&self, overrides: &serde_json::Value) -> String {
        let secret = std::fs::read(&self.jwt_secret_file).unwrap_or_else(|e| panic!("secret: {e}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let mut claims = serde_json::json!({
            "sub": "user-e2e", "tenant": TENANT, "email": "e2e@example.test", "name": "E2E User",
            "user_type": "internal", "permissions": ["extension:read", "extension:write"],
            "aud": AUDIENCE, "iat": now, "exp": now + 600,
        });
        if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        annex_edge::jwt::SigningKey::hs256(secret.trim_ascii())
            .and_then(|k| k.sign(&claims))
            .unwrap_or_else(|e| panic!("signing a session: {e}"))
    }

    pub fn bearer(&self, overrides: &serde_json::Value) -> String {
        format!("Bearer {}", self.token(overrides))
    }

    /// The tails of every process's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let members = self.control_planes.iter().chain(&self.workers);
        for p in members
            .map(|m| &m.proc)
            .chain(std::iter::once(&self.edge.proc))
        {
            out.push_str(&format!("--- {} ---\n{}\n", p.name, p.log_tail()));
        }
        out
    }

    /// A one-connection store on this deployment's Postgres, for checks.
    async fn pg_store(&self) -> annex_control_plane::store::PgStore {
        use annex_control_plane::store::{PgStore, PgStoreConfig};
        PgStore::connect(PgStoreConfig {
            url: self.pg.url(),
            max_connections: 1,
        })
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    /// Audit rows of `registry_id` for [`TENANT`], read from Postgres.
    pub async fn audit_rows(
        &self,
        registry_id: &str,
    ) -> Vec<annex_control_plane::store::ExecutionRow> {
        use annex_control_plane::store::ExecutionLogStore as _;
        let id = registry_id.parse().unwrap_or_else(|e| panic!("uuid: {e}"));
        self.pg_store()
            .await
            .list_executions(TENANT, id, 1000)
            .await
            .unwrap_or_else(|e| panic!("list: {e}"))
    }

    /// The `Worker` service of worker `i`, over mTLS as the control plane.
    pub async fn worker_client(&self, i: usize) -> pb::worker_client::WorkerClient<Channel> {
        let material = annex_ops::devcerts::role_files(&self.pki, Role::ControlPlane)
            .load()
            .unwrap_or_else(|e| panic!("certificates: {e}"));
        let channel = Endpoint::from_shared(format!("https://{}", self.workers[i].grpc))
            .unwrap_or_else(|e| panic!("url: {e}"))
            .tls_config(material.client_config("localhost"))
            .unwrap_or_else(|e| panic!("tls: {e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to worker {i}: {e}"));
        pb::worker_client::WorkerClient::new(channel)
    }

    /// `Worker.Stats` of worker `i`, asked over mTLS as the control plane.
    pub async fn worker_stats(&self, i: usize) -> pb::WorkerStats {
        self.worker_client(i)
            .await
            .stats(pb::Empty {})
            .await
            .unwrap_or_else(|e| panic!("stats of worker {i}: {e}"))
            .into_inner()
    }

    /// Executions in flight across the workers (`Worker.Stats`).
    pub async fn in_flight(&self) -> u32 {
        let mut sum = 0;
        for i in 0..self.workers.len() {
            sum += self.worker_stats(i).await.in_flight;
        }
        sum
    }

    /// Waits until every worker has heartbeated `n` more times: each
    /// heartbeat a control plane takes refreshes the worker's `last_seen`.
    pub async fn heartbeats(&self, n: usize) {
        use annex_control_plane::store::FleetStore as _;
        for _ in 0..n {
            let after = chrono::Utc::now();
            assert_eventually!(
                Duration::from_secs(30),
                async || {
                    let rows = self
                        .pg_store()
                        .await
                        .list_workers(chrono::DateTime::UNIX_EPOCH)
                        .await
                        .unwrap_or_else(|e| panic!("workers: {e}"));
                    self.workers.iter().all(|w| {
                        rows.iter()
                            .any(|row| row.id == w.id && row.last_seen > after)
                    })
                },
                "a heartbeat from every worker after {after}\n{}",
                self.logs()
            );
        }
    }

    /// Whether the edge's admin listener reports ready.
    pub async fn edge_ready(&self) -> bool {
        get(self.edge.admin, "/ready", &[]).await.status == 200
    }

    /// The `extension_quota_usage` windows of `tenant`'s `registry_id`, read from Postgres.
    pub async fn usage_windows(
        &self,
        tenant: &str,
        registry_id: &str,
    ) -> Vec<annex_control_plane::store::UsageRow> {
        use annex_control_plane::store::QuotaStore as _;
        let id = registry_id.parse().unwrap_or_else(|e| panic!("uuid: {e}"));
        self.pg_store()
            .await
            .list_usage(tenant, Some(id), None, None)
            .await
            .unwrap_or_else(|e| panic!("usage: {e}"))
    }
}
