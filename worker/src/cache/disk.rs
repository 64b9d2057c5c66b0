//! The disk half of the compiled-component cache: one record per verified
//! bundle (`bundle-<bundle hex>.json`: its component digest, world, size
//! and signature record) and one serialized artifact per component
//! (`component-<component hex>-<engine hash>.cwasm`), so a component shared
//! by several bundles is compiled and stored once.
//!
//! Invariants: the directory is created 0700 and only this module writes
//! into it; an artifact is written only from a compile of bytes whose
//! digest it is named by and that came out of a verified bundle; loading
//! one is the crate's single `unsafe` (Wasmtime trusts serialized code).
//! Every failure here is a miss (logged), never an error for the caller:
//! the cost is a fetch or a compile. It must not decide trust: callers
//! re-check a record's signature before using it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use annex_bundle::{ContentHash, World};
use serde::{Deserialize, Serialize};
use wasmtime::component::Component;

use super::BundleRecord;
use crate::bundles::SignatureRecord;
use crate::engine::WasmEngine;

/// A bundle record as stored (the world by name).
#[derive(Serialize, Deserialize)]
struct Stored {
    component: ContentHash,
    component_bytes: u64,
    world: String,
    signature: SignatureRecord,
}

/// The cache directory.
pub(super) struct Disk {
    dir: PathBuf,
    engine: Arc<WasmEngine>,
}

impl Disk {
    pub(super) fn open(dir: PathBuf, engine: Arc<WasmEngine>) -> std::io::Result<Disk> {
        create_private_dir(&dir)?;
        Ok(Disk { dir, engine })
    }

    fn record_path(&self, bundle: &ContentHash) -> PathBuf {
        self.dir.join(format!("bundle-{}.json", bundle.hex()))
    }

    fn artifact_path(&self, component: &ContentHash) -> PathBuf {
        self.dir.join(format!(
            "component-{}-{}.cwasm",
            component.hex(),
            self.engine.compatibility_hash()
        ))
    }

    /// The record of `bundle`, if one was written and still reads.
    pub(super) async fn record(&self, bundle: &ContentHash) -> Option<BundleRecord> {
        let bytes = tokio::fs::read(self.record_path(bundle)).await.ok()?;
        let stored: Stored = serde_json::from_slice(&bytes).ok()?;
        Some(BundleRecord {
            component: stored.component,
            component_bytes: stored.component_bytes,
            world: match stored.world.as_str() {
                "wasi-http" => World::WasiHttp,
                _ => World::Alga,
            },
            signature: stored.signature,
        })
    }

    /// Forgets `bundle`'s record (its signature no longer verifies).
    pub(super) async fn forget(&self, bundle: &ContentHash) {
        let _ = tokio::fs::remove_file(self.record_path(bundle)).await;
    }

    /// Best effort: a failed write costs a later fetch.
    pub(super) async fn remember(&self, bundle: &ContentHash, record: &BundleRecord) {
        let stored = Stored {
            component: record.component.clone(),
            component_bytes: record.component_bytes,
            world: record.world.as_str().to_owned(),
            signature: record.signature.clone(),
        };
        let path = self.record_path(bundle);
        let result = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            write_atomically(&path, &serde_json::to_vec(&stored)?)?;
            Ok(())
        })
        .await;
        if let Ok(Err(error)) | Err(error) = result.map_err(anyhow::Error::from) {
            tracing::warn!(%error, bundle = %bundle, "writing the bundle record failed");
        }
    }

    /// The artifact of `component`, memory-mapped, if one is stored and
    /// loads; an unreadable one is removed.
    pub(super) async fn artifact(&self, component: &ContentHash) -> Option<Component> {
        let path = self.artifact_path(component);
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return None;
        }
        let engine = self.engine.clone();
        let file = path.clone();
        let loaded =
            tokio::task::spawn_blocking(move || deserialize_own_artifact(&engine, &file)).await;
        match loaded {
            Ok(Ok(component)) => Some(component),
            Ok(Err(error)) => {
                tracing::warn!(%error, component = %component, "discarding an unreadable compiled artifact");
                let _ = tokio::fs::remove_file(&path).await;
                None
            }
            Err(error) => {
                tracing::warn!(%error, component = %component, "loading a compiled artifact failed");
                None
            }
        }
    }

    /// Stores `compiled` and returns it loaded back from the file: the
    /// mapped file's pages are shared and reclaimable, where the fresh
    /// compile's code is private memory (about 36 MB for a JavaScript
    /// component). `None` when storing failed; the caller keeps `compiled`.
    pub(super) async fn store(
        &self,
        component: &ContentHash,
        compiled: Component,
    ) -> Option<Component> {
        let path = self.artifact_path(component);
        let engine = self.engine.clone();
        let stored = tokio::task::spawn_blocking(move || -> anyhow::Result<Component> {
            write_atomically(&path, &compiled.serialize()?)?;
            deserialize_own_artifact(&engine, &path)
        })
        .await;
        match stored {
            Ok(Ok(mapped)) => Some(mapped),
            Ok(Err(error)) => {
                tracing::warn!(%error, component = %component, "storing a compiled artifact failed");
                None
            }
            Err(error) => {
                tracing::warn!(%error, component = %component, "the artifact writer failed");
                None
            }
        }
    }
}

/// Loads an artifact from this worker's own disk cache.
#[allow(unsafe_code)]
fn deserialize_own_artifact(engine: &WasmEngine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: `Component::deserialize_file` runs the machine code in the
    // file, so the file must come from `Component::serialize` of a trusted
    // compilation. Only `Disk::store` writes artifacts into the cache
    // directory (created 0700 by this process), and only for a component
    // compiled from bytes that came out of a bundle whose hash and
    // signature were verified, under the name of those bytes' digest; the
    // name carries the engine's compatibility hash, and Wasmtime itself
    // rejects artifacts built with other settings or versions. This is the
    // one documented exception to the workspace's `unsafe_code = "deny"`
    // lint (root Cargo.toml).
    let component = unsafe { Component::deserialize_file(engine.engine(), path)? };
    Ok(component)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
