//! `annex.v1.Captures`: capture policies and captured executions, operator
//! role only (docs/design/replay.md). Reads are recorded with the
//! operator certificate's name.

use std::sync::Arc;

use annex_ops::Role;
use annex_ops::tls::require;
use annex_proto::domain::TenantId;
use annex_proto::pb::{self, captures_server};
use tonic::{Request, Response, Status};

use super::ts;
use crate::captures::{Captures, PolicySpec};
use crate::store::{CapturePolicyRow, CaptureRow};

const OPERATORS: &[Role] = &[Role::Operator];

pub(crate) struct CapturesService {
    pub(crate) captures: Arc<Captures>,
}

fn install_ref(r: Option<pb::CaptureInstallRef>) -> Result<(TenantId, String), Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("install is required"))?;
    Ok((TenantId::parse(&r.tenant_id)?, r.extension))
}

fn policy_pb(p: &CapturePolicyRow) -> pb::CapturePolicy {
    pb::CapturePolicy {
        tenant_id: p.tenant_id.clone(),
        install_id: p.install_id.to_string(),
        sample_ppm: p.sample_ppm,
        failures: p.failures,
        retention_hours: p.retention_hours,
        max_bytes: p.max_bytes,
        created_at: ts(p.created_at),
    }
}

fn summary_pb(r: &CaptureRow) -> pb::CaptureSummary {
    pb::CaptureSummary {
        capture_id: r.id.to_string(),
        tenant_id: r.tenant_id.clone(),
        install_id: r.install_id.to_string(),
        request_id: r.request_id.clone(),
        content_hash: r.content_hash.clone(),
        reason: r.reason.clone(),
        outcome: r.outcome.clone(),
        status: r.status,
        method: r.method.clone(),
        path: r.path.clone(),
        size_bytes: r.size_bytes,
        secret_keys: r.secret_keys.clone(),
        created_at: ts(r.created_at),
        expires_at: ts(r.expires_at),
    }
}

#[tonic::async_trait]
impl captures_server::Captures for CapturesService {
    async fn start_capture(
        &self,
        req: Request<pb::StartCaptureRequest>,
    ) -> Result<Response<pb::CapturePolicy>, Status> {
        require(&req, OPERATORS)?;
        let r = req.into_inner();
        let (tenant, extension) = install_ref(r.install)?;
        let spec = PolicySpec {
            sample_ppm: r.sample_ppm,
            failures: r.failures,
            retention_hours: r.retention_hours,
            max_bytes: r.max_bytes,
        };
        let row = self.captures.start(&tenant, &extension, spec).await?;
        Ok(Response::new(policy_pb(&row)))
    }

    async fn stop_capture(
        &self,
        req: Request<pb::CaptureInstallRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        require(&req, OPERATORS)?;
        let (tenant, extension) = install_ref(Some(req.into_inner()))?;
        self.captures.stop(&tenant, &extension).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_captures(
        &self,
        req: Request<pb::ListCapturesRequest>,
    ) -> Result<Response<pb::ListCapturesResponse>, Status> {
        require(&req, OPERATORS)?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant_id)?;
        let (rows, policy) = self.captures.list(&tenant, &r.extension, r.limit).await?;
        Ok(Response::new(pb::ListCapturesResponse {
            captures: rows.iter().map(summary_pb).collect(),
            policy: policy.as_ref().map(policy_pb),
        }))
    }

    async fn get_capture(
        &self,
        req: Request<pb::GetCaptureRequest>,
    ) -> Result<Response<pb::Capture>, Status> {
        let peer = require(&req, OPERATORS)?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant_id)?;
        let read = self
            .captures
            .get(&tenant, &r.capture_id, r.reveal_secrets, &peer.name)
            .await?;
        Ok(Response::new(pb::Capture {
            summary: Some(summary_pb(&read.row)),
            tape: read.row.tape,
            secrets: read.secrets.into_iter().collect(),
        }))
    }
}
