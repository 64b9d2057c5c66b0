//! Naming a blob store: `postgres`, `fs:/path` or `s3://bucket[/prefix]`, as
//! the control plane's `--blob-store` and `migrate-blobs --from/--to` take it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::{BlobStore, FsBlobStore, S3BlobStore, S3Settings};
use crate::store::StoreResult;

/// Where bundle bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStoreSpec {
    /// `bundle_blobs` in the control plane's own database.
    Postgres,
    /// A directory.
    Fs(PathBuf),
    /// A bucket, and a key prefix (possibly empty).
    S3 { bucket: String, prefix: String },
}

impl FromStr for BlobStoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "postgres" {
            return Ok(BlobStoreSpec::Postgres);
        }
        if let Some(path) = s.strip_prefix("fs:") {
            if path.is_empty() {
                return Err("fs: needs a directory (fs:/var/lib/annex/blobs)".into());
            }
            return Ok(BlobStoreSpec::Fs(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("s3:// needs a bucket (s3://bucket or s3://bucket/prefix)".into());
            }
            return Ok(BlobStoreSpec::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        Err(format!(
            "unknown blob store {s:?}: expected postgres, fs:/path or s3://bucket[/prefix]"
        ))
    }
}

impl fmt::Display for BlobStoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobStoreSpec::Postgres => f.write_str("postgres"),
            BlobStoreSpec::Fs(path) => write!(f, "fs:{}", path.display()),
            BlobStoreSpec::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            BlobStoreSpec::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Opens the store `spec` names; `database` is the control plane's own
/// store, which holds `bundle_blobs`.
pub fn open_blob_store(
    spec: &BlobStoreSpec,
    s3: &S3Settings,
    database: Arc<dyn BlobStore>,
) -> StoreResult<Arc<dyn BlobStore>> {
    Ok(match spec {
        BlobStoreSpec::Postgres => database,
        BlobStoreSpec::Fs(path) => Arc::new(FsBlobStore::open(path)?),
        BlobStoreSpec::S3 { bucket, prefix } => Arc::new(S3BlobStore::new(bucket, prefix, s3)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_display() {
        for (text, spec) in [
            ("postgres", BlobStoreSpec::Postgres),
            ("fs:/var/blobs", BlobStoreSpec::Fs("/var/blobs".into())),
            (
                "s3://bundles",
                BlobStoreSpec::S3 {
                    bucket: "bundles".into(),
                    prefix: String::new(),
                },
            ),
            (
                "s3://bundles/annex/prod",
                BlobStoreSpec::S3 {
                    bucket: "bundles".into(),
                    prefix: "annex/prod".into(),
                },
            ),
        ] {
            assert_eq!(text.parse::<BlobStoreSpec>(), Ok(spec.clone()));
            assert_eq!(spec.to_string(), text);
        }
        for bad in ["", "fs:", "s3://", "s3:/x", "memory", "gs://b"] {
            assert!(bad.parse::<BlobStoreSpec>().is_err(), "{bad}");
        }
    }
}
