//! `annex.v1.Trust`: operators add and revoke publisher keys; every role may list.

use std::sync::Arc;

use annex_ops::Role;
use annex_ops::tls::require;
use annex_proto::pb::{self, trust_server::Trust};
use tonic::{Request, Response, Status};

use super::{from_ts, ts};
use crate::store::KeyRow;
use crate::trust::NewKey;

pub(crate) struct TrustService {
    pub(crate) trust: Arc<crate::trust::Trust>,
}

#[tonic::async_trait]
impl Trust for TrustService {
    async fn add_key(
        &self,
        req: Request<pb::AddKeyRequest>,
    ) -> Result<Response<pb::PublisherKey>, Status> {
        require(&req, &[Role::Operator])?;
        let r = req.into_inner();
        let new = NewKey {
            publisher: r.publisher,
            public_key: r.public_key,
            key_id: Some(r.key_id).filter(|k| !k.is_empty()),
            not_before: from_ts(r.not_before.as_ref())?,
            not_after: from_ts(r.not_after.as_ref())?,
        };
        let row = self.trust.add_key(new).await?;
        Ok(Response::new(key_pb(&row)))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let publisher = req.into_inner().publisher;
        let publisher = Some(publisher.trim()).filter(|p| !p.is_empty());
        let (keys, revision) = self.trust.list_keys(publisher).await?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.iter().map(key_pb).collect(),
            revision,
        }))
    }

    async fn revoke_key(
        &self,
        req: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::PublisherKey>, Status> {
        require(&req, &[Role::Operator])?;
        let row = self.trust.revoke_key(&req.into_inner().key_id).await?;
        Ok(Response::new(key_pb(&row)))
    }
}

fn key_pb(row: &KeyRow) -> pb::PublisherKey {
    use base64::Engine as _;
    pb::PublisherKey {
        key_id: row.key_id.clone(),
        publisher: row.publisher.clone(),
        public_key: base64::engine::general_purpose::STANDARD.encode(&row.public_key),
        not_before: ts(row.not_before),
        not_after: row.not_after.and_then(ts),
        revoked: row.revoked_at.is_some(),
        revoked_at: row.revoked_at.and_then(ts),
        created_at: ts(row.created_at),
    }
}
