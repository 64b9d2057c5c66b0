//! `annex.v1.Registry`: streamed publish and deprecation (operator role);
//! reads and streamed bundle fetch (every role).

use std::pin::Pin;
use std::sync::Arc;

use annex_ops::Role;
use annex_ops::tls::require;
use annex_proto::pb::{self, registry_server::Registry};
use annex_proto::{AnnexError, ErrorCode};
use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::ts;
use crate::blobs::spool::SpoolWriter;
use crate::registry::Upload;
use crate::store::{ExtensionRow, VersionRow};

/// Size of the chunks a bundle is streamed back in.
const FETCH_CHUNK: usize = 256 * 1024;

pub(crate) struct RegistryService {
    pub(crate) registry: Arc<crate::registry::Registry>,
    /// Where uploads are spooled while they stream in.
    pub(crate) spool_dir: std::path::PathBuf,
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchBundleResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn publish(
        &self,
        req: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        require(&req, &[Role::Operator])?;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::PublishRequest {
                part: Some(pb::publish_request::Part::Header(h)),
            }) => h,
            _ => {
                return Err(
                    AnnexError::invalid("the first publish message must be the header").into(),
                );
            }
        };
        let max = self.registry.max_bundle_bytes();
        if header.declared_size > max {
            return Err(too_large(max).into());
        }
        // Each chunk is hashed and written to the spool as it arrives; an
        // upload cut off midway drops the spool file with it.
        let mut spool = SpoolWriter::create(&self.spool_dir)?;
        while let Some(msg) = stream.message().await? {
            match msg.part {
                Some(pb::publish_request::Part::Chunk(chunk)) => {
                    if spool.size() + chunk.len() as u64 > max {
                        return Err(too_large(max).into());
                    }
                    spool.write(&chunk).await?;
                }
                _ => {
                    return Err(AnnexError::invalid("only one publish header is allowed").into());
                }
            }
        }
        if spool.size() == 0 {
            return Err(AnnexError::new(ErrorCode::InvalidBundle, "the bundle is empty").into());
        }
        let upload = Upload {
            spooled: spool.finish().await?,
            signature: header.signature,
            key_id: Some(header.key_id).filter(|k| !k.trim().is_empty()),
            declared_hash: Some(header.declared_hash).filter(|h| !h.is_empty()),
            declared_size: Some(header.declared_size).filter(|s| *s > 0),
        };
        let (ext, version) = self.registry.publish(upload).await?;
        Ok(Response::new(pb::PublishResponse {
            extension: Some(extension_pb(&ext)),
            version: Some(version_pb(&version)),
        }))
    }

    async fn list_extensions(
        &self,
        _req: Request<pb::ListExtensionsRequest>,
    ) -> Result<Response<pb::ListExtensionsResponse>, Status> {
        let rows = self.registry.list_extensions().await?;
        Ok(Response::new(pb::ListExtensionsResponse {
            extensions: rows.iter().map(extension_pb).collect(),
        }))
    }

    async fn get_extension(
        &self,
        req: Request<pb::GetExtensionRequest>,
    ) -> Result<Response<pb::Extension>, Status> {
        let ext = self
            .registry
            .find_extension(&req.into_inner().extension)
            .await?;
        Ok(Response::new(extension_pb(&ext)))
    }

    async fn list_versions(
        &self,
        req: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let versions = self
            .registry
            .list_versions(&req.into_inner().extension)
            .await?;
        Ok(Response::new(pb::ListVersionsResponse {
            versions: versions.iter().map(version_pb).collect(),
        }))
    }

    async fn get_version(
        &self,
        req: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::Version>, Status> {
        let r = req.into_inner();
        let v = self.registry.find_version(&r.extension, &r.version).await?;
        Ok(Response::new(version_pb(&v)))
    }

    async fn deprecate(
        &self,
        req: Request<pb::DeprecateRequest>,
    ) -> Result<Response<pb::Version>, Status> {
        require(&req, &[Role::Operator])?;
        let r = req.into_inner();
        let v = self
            .registry
            .deprecate(&r.extension, &r.version, &r.reason)
            .await?;
        Ok(Response::new(version_pb(&v)))
    }

    type FetchBundleStream = FetchStream;

    async fn fetch_bundle(
        &self,
        req: Request<pb::FetchBundleRequest>,
    ) -> Result<Response<FetchStream>, Status> {
        let (version, blob) = self
            .registry
            .fetch_bundle(&req.into_inner().content_hash)
            .await?;
        let info = pb::BundleInfo {
            content_hash: version.bundle.content_hash.clone(),
            size_bytes: blob.size,
            publisher: version.publisher.clone(),
            name: version.name.clone(),
            version: version.manifest_version.clone(),
            signature: version.bundle.signature.clone(),
            signing_key_id: version.bundle.signing_key_id.clone(),
        };
        // Chunks are relayed from the blob store as they are read, at most
        // FETCH_CHUNK bytes per message; a store failure midway ends the
        // stream with an error (the receiver verifies the hash anyway).
        let mut chunks = blob.chunks;
        let stream = async_stream::stream! {
            yield Ok(pb::FetchBundleResponse { part: Some(pb::fetch_bundle_response::Part::Info(info)) });
            while let Some(chunk) = chunks.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        yield Err(Status::from(AnnexError::from(e)));
                        return;
                    }
                };
                for piece in chunk.chunks(FETCH_CHUNK) {
                    yield Ok(pb::FetchBundleResponse {
                        part: Some(pb::fetch_bundle_response::Part::Chunk(piece.to_vec())),
                    });
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}

fn too_large(max: u64) -> AnnexError {
    AnnexError::new(
        ErrorCode::BundleTooLarge,
        format!("bundles are limited to {max} bytes"),
    )
}

pub(crate) fn extension_pb(ext: &ExtensionRow) -> pb::Extension {
    pb::Extension {
        id: ext.id.to_string(),
        publisher: ext.publisher.clone(),
        name: ext.name.clone(),
        slug: ext.slug(),
        created_at: ts(ext.created_at),
    }
}

pub(crate) fn endpoint_pb(e: &crate::store::EndpointRow) -> pb::Endpoint {
    pb::Endpoint {
        method: e.method.clone(),
        path: e.path.clone(),
        handler: e.handler.clone(),
    }
}

pub(crate) fn ui_pb(ui: &crate::store::UiRow) -> pb::Ui {
    pb::Ui {
        entry: ui.entry.clone(),
        hooks: Some(pb::UiHooks {
            app_menu_label: ui.app_menu_label.clone(),
            client_portal_menu_label: ui.client_portal_menu_label.clone(),
        }),
    }
}

pub(crate) fn version_pb(v: &VersionRow) -> pb::Version {
    pb::Version {
        id: v.id.to_string(),
        registry_id: v.registry_id.to_string(),
        version: v.version.clone(),
        runtime: v.runtime.clone(),
        main_entry: v.main_entry.clone(),
        endpoints: v.endpoints.iter().map(endpoint_pb).collect(),
        ui: v.ui.as_ref().map(ui_pb),
        capabilities: v.capabilities.clone(),
        content_hash: v.bundle.content_hash.clone(),
        size_bytes: v.bundle.size_bytes,
        signature: v.bundle.signature.clone(),
        signing_key_id: v.bundle.signing_key_id.clone(),
        deprecated: v.deprecated,
        deprecation_reason: v.deprecation_reason.clone().unwrap_or_default(),
        created_at: ts(v.created_at),
        publisher: v.publisher.clone(),
        name: v.name.clone(),
    }
}
