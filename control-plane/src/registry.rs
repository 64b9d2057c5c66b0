//! The registry: publishing signed bundles as immutable versions, reading
//! extensions and versions, deprecation, and serving bundle bytes by content
//! hash.
//!
//! A publish trusts nothing the client says about the bundle: the content hash
//! is computed from the bytes as they are spooled, the manifest is read from
//! inside the archive (streamed from the spool, never held whole), and the
//! signature is checked against the trust bundle before anything is
//! committed to the blob store; the blob is committed under its content hash
//! before the bundle row is written. A failed publish leaves no rows and
//! nothing servable; bytes it committed before its row failed are removed
//! at once where the blob store can tell they are unreferenced (Postgres),
//! else by the orphan collector (docs/design/blob-stores.md).
//!
//! [`Registry`] owns the publish limits and the publish counter; it reads and
//! writes extensions and versions through the store and bundle bytes
//! through the blob store, and knows nothing of installs.

use std::sync::Arc;

use annex_bundle::hash::ContentHash;
use annex_bundle::manifest::{Manifest, VersionSpec as ManifestVersion};
use annex_proto::{AnnexError, ErrorCode};

use crate::blobs::spool::Spooled;
use crate::metrics::Metrics;
use crate::store::{
    BlobRead, BlobStore, EndpointRow, ExtensionRow, ExtensionSelector, NewVersion, Store, UiRow,
    VersionRow, VersionSpec,
};
use crate::trust::{SignedBundle, Trust};

/// The uploaded bundle and what the client declared about it.
#[derive(Debug)]
pub(crate) struct Upload {
    /// The bytes on local disk and their hash, computed while they streamed in.
    pub(crate) spooled: Spooled,
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
    blobs: Arc<dyn BlobStore>,
    trust: Arc<Trust>,
    /// Largest bundle a publish may upload.
    max_bundle_bytes: u64,
    unpack: annex_bundle::archive::Limits,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        trust: Arc<Trust>,
        limits: &crate::Limits,
        metrics: Arc<Metrics>,
    ) -> Registry {
        Registry {
            store,
            blobs,
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
        let manifest = self.read_bundle_manifest(&upload.spooled).await?;
        let version_written = manifest.version.to_string();
        let key_id = self
            .trust
            .verify_signature(SignedBundle {
                content_hash: &upload.spooled.content_hash,
                publisher: &manifest.publisher,
                name: &manifest.name,
                version: &version_written,
                signature: &upload.signature,
                key_id: upload.key_id.as_deref(),
            })
            .await?;
        let hash = upload.spooled.content_hash.to_string();
        self.refuse_existing_version(&manifest).await?;
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
            size_bytes: upload.spooled.size,
        };
        // The commit: only now are the bytes servable under their hash.
        self.blobs
            .put_blob_file(&hash, &upload.spooled.path)
            .await?;
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
                // version; they go only when nothing references them (else
                // the orphan collector removes them after its grace period).
                if let Err(cleanup) = self.blobs.delete_unreferenced_blob(&hash).await {
                    tracing::warn!(content_hash = %hash, error = %cleanup, "removing the bytes of a failed publish");
                }
                Err(err.into())
            }
        }
    }

    /// A version that exists already is refused before any bytes are
    /// committed (a concurrent publish of the same version is still refused
    /// by the store when the row is written).
    async fn refuse_existing_version(&self, manifest: &Manifest) -> Result<(), AnnexError> {
        let ManifestVersion::Exact(version) = &manifest.version else {
            return Ok(());
        };
        let slug = crate::store::slug(&manifest.publisher, &manifest.name);
        let Some(ext) = self
            .store
            .get_extension(&ExtensionSelector::Slug(slug))
            .await?
        else {
            return Ok(());
        };
        let version = version.to_string();
        if self.store.get_version(ext.id, &version).await?.is_some() {
            return Err(crate::store::StoreError::VersionExists { version }.into());
        }
        Ok(())
    }

    /// Streams the spooled bundle through the archive checks off the async
    /// runtime (every entry validated, only the manifest and the
    /// component's preamble kept) and returns its validated manifest.
    async fn read_bundle_manifest(&self, spooled: &Spooled) -> Result<Manifest, AnnexError> {
        let limits = self.unpack;
        let (path, size) = (spooled.path.to_path_buf(), spooled.size);
        tokio::task::spawn_blocking(move || -> Result<Manifest, AnnexError> {
            let file = std::fs::File::open(&path).map_err(|e| {
                tracing::error!(path = %path.display(), error = %e, "reopening a spooled upload");
                AnnexError::internal()
            })?;
            let reader = std::io::BufReader::with_capacity(256 * 1024, file);
            let inspected =
                annex_bundle::archive::inspect(reader, size, &limits, COMPONENT_PREAMBLE.len())
                    .map_err(archive_error)?;
            let manifest = inspected.manifest;
            let component = inspected.component_head.ok_or_else(|| {
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

    /// The bundle bytes (streamed from the blob store) and their version by
    /// content hash.
    pub(crate) async fn fetch_bundle(
        &self,
        content_hash: &str,
    ) -> Result<(VersionRow, BlobRead), AnnexError> {
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
        let bytes = self.blobs.get_blob(&hash).await?.ok_or_else(|| {
            tracing::error!(content_hash = %hash, store = %self.blobs.describe(), "a referenced blob is missing from the blob store");
            not_found()
        })?;
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
        if declared_hex != upload.spooled.content_hash.hex() {
            return Err(AnnexError::new(
                ErrorCode::HashMismatch,
                format!(
                    "declared hash sha256:{declared_hex} does not match the uploaded bytes ({})",
                    upload.spooled.content_hash
                ),
            ));
        }
    }
    if let Some(size) = upload.declared_size.filter(|s| *s > 0)
        && size != upload.spooled.size
    {
        return Err(AnnexError::new(
            ErrorCode::HashMismatch,
            format!(
                "declared size {size} does not match the {} bytes uploaded",
                upload.spooled.size
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
