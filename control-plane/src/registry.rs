//! The registry: publishing signed bundles as immutable versions, reading
//! extensions and versions, deprecation, and serving bundle bytes by content
//! hash.
//!
//! A publish trusts nothing the client says about the bundle: the content hash
//! is computed from the bytes, the manifest is read from inside the archive,
//! and the signature is checked against the trust bundle before anything is
//! stored. A failed publish leaves no rows and no orphaned bytes.
//!
//! [`Registry`] owns the publish limits and the publish counter; it reads and
//! writes extensions, versions and bundle bytes only through the store, and
//! knows nothing of installs.

use std::sync::Arc;

use annex_bundle::hash::ContentHash;
use annex_bundle::manifest::{Manifest, VersionSpec as ManifestVersion};
use annex_proto::{AnnexError, ErrorCode};
use bytes::Bytes;

use crate::metrics::Metrics;
use crate::store::{
    EndpointRow, ExtensionRow, ExtensionSelector, NewVersion, Store, UiRow, VersionRow, VersionSpec,
};
use crate::trust::{SignedBundle, Trust};

/// The uploaded bundle and what the client declared about it.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub(crate) bytes: Bytes,
    /// Computed while the bytes streamed in.
    pub(crate) content_hash: ContentHash,
    pub(crate) signature: String,
    pub(crate) key_id: Option<String>,
    pub(crate) declared_hash: Option<String>,
    pub(crate) declared_size: Option<u64>,
}

/// The first bytes of a WebAssembly component (magic + component-model layer).
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Extensions, their immutable versions and the bundle bytes.
pub(crate) struct Registry {
    store: Arc<dyn Store>,
    trust: Arc<Trust>,
    /// Largest bundle a publish may upload.
    max_bundle_bytes: u64,
    unpack: annex_bundle::archive::Limits,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        trust: Arc<Trust>,
        limits: &crate::Limits,
        metrics: Arc<Metrics>,
    ) -> Registry {
        Registry {
            store,
            trust,
            max_bundle_bytes: limits.max_bundle_bytes,
            unpack: limits.unpack,
            metrics,
        }
    }

    /// The largest bundle a publish may upload, checked while it streams in.
    pub(crate) fn max_bundle_bytes(&self) -> u64 {
        self.max_bundle_bytes
    }

    pub(crate) async fn publish(
        &self,
        upload: Upload,
    ) -> Result<(ExtensionRow, VersionRow), AnnexError> {
        let result = self.publish_inner(upload).await;
        self.metrics
            .publish(result.as_ref().map(|_| ()).map_err(|e| e.code));
        result
    }

    async fn publish_inner(
        &self,
        upload: Upload,
    ) -> Result<(ExtensionRow, VersionRow), AnnexError> {
        check_declared(&upload)?;
        let manifest = self.read_bundle_manifest(upload.bytes.clone()).await?;
        let version_written = manifest.version.to_string();
        let key_id = self
            .trust
            .verify_signature(SignedBundle {
                content_hash: &upload.content_hash,
                publisher: &manifest.publisher,
                name: &manifest.name,
                version: &version_written,
                signature: &upload.signature,
                key_id: upload.key_id.as_deref(),
            })
            .await?;
        let hash = upload.content_hash.to_string();
        let new = NewVersion {
            publisher: manifest.publisher.clone(),
            name: manifest.name.clone(),
            version: match &manifest.version {
                ManifestVersion::Exact(v) => VersionSpec::Exact(v.clone()),
                ManifestVersion::Wildcard { major, minor } => VersionSpec::Wildcard {
                    major: *major,
                    minor: *minor,
                },
            },
            runtime: manifest.runtime.clone(),
            main_entry: manifest.main_entry().to_owned(),
            endpoints: manifest
                .endpoints
                .iter()
                .map(|e| EndpointRow {
                    method: e.method.clone(),
                    path: e.path.clone(),
                    handler: e.handler.clone(),
                })
                .collect(),
            ui: manifest.ui.as_ref().map(|ui| UiRow {
                entry: ui.entry.clone(),
                app_menu_label: ui.app_menu_label.clone(),
                client_portal_menu_label: ui.client_portal_menu_label.clone(),
            }),
            capabilities: manifest.capabilities.clone(),
            content_hash: hash.clone(),
            signature: upload.signature.trim().to_owned(),
            signing_key_id: key_id,
            size_bytes: upload.bytes.len() as u64,
        };
        self.store.put_blob(&hash, upload.bytes).await?;
        match self.store.publish_version(new).await {
            Ok((ext, version)) => {
                tracing::info!(
                    extension = %ext.id, publisher = %ext.publisher, name = %ext.name,
                    version = %version.version, content_hash = %hash, "version published"
                );
                Ok((ext, version))
            }
            Err(err) => {
                // Content-addressed bytes may be shared with an earlier
                // version; they go only when nothing references them.
                if let Err(cleanup) = self.store.delete_unreferenced_blob(&hash).await {
                    tracing::warn!(content_hash = %hash, error = %cleanup, "removing the bytes of a failed publish");
                }
                Err(err.into())
            }
        }
    }

    /// Unpacks the bundle off the async runtime and returns its validated manifest.
    async fn read_bundle_manifest(&self, bytes: Bytes) -> Result<Manifest, AnnexError> {
        let limits = self.unpack;
        tokio::task::spawn_blocking(move || -> Result<Manifest, AnnexError> {
            let bundle = annex_bundle::archive::unpack(&bytes, &limits).map_err(archive_error)?;
            let manifest = bundle.manifest().map_err(archive_error)?;
            let component = bundle.component().ok_or_else(|| {
                AnnexError::new(ErrorCode::InvalidBundle, "the bundle has no dist/main.wasm component")
            })?;
            if !component.starts_with(&COMPONENT_PREAMBLE) {
                return Err(AnnexError::new(
                    ErrorCode::InvalidBundle,
                    "dist/main.wasm is not a WebAssembly component (core modules are not supported)",
                ));
            }
            Ok(manifest)
        })
        .await
        .map_err(|_| AnnexError::internal())?
    }

    pub(crate) async fn list_extensions(&self) -> Result<Vec<ExtensionRow>, AnnexError> {
        Ok(self.store.list_extensions().await?)
    }

    pub(crate) async fn find_extension(&self, extension: &str) -> Result<ExtensionRow, AnnexError> {
        let selector = selector(extension)?;
        self.store.get_extension(&selector).await?.ok_or_else(|| {
            AnnexError::new(
                ErrorCode::ExtensionNotFound,
                format!("no extension {extension}"),
            )
        })
    }

    /// An extension's versions, newest first.
    pub(crate) async fn list_versions(
        &self,
        extension: &str,
    ) -> Result<Vec<VersionRow>, AnnexError> {
        let ext = self.find_extension(extension).await?;
        Ok(self.store.list_versions(ext.id).await?)
    }

    pub(crate) async fn find_version(
        &self,
        extension: &str,
        version: &str,
    ) -> Result<VersionRow, AnnexError> {
        let ext = self.find_extension(extension).await?;
        let version = annex_proto::domain::required("version", version)?;
        self.store
            .get_version(ext.id, version)
            .await?
            .ok_or_else(|| {
                AnnexError::new(
                    ErrorCode::VersionNotFound,
                    format!("{} has no version {version}", ext.slug()),
                )
            })
    }

    pub(crate) async fn deprecate(
        &self,
        extension: &str,
        version: &str,
        reason: &str,
    ) -> Result<VersionRow, AnnexError> {
        let v = self.find_version(extension, version).await?;
        let row = self
            .store
            .deprecate_version(v.registry_id, &v.version, reason.trim())
            .await?;
        tracing::info!(extension = %row.registry_id, version = %row.version, "version deprecated");
        Ok(row)
    }

    /// The bundle bytes and their version by content hash.
    pub(crate) async fn fetch_bundle(
        &self,
        content_hash: &str,
    ) -> Result<(VersionRow, Bytes), AnnexError> {
        let hash: ContentHash = content_hash
            .parse()
            .map_err(|_| AnnexError::invalid("content_hash must be sha256:<64 hex digits>"))?;
        let hash = hash.to_string();
        let not_found = || AnnexError::new(ErrorCode::BundleNotFound, format!("no bundle {hash}"));
        let version = self
            .store
            .version_by_content_hash(&hash)
            .await?
            .ok_or_else(not_found)?;
        let bytes = self.store.get_blob(&hash).await?.ok_or_else(not_found)?;
        Ok((version, bytes))
    }
}

pub(crate) fn selector(extension: &str) -> Result<ExtensionSelector, AnnexError> {
    ExtensionSelector::parse(extension).ok_or_else(|| {
        AnnexError::invalid("extension (install id, registry id or slug) is required")
    })
}

fn check_declared(upload: &Upload) -> Result<(), AnnexError> {
    if let Some(declared) = upload
        .declared_hash
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let declared_hex = declared
            .strip_prefix("sha256:")
            .unwrap_or(declared)
            .to_lowercase();
        if declared_hex != upload.content_hash.hex() {
            return Err(AnnexError::new(
                ErrorCode::HashMismatch,
                format!(
                    "declared hash sha256:{declared_hex} does not match the uploaded bytes ({})",
                    upload.content_hash
                ),
            ));
        }
    }
    if let Some(size) = upload.declared_size.filter(|s| *s > 0)
        && size != upload.bytes.len() as u64
    {
        return Err(AnnexError::new(
            ErrorCode::HashMismatch,
            format!(
                "declared size {size} does not match the {} bytes uploaded",
                upload.bytes.len()
            ),
        ));
    }
    Ok(())
}

fn archive_error(err: annex_bundle::archive::ArchiveError) -> AnnexError {
    use annex_bundle::archive::ArchiveError as E;
    match err {
        E::TooLarge { .. } => AnnexError::new(ErrorCode::BundleTooLarge, err.to_string()),
        E::MissingManifest => AnnexError::new(
            ErrorCode::ManifestNotFound,
            "the bundle has no manifest.json",
        ),
        E::Manifest(ref m) => AnnexError::new(ErrorCode::InvalidManifest, m.to_string()),
        E::MissingComponent => AnnexError::new(
            ErrorCode::InvalidBundle,
            "the bundle has no dist/main.wasm component",
        ),
        other => AnnexError::new(ErrorCode::InvalidBundle, other.to_string()),
    }
}
