//! `alga:extension/storage` through `HostServices`
//! (docs/design/alga-compatibility.md, "Storage"). Without
//! `cap:storage.kv` or an install id: `denied`. Errors map by the
//! HTTP-equivalent status as Alga's runner maps its server's statuses:
//! 401/403/429 → `denied`, 404 → `missing`, 409 → `conflict`, anything else
//! (validation and limits included) → `internal`.
//!
//! Annex's `storage-v2` (`put-with`, `bulk-put`) maps the same way and adds
//! the reason: the control plane's message for a refusal (4xx), a generic
//! one for a failure of the service itself.

use crate::backend::{HostError, StorageItem, StorageOptions, StorageRecord};
use crate::bindings::alga::extension::storage;
use crate::bindings::alga::extension::storage_v2::{self, PutOptions, StorageFailure};
use crate::bindings::types::{StorageEntry, StorageError};
use crate::capabilities::Capability;
use crate::host::HostState;

fn map_error(error: HostError) -> StorageError {
    match error.status {
        401 | 403 | 429 => StorageError::Denied,
        404 => StorageError::Missing,
        409 => StorageError::Conflict,
        _ => StorageError::Internal,
    }
}

fn failure(error: HostError) -> StorageFailure {
    let message = if (400..500).contains(&error.status) {
        error.message.clone()
    } else {
        "the storage service failed; try again".to_owned()
    };
    StorageFailure {
        kind: map_error(error),
        message,
    }
}

fn refused(kind: StorageError, message: &str) -> StorageFailure {
    StorageFailure {
        kind,
        message: message.to_owned(),
    }
}

fn options(o: PutOptions) -> StorageOptions {
    StorageOptions {
        ttl_seconds: o.ttl_seconds.map(u64::from),
        json: o.json,
        schema_version: o.schema_version,
    }
}

fn entry(record: StorageRecord) -> StorageEntry {
    StorageEntry {
        namespace: record.namespace,
        key: record.key,
        value: record.value,
        revision: Some(record.revision),
    }
}

impl HostState {
    fn storage_grant(&self) -> Result<String, StorageError> {
        if !self.caps.has(Capability::StorageKv) || self.call.install_id().is_none() {
            return Err(StorageError::Denied);
        }
        Ok(self.call.grant.clone())
    }
}

impl storage::Host for HostState {
    async fn get(
        &mut self,
        namespace: String,
        key: String,
    ) -> wasmtime::Result<Result<StorageEntry, StorageError>> {
        let grant = match self.storage_grant() {
            Ok(g) => g,
            Err(e) => return Ok(Err(e)),
        };
        let result = self
            .services
            .backend
            .storage_get(&grant, &namespace, &key)
            .await;
        Ok(match result {
            Ok(Some(record)) => Ok(entry(record)),
            Ok(None) => Err(StorageError::Missing),
            Err(e) => Err(map_error(e)),
        })
    }

    async fn put(
        &mut self,
        entry_in: StorageEntry,
    ) -> wasmtime::Result<Result<StorageEntry, StorageError>> {
        let grant = match self.storage_grant() {
            Ok(g) => g,
            Err(e) => return Ok(Err(e)),
        };
        let result = self
            .services
            .backend
            .storage_put(
                &grant,
                &entry_in.namespace,
                &entry_in.key,
                entry_in.value.clone(),
                entry_in.revision,
            )
            .await;
        // Alga returns the input entry with the new revision.
        Ok(result.map_err(map_error).map(|record| StorageEntry {
            revision: Some(record.revision),
            ..entry_in
        }))
    }

    async fn delete(
        &mut self,
        namespace: String,
        key: String,
    ) -> wasmtime::Result<Result<(), StorageError>> {
        let grant = match self.storage_grant() {
            Ok(g) => g,
            Err(e) => return Ok(Err(e)),
        };
        let result = self
            .services
            .backend
            .storage_delete(&grant, &namespace, &key)
            .await;
        Ok(match result {
            Ok(true) => Ok(()),
            // Alga: the server's `success:false` (nothing deleted) is a conflict.
            Ok(false) => Err(StorageError::Conflict),
            Err(e) => Err(map_error(e)),
        })
    }

    async fn list_entries(
        &mut self,
        namespace: String,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<Vec<StorageEntry>, StorageError>> {
        let grant = match self.storage_grant() {
            Ok(g) => g,
            Err(e) => return Ok(Err(e)),
        };
        let result = self
            .services
            .backend
            .storage_list(&grant, &namespace, cursor.as_deref())
            .await;
        Ok(result
            .map(|records| records.into_iter().map(entry).collect())
            .map_err(map_error))
    }
}

impl storage_v2::Host for HostState {
    async fn put_with(
        &mut self,
        entry_in: StorageEntry,
        opts: PutOptions,
    ) -> wasmtime::Result<Result<StorageEntry, StorageFailure>> {
        let grant = match self.storage_grant() {
            Ok(g) => g,
            Err(e) => return Ok(Err(refused(e, "needs cap:storage.kv and an install"))),
        };
        let item = StorageItem {
            key: entry_in.key.clone(),
            value: entry_in.value.clone(),
            if_revision: entry_in.revision,
        };
        let result = self
            .services
            .backend
            .storage_put_with(&grant, &entry_in.namespace, item, options(opts))
            .await;
        Ok(result.map_err(failure).map(|record| StorageEntry {
            revision: Some(record.revision),
            ..entry_in
        }))
    }

    async fn bulk_put(
        &mut self,
        namespace: String,
        entries: Vec<StorageEntry>,
        opts: PutOptions,
    ) -> wasmtime::Result<Result<Vec<StorageEntry>, StorageFailure>> {
        let grant = match self.storage_grant() {
            Ok(g) => g,
            Err(e) => return Ok(Err(refused(e, "needs cap:storage.kv and an install"))),
        };
        if entries
            .iter()
            .any(|e| !e.namespace.is_empty() && e.namespace != namespace)
        {
            return Ok(Err(refused(
                StorageError::Internal,
                "every entry of a bulk put is in its namespace",
            )));
        }
        let items = entries
            .iter()
            .map(|e| StorageItem {
                key: e.key.clone(),
                value: e.value.clone(),
                if_revision: e.revision,
            })
            .collect();
        let result = self
            .services
            .backend
            .storage_bulk_put(&grant, &namespace, items, options(opts))
            .await;
        Ok(result.map_err(failure).map(|records| {
            entries
                .into_iter()
                .zip(records)
                .map(|(e, r)| StorageEntry {
                    namespace: namespace.clone(),
                    revision: Some(r.revision),
                    ..e
                })
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_as_alga_runner_maps_them() {
        let e = |status| {
            map_error(HostError {
                status,
                message: String::new(),
            })
        };
        assert_eq!(e(401), StorageError::Denied);
        assert_eq!(e(403), StorageError::Denied);
        assert_eq!(e(429), StorageError::Denied);
        assert_eq!(e(404), StorageError::Missing);
        assert_eq!(e(409), StorageError::Conflict);
        assert_eq!(e(400), StorageError::Internal);
        assert_eq!(e(503), StorageError::Internal);
    }
}
