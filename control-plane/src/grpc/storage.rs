//! Protobuf conversions for the storage calls of `HostServices`.

use annex_proto::pb;

use super::ts;
use crate::storage::{BulkPutRequest, ListRequest, PutOptions, PutRequest, Record};

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
        options: PutOptions {
            ttl_seconds: r.ttl_seconds,
            json: r.json,
            schema_version: r.schema_version,
        },
    }
}

pub(crate) fn bulk_from_pb(r: pb::StorageBulkPutRequest) -> BulkPutRequest {
    BulkPutRequest {
        namespace: r.namespace,
        items: r
            .items
            .into_iter()
            .map(|i| (i.key, i.value, i.if_revision))
            .collect(),
        options: PutOptions {
            ttl_seconds: r.ttl_seconds,
            json: r.json,
            schema_version: r.schema_version,
        },
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
