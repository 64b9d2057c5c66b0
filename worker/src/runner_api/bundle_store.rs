//! Bundles from Alga's bundle store (docs/design/alga-compatibility.md,
//! "Bundles and signing"): `GET {base}/tenants/{tenant}/extensions/
//! {extension}/sha256/{hex}/bundle.tar.zst` over HTTP(S), hashed while it
//! streams in and refused on a mismatch before anything else looks at it
//! (`archive hash mismatch: expected X, got Y`). When trust keys are
//! configured, the signature comes from `bundle.tar.zst.sig` next to the
//! archive (the JSON `annex sign` writes) and the loader verifies it.
//!
//! This module only fetches: the loader verifies and the compiled cache
//! (keyed by content hash) keeps the result, so a cached hash is never
//! downloaded again. No presigned S3 requests; no disk staging (the archive
//! is held in memory, at most 200 MiB).

use std::sync::Arc;
use std::time::Duration;

use annex_bundle::{ContentHash, ContentHasher};
use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

use crate::bundles::{BundleError, BundleSource, FetchedBundle, SignatureRecord};

/// Alga's runner gives a bundle download 60 s.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// `/healthz` probes the store with a 1 s HEAD, as Alga's runner does.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Alga's bundle store.
pub(crate) struct BundleStore {
    base: url::Url,
    client: reqwest::Client,
    max_bytes: u64,
    /// Archive downloads started (whatever their verdict).
    downloads: Counter,
}

impl BundleStore {
    pub(crate) fn new(base: url::Url, client: reqwest::Client, downloads: Counter) -> BundleStore {
        BundleStore {
            base,
            client,
            max_bytes: annex_bundle::Limits::default().max_archive_bytes,
            downloads,
        }
    }

    /// The object URL of a bundle. Tenant and extension are single path
    /// segments (percent-encoded; `.` and `..` refused).
    fn object_url(
        &self,
        tenant: &str,
        extension: &str,
        hash: &ContentHash,
    ) -> Result<url::Url, BundleError> {
        for (what, segment) in [("tenant", tenant), ("extension", extension)] {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(BundleError::Fetch(format!("invalid {what} {segment:?}")));
            }
        }
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| BundleError::Fetch("the bundle store URL has no path".into()))?;
            path.pop_if_empty().extend([
                "tenants",
                tenant,
                "extensions",
                extension,
                "sha256",
                hash.hex(),
                "bundle.tar.zst",
            ]);
        }
        Ok(url)
    }

    /// Downloads an archive, hashing it as it streams in.
    async fn download(&self, url: &url::Url, hash: &ContentHash) -> Result<Vec<u8>, BundleError> {
        self.downloads.inc();
        let fetch = |e: reqwest::Error| BundleError::Fetch(format!("{url}: {e}"));
        let mut response = self
            .client
            .get(url.clone())
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(fetch)?;
        match response.status().as_u16() {
            200..=299 => {}
            404 => return Err(BundleError::NotFound(hash.to_string())),
            status => return Err(BundleError::Fetch(format!("{url}: HTTP {status}"))),
        }
        let mut bytes = Vec::new();
        let mut hasher = ContentHasher::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch)? {
            if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(BundleError::Fetch("bundle exceeds the size limit".into()));
            }
            hasher.update(&chunk);
            bytes.extend_from_slice(&chunk);
        }
        let actual = hasher.finish();
        if actual != *hash {
            return Err(BundleError::HashMismatch {
                expected: hash.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// The signature record next to the archive (`.sig`).
    async fn signature(
        &self,
        archive: &url::Url,
        hash: &ContentHash,
    ) -> Result<SignatureRecord, BundleError> {
        let mut url = archive.clone();
        url.set_path(&format!("{}.sig", archive.path()));
        let fetch = |e: reqwest::Error| BundleError::Fetch(format!("{url}: {e}"));
        let response = self
            .client
            .get(url.clone())
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(fetch)?;
        match response.status().as_u16() {
            200..=299 => {}
            404 => return Err(annex_bundle::TrustError::SignatureMissing.into()),
            status => return Err(BundleError::Fetch(format!("{url}: HTTP {status}"))),
        }
        let text = response.bytes().await.map_err(fetch)?;
        signature_record(&text, hash)
    }

    /// `/healthz`'s view of the store: a HEAD of the base within 1 s; a
    /// non-2xx only marks it degraded.
    pub(crate) async fn probe(&self) -> &'static str {
        let sent = self
            .client
            .head(self.base.clone())
            .timeout(PROBE_TIMEOUT)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => "ok",
            _ => "bundle_store_unreachable",
        }
    }
}

/// The `.sig` file `annex sign` writes, as far as verification needs it.
#[derive(Deserialize)]
struct SignatureFile {
    signature: String,
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    content_hash: Option<String>,
    publisher: Option<String>,
    name: Option<String>,
    version: Option<String>,
}

/// Reads a `.sig` file for `hash`: the identity it binds must be written
/// out, and a content hash in it must be this bundle's.
fn signature_record(text: &[u8], hash: &ContentHash) -> Result<SignatureRecord, BundleError> {
    let file: SignatureFile = serde_json::from_slice(text)
        .map_err(|e| BundleError::Fetch(format!("signature file: {e}")))?;
    if let Some(signed) = &file.content_hash
        && crate::bundles::parse_hash(signed).ok().as_ref() != Some(hash)
    {
        return Err(BundleError::Fetch(format!(
            "signature file is for {signed}, not {hash}"
        )));
    }
    let (Some(publisher), Some(name), Some(version)) = (file.publisher, file.name, file.version)
    else {
        return Err(BundleError::Fetch(
            "signature file lacks publisher, name or version (write it with `annex sign`)".into(),
        ));
    };
    Ok(SignatureRecord {
        publisher,
        name,
        version,
        signature: file.signature,
        key_id: file.key_id,
    })
}

/// One bundle's object in the store, as the loader's bundle source:
/// `signed` when trust keys are configured (the `.sig` is then required).
pub(crate) struct StoreObject {
    pub(crate) store: Arc<BundleStore>,
    pub(crate) tenant: String,
    pub(crate) extension: String,
    pub(crate) signed: bool,
}

#[async_trait]
impl BundleSource for StoreObject {
    async fn fetch(&self, hash: &ContentHash) -> Result<FetchedBundle, BundleError> {
        let url = self.store.object_url(&self.tenant, &self.extension, hash)?;
        let bytes = self.store.download(&url, hash).await?;
        let signature = if self.signed {
            self.store.signature(&url, hash).await?
        } else {
            unsigned()
        };
        Ok(FetchedBundle { bytes, signature })
    }
}

/// The record of a bundle loaded without trust keys: it verifies under no
/// keys, so a caller that requires a signature re-fetches the bundle.
fn unsigned() -> SignatureRecord {
    SignatureRecord {
        publisher: String::new(),
        name: String::new(),
        version: String::new(),
        signature: String::new(),
        key_id: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(base: &str) -> BundleStore {
        // The workspace's reqwest brings no crypto provider of its own.
        annex_ops::tls::install_crypto_provider();
        BundleStore::new(
            url::Url::parse(base).expect("url"),
            reqwest::Client::new(),
            Counter::default(),
        )
    }

    #[test]
    fn objects_follow_algas_layout_under_the_base() {
        let hash = ContentHash::of(b"x");
        let url = store("http://minio:9000/alga-ext/")
            .object_url("t 1", "e/1", &hash)
            .expect("url");
        assert_eq!(
            url.as_str(),
            format!(
                "http://minio:9000/alga-ext/tenants/t%201/extensions/e%2F1/sha256/{}/bundle.tar.zst",
                hash.hex()
            )
        );
        let bare = store("http://minio:9000")
            .object_url("t", "e", &hash)
            .expect("url");
        assert!(bare.as_str().starts_with("http://minio:9000/tenants/t/"));
        assert!(store("http://m/").object_url("..", "e", &hash).is_err());
    }

    #[test]
    fn signature_files_must_name_the_bundle_and_its_identity() {
        let hash = ContentHash::of(b"x");
        let full = format!(
            r#"{{"signature":"c2ln","key_id":"k","content_hash":"{hash}","publisher":"p","name":"n","version":"1.0.0"}}"#
        );
        let record = signature_record(full.as_bytes(), &hash).expect("valid");
        assert_eq!(
            (record.publisher.as_str(), record.name.as_str()),
            ("p", "n")
        );
        let other = ContentHash::of(b"y");
        assert!(signature_record(full.as_bytes(), &other).is_err());
        assert!(signature_record(br#"{"signature":"c2ln"}"#, &hash).is_err());
    }
}
