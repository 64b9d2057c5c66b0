//! Bundle bytes in an S3-compatible object store (AWS S3, MinIO, Ceph RGW,
//! …) through the `object_store` crate: `[<prefix>/]sha256/<hex>`, one object
//! per blob. A commit uploads the spooled file with a multipart upload to
//! the blob's key and completes it last, so the key names a complete object
//! or nothing; a failed upload is aborted. Parts of an upload the process
//! could not abort (it died) are not objects: a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) reclaims them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig, WriteMultipart};
use tokio::io::AsyncReadExt as _;

use super::{BlobEntry, BlobRead, BlobStore, hash_hex};
use crate::store::{StoreError, StoreResult};

/// Size of one part of a multipart upload (S3's minimum is 5 MiB); files
/// smaller than this go up in one `PUT`.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts in flight at once: a commit holds at most this many parts plus one
/// in memory.
const PARTS_IN_FLIGHT: usize = 4;

/// How to reach the bucket. Unset values come from the standard `AWS_*`
/// environment (credentials, region, endpoint), then from the instance or
/// web-identity credentials the SDKs use.
#[derive(Clone, Default)]
pub struct S3Settings {
    /// An S3-compatible endpoint (`http://minio:9000`); unset: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint (a local server in development or tests).
    pub allow_http: bool,
    /// Retries of a failed request (connection errors, 5xx), and the time
    /// after which a request is not retried again.
    pub max_retries: usize,
    pub retry_timeout: Duration,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("allow_http", &self.allow_http)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .finish_non_exhaustive()
    }
}

/// Blobs in one bucket, under an optional key prefix.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

fn s3_error(what: &str, err: object_store::Error) -> StoreError {
    StoreError::BlobStore(format!("{what}: {err}"))
}

impl S3BlobStore {
    /// A client for `bucket` (nothing is sent until the first call).
    pub fn new(bucket: &str, prefix: &str, settings: &S3Settings) -> StoreResult<S3BlobStore> {
        // HTTPS to the bucket uses the process's rustls provider (ring).
        annex_ops::tls::install_crypto_provider();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        if let Some(id) = &settings.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let retry = RetryConfig {
            max_retries: settings.max_retries,
            retry_timeout: settings.retry_timeout,
            ..RetryConfig::default()
        };
        let store = builder
            .with_allow_http(settings.allow_http)
            .with_retry(retry)
            .build()
            .map_err(|e| s3_error("configuring the S3 blob store", e))?;
        Ok(S3BlobStore {
            store: Arc::new(store),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    fn dir(&self) -> Key {
        if self.prefix.is_empty() {
            Key::from("sha256")
        } else {
            Key::from(format!("{}/sha256", self.prefix))
        }
    }

    fn key(&self, content_hash: &str) -> StoreResult<Key> {
        Ok(self.dir().join(hash_hex(content_hash)?))
    }

    async fn upload(&self, key: &Key, file: &Path) -> StoreResult<()> {
        let mut file = tokio::fs::File::open(file)
            .await
            .map_err(|e| StoreError::BlobStore(format!("opening the spooled upload: {e}")))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| StoreError::BlobStore(format!("reading the spooled upload: {e}")))?
            .len();
        let read_error =
            |e: std::io::Error| StoreError::BlobStore(format!("reading the spooled upload: {e}"));
        if size < PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await.map_err(read_error)?;
            self.store
                .put(key, PutPayload::from(bytes))
                .await
                .map_err(|e| s3_error("uploading a blob", e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| s3_error("starting a multipart upload", e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1024 * 1024];
        let outcome: StoreResult<()> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(read_error)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| s3_error("uploading a part", e))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                // Completing the upload is the commit: only now does the key exist.
                writer
                    .finish()
                    .await
                    .map_err(|e| s3_error("completing a multipart upload", e))?;
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key = %key, error = %abort, "aborting a failed multipart upload");
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn put_blob_file(&self, content_hash: &str, file: &Path) -> StoreResult<()> {
        let key = self.key(content_hash)?;
        // Content-addressed: a committed key already holds these bytes.
        if self.blob_size(content_hash).await?.is_some() {
            return Ok(());
        }
        self.upload(&key, file).await
    }

    async fn get_blob(&self, content_hash: &str) -> StoreResult<Option<BlobRead>> {
        let key = self.key(content_hash)?;
        let result = match self.store.get(&key).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(s3_error("reading a blob", e)),
        };
        let size = result.meta.size;
        let chunks = result
            .into_stream()
            .map_err(|e| s3_error("reading a blob", e));
        Ok(Some(BlobRead {
            size,
            chunks: chunks.boxed(),
        }))
    }

    async fn blob_size(&self, content_hash: &str) -> StoreResult<Option<u64>> {
        match self.store.head(&self.key(content_hash)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error("reading a blob's size", e)),
        }
    }

    async fn list_blobs(&self) -> StoreResult<Vec<BlobEntry>> {
        let dir = self.dir();
        let mut listing = self.store.list(Some(&dir));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| s3_error("listing blobs", e))?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let content_hash = format!("sha256:{name}");
            if hash_hex(&content_hash).is_err() {
                continue;
            }
            out.push(BlobEntry {
                content_hash,
                size: meta.size,
                modified: meta.last_modified,
            });
        }
        Ok(out)
    }

    async fn delete_blob(&self, content_hash: &str) -> StoreResult<bool> {
        let key = self.key(content_hash)?;
        if self.blob_size(content_hash).await?.is_none() {
            return Ok(false);
        }
        self.store
            .delete(&key)
            .await
            .map_err(|e| s3_error("deleting a blob", e))?;
        Ok(true)
    }
}
