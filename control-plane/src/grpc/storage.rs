//! Protobuf conversions for the storage calls of `HostServices`.

use annex_proto::pb;

use super::ts;
use crate::storage::{ListRequest, PutRequest, Record};

pub(crate) fn record_pb(r: &Record) -> pb::StorageRecord {
    pb::StorageRecord {
        namespace: r.namespace.clone(),
        key: r.key.clone(),
        value: r.value.clone(),
        revision: r.revision,
        ttl_expires_at: r.ttl_expires_at.and_then(ts),
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
        metadata_json: r.metadata.to_string(),
    }
}

pub(crate) fn put_from_pb(r: pb::StoragePutRequest) -> PutRequest {
    PutRequest {
        namespace: r.namespace,
        key: r.key,
        value: r.value,
        if_revision: r.if_revision,
        ttl_seconds: r.ttl_seconds,
    }
}

pub(crate) fn list_from_pb(r: &pb::StorageListRequest) -> ListRequest {
    ListRequest {
        namespace: r.namespace.clone(),
        cursor: Some(r.cursor.clone()).filter(|c| !c.is_empty()),
        limit: Some(r.limit).filter(|l| *l > 0),
        key_prefix: Some(r.key_prefix.clone()).filter(|p| !p.is_empty()),
    }
}
