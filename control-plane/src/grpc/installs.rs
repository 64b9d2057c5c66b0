//! `annex.v1.Installs`: changes by the operator role; reads and Resolve also
//! by the edge and control-plane roles. Quotas and usage are operator-only.
//! Workers have no access.

use std::sync::Arc;

use annex_ops::Role;
use annex_ops::tls::require;
use annex_proto::domain::{TenantId, string_map};
use annex_proto::pb::{self, installs_server::Installs};
use tonic::{Request, Response, Status};

use super::registry::{endpoint_pb, ui_pb};
use super::{from_ts, ts};
use crate::apikeys::ApiKeys;
use crate::installs::{InstallSpec, SecretsUpdate};
use crate::quota::Quotas;
use crate::rollouts::StartRollout;

use super::rollouts;
use crate::storage::Storage;
use crate::store::{InstallView, QuotaLimits, QuotaRow, StorageSchema, StorageScope, UsageRow};

const READERS: &[Role] = &[Role::Operator, Role::Edge, Role::ControlPlane];
const WRITERS: &[Role] = &[Role::Operator];

pub(crate) struct InstallsService {
    pub(crate) installs: Arc<crate::installs::Installs>,
    pub(crate) rollouts: Arc<crate::rollouts::Rollouts>,
    pub(crate) quotas: Arc<Quotas>,
    pub(crate) api_keys: Arc<ApiKeys>,
    pub(crate) storage: Arc<Storage>,
    pub(crate) captures: Arc<crate::captures::Captures>,
}

fn install_ref(r: Option<pb::InstallRef>) -> Result<(TenantId, String), Status> {
    let r = r.unwrap_or_default();
    Ok((TenantId::parse(&r.tenant_id)?, r.extension))
}

impl InstallsService {
    /// The storage of the tenant's install, active or not.
    async fn storage_scope(&self, r: Option<pb::InstallRef>) -> Result<StorageScope, Status> {
        let (tenant, ext) = install_ref(r)?;
        let view = self.installs.view(&tenant, &ext).await?;
        Ok(StorageScope {
            tenant_id: view.install.tenant_id,
            install_id: view.install.id,
        })
    }
}

fn schema_pb(s: &StorageSchema) -> pb::StorageSchema {
    pb::StorageSchema {
        namespace: s.namespace.clone(),
        version: s.version,
        schema_json: s.document.to_string(),
        created_at: ts(s.created_at),
    }
}

fn quota_ref(r: Option<pb::QuotaRef>) -> Result<(TenantId, String), Status> {
    let r = r.unwrap_or_default();
    Ok((TenantId::parse(&r.tenant_id)?, r.extension))
}

fn quota_pb(q: &QuotaRow) -> pb::Quota {
    pb::Quota {
        tenant_id: q.tenant_id.clone(),
        install_id: q.install_id.map(|i| i.to_string()).unwrap_or_default(),
        max_concurrency: q.limits.max_concurrency,
        requests_per_second: q.limits.requests_per_second,
        updated_at: ts(q.updated_at),
    }
}

fn usage_pb(u: &UsageRow) -> pb::ExecutionUsage {
    pb::ExecutionUsage {
        tenant_id: u.tenant_id.clone(),
        registry_id: u.registry_id.to_string(),
        invocations: u.invocations,
        cpu_us: u.cpu_us,
        memory_byte_ms: u.memory_byte_ms,
        egress_bytes: u.egress_bytes,
        fuel: u.fuel,
        window_start_ms: u.window_start.timestamp_millis(),
    }
}

#[tonic::async_trait]
impl Installs for InstallsService {
    async fn start_rollout(
        &self,
        req: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let peer = require(&req, WRITERS)?;
        let r = req.into_inner();
        let (tenant, extension) = install_ref(r.install)?;
        let start = StartRollout {
            tenant,
            extension,
            versions: r.versions,
            policy: rollouts::policy_from_pb(r.policy, r.disable_missing_schedules),
        };
        let view = self.rollouts.start(start, &rollouts::actor(&peer)).await?;
        Ok(Response::new(rollouts::rollout_pb(&view)))
    }

    async fn get_rollout(
        &self,
        req: Request<pb::InstallRef>,
    ) -> Result<Response<pb::Rollout>, Status> {
        require(&req, WRITERS)?;
        let (tenant, extension) = install_ref(Some(req.into_inner()))?;
        let view = self.rollouts.get(&tenant, &extension).await?;
        Ok(Response::new(rollouts::rollout_pb(&view)))
    }

    async fn promote_rollout(
        &self,
        req: Request<pb::PromoteRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let peer = require(&req, WRITERS)?;
        let r = req.into_inner();
        let (tenant, extension) = install_ref(r.install)?;
        let view = self
            .rollouts
            .promote(
                &tenant,
                &extension,
                Some(&r.version),
                &rollouts::actor(&peer),
            )
            .await?;
        Ok(Response::new(rollouts::rollout_pb(&view)))
    }

    async fn abort_rollout(
        &self,
        req: Request<pb::AbortRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let peer = require(&req, WRITERS)?;
        let r = req.into_inner();
        let (tenant, extension) = install_ref(r.install)?;
        let view = self
            .rollouts
            .abort(&tenant, &extension, &r.reason, &rollouts::actor(&peer))
            .await?;
        Ok(Response::new(rollouts::rollout_pb(&view)))
    }

    async fn set_quota(
        &self,
        req: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        require(&req, WRITERS)?;
        let r = req.into_inner();
        let (tenant, extension) = quota_ref(r.quota)?;
        let limits = QuotaLimits {
            max_concurrency: r.max_concurrency,
            requests_per_second: r.requests_per_second,
        };
        let row = self.quotas.set_quota(&tenant, &extension, limits).await?;
        Ok(Response::new(quota_pb(&row)))
    }

    async fn list_quotas(
        &self,
        req: Request<pb::ListQuotasRequest>,
    ) -> Result<Response<pb::ListQuotasResponse>, Status> {
        require(&req, WRITERS)?;
        let tenant = req.into_inner().tenant_id;
        let tenant = if tenant.trim().is_empty() {
            None
        } else {
            Some(TenantId::parse(&tenant)?)
        };
        let quotas = self.quotas.list_quotas(tenant.as_ref()).await?;
        Ok(Response::new(pb::ListQuotasResponse {
            quotas: quotas.iter().map(quota_pb).collect(),
        }))
    }

    async fn delete_quota(
        &self,
        req: Request<pb::QuotaRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        require(&req, WRITERS)?;
        let (tenant, extension) = quota_ref(Some(req.into_inner()))?;
        self.quotas.delete_quota(&tenant, &extension).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_usage(
        &self,
        req: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        require(&req, WRITERS)?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant_id)?;
        let since = from_ts(r.since.as_ref())?;
        let until = from_ts(r.until.as_ref())?;
        let windows = self
            .quotas
            .usage(&tenant, &r.extension, since, until)
            .await?;
        Ok(Response::new(pb::GetUsageResponse {
            windows: windows.iter().map(usage_pb).collect(),
        }))
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreatedApiKey>, Status> {
        require(&req, WRITERS)?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant_id)?;
        let (row, secret) = self
            .api_keys
            .create(&tenant, &r.name, r.permissions)
            .await?;
        Ok(Response::new(pb::CreatedApiKey {
            key: Some(api_key_pb(&row)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        require(&req, WRITERS)?;
        let tenant = TenantId::parse(&req.into_inner().tenant_id)?;
        let keys = self.api_keys.list(&tenant).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.iter().map(api_key_pb).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        require(&req, WRITERS)?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant_id)?;
        self.api_keys.revoke(&tenant, &r.id).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn install(
        &self,
        req: Request<pb::InstallRequest>,
    ) -> Result<Response<pb::InstallInfo>, Status> {
        require(&req, WRITERS)?;
        let r = req.into_inner();
        let spec = InstallSpec {
            tenant: TenantId::parse(&r.tenant_id)?,
            extension: r.extension,
            version: Some(r.version).filter(|v| !v.trim().is_empty()),
            config: string_map("config", r.config)?,
            egress_allowlist: r.egress_allowlist,
        };
        let view = self.installs.install(spec).await?;
        Ok(Response::new(info_pb(&view)))
    }

    async fn upgrade(
        &self,
        req: Request<pb::UpgradeRequest>,
    ) -> Result<Response<pb::InstallInfo>, Status> {
        require(&req, WRITERS)?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant_id)?;
        let view = self
            .installs
            .upgrade(
                &tenant,
                &r.extension,
                &r.version,
                r.disable_missing_schedules,
            )
            .await?;
        Ok(Response::new(info_pb(&view)))
    }

    async fn uninstall(&self, req: Request<pb::InstallRef>) -> Result<Response<pb::Empty>, Status> {
        require(&req, WRITERS)?;
        let (tenant, ext) = install_ref(Some(req.into_inner()))?;
        self.installs.uninstall(&tenant, &ext).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn enable(
        &self,
        req: Request<pb::InstallRef>,
    ) -> Result<Response<pb::InstallInfo>, Status> {
        require(&req, WRITERS)?;
        let (tenant, ext) = install_ref(Some(req.into_inner()))?;
        let view = self.installs.set_enabled(&tenant, &ext, true).await?;
        Ok(Response::new(info_pb(&view)))
    }

    async fn disable(
        &self,
        req: Request<pb::InstallRef>,
    ) -> Result<Response<pb::InstallInfo>, Status> {
        require(&req, WRITERS)?;
        let (tenant, ext) = install_ref(Some(req.into_inner()))?;
        let view = self.installs.set_enabled(&tenant, &ext, false).await?;
        Ok(Response::new(info_pb(&view)))
    }

    async fn get_install(
        &self,
        req: Request<pb::InstallRef>,
    ) -> Result<Response<pb::InstallInfo>, Status> {
        require(&req, READERS)?;
        let (tenant, ext) = install_ref(Some(req.into_inner()))?;
        let view = self.installs.view(&tenant, &ext).await?;
        Ok(Response::new(info_pb(&view)))
    }

    async fn list_installs(
        &self,
        req: Request<pb::ListInstallsRequest>,
    ) -> Result<Response<pb::ListInstallsResponse>, Status> {
        require(&req, READERS)?;
        let tenant = TenantId::parse(&req.into_inner().tenant_id)?;
        let views = self.installs.list_installs(&tenant).await?;
        Ok(Response::new(pb::ListInstallsResponse {
            installs: views.iter().map(info_pb).collect(),
        }))
    }

    async fn get_config(
        &self,
        req: Request<pb::InstallRef>,
    ) -> Result<Response<pb::InstallConfig>, Status> {
        require(&req, READERS)?;
        let (tenant, ext) = install_ref(Some(req.into_inner()))?;
        let view = self.installs.view(&tenant, &ext).await?;
        Ok(Response::new(config_pb(&view)))
    }

    async fn add_storage_schema(
        &self,
        req: Request<pb::AddStorageSchemaRequest>,
    ) -> Result<Response<pb::StorageSchema>, Status> {
        require(&req, WRITERS)?;
        let r = req.into_inner();
        let scope = self.storage_scope(r.install).await?;
        let schema = self
            .storage
            .add_schema(&scope, &r.namespace, &r.schema_json)
            .await?;
        Ok(Response::new(schema_pb(&schema)))
    }

    async fn list_storage_schemas(
        &self,
        req: Request<pb::InstallRef>,
    ) -> Result<Response<pb::ListStorageSchemasResponse>, Status> {
        require(&req, READERS)?;
        let scope = self.storage_scope(Some(req.into_inner())).await?;
        let schemas = self.storage.schemas(&scope).await?;
        Ok(Response::new(pb::ListStorageSchemasResponse {
            schemas: schemas.iter().map(schema_pb).collect(),
        }))
    }

    async fn set_config(
        &self,
        req: Request<pb::SetConfigRequest>,
    ) -> Result<Response<pb::InstallConfig>, Status> {
        require(&req, WRITERS)?;
        let r = req.into_inner();
        let (tenant, ext) = install_ref(r.install)?;
        let config = string_map("config", r.config)?;
        let view = self.installs.set_config(&tenant, &ext, config).await?;
        Ok(Response::new(config_pb(&view)))
    }

    async fn set_secrets(
        &self,
        req: Request<pb::SetSecretsRequest>,
    ) -> Result<Response<pb::SecretsMetadata>, Status> {
        require(&req, WRITERS)?;
        let r = req.into_inner();
        let (tenant, ext) = install_ref(r.install)?;
        let update = SecretsUpdate {
            values: string_map("secrets", r.secrets)?,
            clear: r.clear,
            expires_at: from_ts(r.expires_at.as_ref())?,
        };
        let (view, version) = self.installs.set_secrets(&tenant, &ext, update).await?;
        Ok(Response::new(pb::SecretsMetadata {
            install_id: view.install.id.to_string(),
            has_envelope: version.is_some(),
            secrets_version: version.unwrap_or_default(),
        }))
    }

    async fn list_secret_keys(
        &self,
        req: Request<pb::InstallRef>,
    ) -> Result<Response<pb::SecretKeys>, Status> {
        require(&req, WRITERS)?;
        let (tenant, ext) = install_ref(Some(req.into_inner()))?;
        let (keys, version, expires_at) = self.installs.secret_keys(&tenant, &ext).await?;
        Ok(Response::new(pb::SecretKeys {
            keys,
            secrets_version: version.unwrap_or_default(),
            expires_at: expires_at.and_then(ts),
            expired: expires_at.is_some_and(|at| at <= chrono::Utc::now()),
        }))
    }

    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolvedInstall>, Status> {
        require(&req, READERS)?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant_id)?;
        let view = self.installs.resolve(&tenant, &r.extension).await?;
        let (grant, grant_expires) = self.installs.issue_grant(&view);
        let rollout = self.rollouts.route(&view).await?;
        let capture = self
            .captures
            .settings(
                &view.install.tenant_id,
                view.install.id,
                &view.install.config_version,
            )
            .await?;
        Ok(Response::new(pb::ResolvedInstall {
            rollout: rollout
                .as_ref()
                .map(|r| super::rollouts::route_pb(&self.installs, r)),
            capture,
            execution_grant: grant,
            grant_expires_at: ts(grant_expires),
            install: Some(info_pb(&view)),
            endpoints: view.version.endpoints.iter().map(endpoint_pb).collect(),
            ui: view.version.ui.as_ref().map(ui_pb),
            config: view.install.config.clone().into_iter().collect(),
            secret_envelope: view.secrets.as_ref().map(|s| pb::SecretEnvelope {
                ciphertext_b64: s.ciphertext.clone(),
                algorithm: s.algorithm.clone(),
                key_path: s.key_path.clone().unwrap_or_default(),
                mount: s.mount.clone().unwrap_or_default(),
                version: s.version.clone(),
                expires_at: s.expires_at.and_then(ts),
            }),
            signature: view.version.bundle.signature.clone(),
            signing_key_id: view.version.bundle.signing_key_id.clone(),
        }))
    }
}

fn api_key_pb(row: &crate::store::ApiKeyRow) -> pb::ApiKeyInfo {
    pb::ApiKeyInfo {
        id: row.id.to_string(),
        tenant_id: row.tenant_id.clone(),
        name: row.name.clone(),
        permissions: row.permissions.clone(),
        created_at: ts(row.created_at),
        revoked_at: row.revoked_at.and_then(ts),
    }
}

fn config_pb(view: &InstallView) -> pb::InstallConfig {
    pb::InstallConfig {
        install_id: view.install.id.to_string(),
        config: view.install.config.clone().into_iter().collect(),
        version: view.install.config_version.clone(),
    }
}

pub(super) fn info_pb(view: &InstallView) -> pb::InstallInfo {
    let i = &view.install;
    pb::InstallInfo {
        install_id: i.id.to_string(),
        tenant_id: i.tenant_id.clone(),
        registry_id: i.registry_id.to_string(),
        version_id: i.version_id.to_string(),
        version: view.version.version.clone(),
        publisher: view.extension.publisher.clone(),
        name: view.extension.name.clone(),
        slug: view.extension.slug(),
        content_hash: view.version.bundle.content_hash.clone(),
        granted_caps: i.granted_caps.clone(),
        enabled: i.is_active(),
        status: i.status.as_str().to_owned(),
        config_version: i.config_version.clone(),
        secrets_version: view
            .secrets
            .as_ref()
            .map(|s| s.version.clone())
            .unwrap_or_default(),
        egress_allowlist: i.egress_allowlist.clone(),
        created_at: ts(i.created_at),
        updated_at: ts(i.updated_at),
    }
}
