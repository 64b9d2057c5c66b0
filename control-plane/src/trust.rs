//! The trust bundle: publisher signing keys with validity windows and
//! revocation, and the one place that turns a signature check into a verdict
//! the registry and installs act on. [`Trust`] owns nothing but its store
//! handle; it never stores bundles or decides what a verdict leads to.

use std::sync::Arc;

use annex_bundle::hash::ContentHash;
use annex_bundle::signing::PublicKey;
use annex_bundle::trust::{TrustBundle, TrustError, TrustedKey};
use annex_proto::{AnnexError, ErrorCode};
use chrono::{DateTime, Utc};

use crate::store::{KeyRow, Store, StoreError, VersionRow};

/// A key to add, as given by an operator.
#[derive(Debug, Clone)]
pub(crate) struct NewKey {
    pub(crate) publisher: String,
    pub(crate) public_key: String,
    pub(crate) key_id: Option<String>,
    pub(crate) not_before: Option<DateTime<Utc>>,
    pub(crate) not_after: Option<DateTime<Utc>>,
}

/// What a signature check needs to know about a bundle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedBundle<'a> {
    pub(crate) content_hash: &'a ContentHash,
    pub(crate) publisher: &'a str,
    pub(crate) name: &'a str,
    pub(crate) version: &'a str,
    pub(crate) signature: &'a str,
    pub(crate) key_id: Option<&'a str>,
}

/// Publisher keys and signature verdicts.
pub(crate) struct Trust {
    store: Arc<dyn Store>,
}

impl Trust {
    pub(crate) fn new(store: Arc<dyn Store>) -> Trust {
        Trust { store }
    }

    pub(crate) async fn add_key(&self, new: NewKey) -> Result<KeyRow, AnnexError> {
        let publisher = annex_proto::domain::required("publisher", &new.publisher)?.to_owned();
        let key = PublicKey::parse(&new.public_key)
            .map_err(|e| AnnexError::invalid(format!("public_key: {e}")))?;
        let key_id = match new.key_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => key.key_id(),
        };
        if let (Some(nb), Some(na)) = (new.not_before, new.not_after)
            && na <= nb
        {
            return Err(AnnexError::invalid(
                "not_after must be later than not_before",
            ));
        }
        let now = Utc::now();
        let row = KeyRow {
            key_id,
            publisher,
            public_key: key.as_bytes().to_vec(),
            not_before: new.not_before.unwrap_or(now),
            not_after: new.not_after,
            revoked_at: None,
            created_at: now,
        };
        match self.store.add_key(row).await {
            Ok(row) => {
                tracing::info!(key_id = %row.key_id, publisher = %row.publisher, "publisher key added");
                Ok(row)
            }
            Err(StoreError::AlreadyExists(_)) => Err(AnnexError::new(
                ErrorCode::KeyAlreadyExists,
                "a publisher key with this key id already exists",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The keys of one publisher (or all) and the trust bundle's revision.
    pub(crate) async fn list_keys(
        &self,
        publisher: Option<&str>,
    ) -> Result<(Vec<KeyRow>, u64), AnnexError> {
        Ok(self.store.list_keys(publisher).await?)
    }

    pub(crate) async fn revoke_key(&self, key_id: &str) -> Result<KeyRow, AnnexError> {
        let key_id = annex_proto::domain::required("key_id", key_id)?;
        match self.store.revoke_key(key_id).await {
            Ok(row) => {
                tracing::info!(key_id = %row.key_id, publisher = %row.publisher, "publisher key revoked");
                Ok(row)
            }
            Err(StoreError::NotFound(_)) => Err(AnnexError::new(
                ErrorCode::KeyNotFound,
                format!("no publisher key {key_id}"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a bundle's signature against the publisher's keys as they stand
    /// now; returns the key id that verified.
    pub(crate) async fn verify_signature(
        &self,
        bundle: SignedBundle<'_>,
    ) -> Result<String, AnnexError> {
        let (keys, _) = self.store.list_keys(Some(bundle.publisher)).await?;
        let trust = TrustBundle {
            keys: keys.iter().filter_map(trusted_key).collect(),
        };
        trust
            .verify(
                bundle.content_hash,
                bundle.publisher,
                bundle.name,
                bundle.version,
                bundle.signature,
                bundle.key_id,
                Utc::now().timestamp_millis(),
            )
            .map_err(trust_error)
    }

    /// Re-checks a stored version's signature (at install and upgrade).
    pub(crate) async fn verify_version(&self, version: &VersionRow) -> Result<String, AnnexError> {
        let hash: ContentHash = version
            .bundle
            .content_hash
            .parse()
            .map_err(|_| AnnexError::internal())?;
        self.verify_signature(SignedBundle {
            content_hash: &hash,
            publisher: &version.publisher,
            name: &version.name,
            version: &version.manifest_version,
            signature: &version.bundle.signature,
            key_id: Some(version.bundle.signing_key_id.as_str()).filter(|k| !k.is_empty()),
        })
        .await
    }
}

fn trusted_key(row: &KeyRow) -> Option<TrustedKey> {
    let raw: &[u8; 32] = row.public_key.as_slice().try_into().ok()?;
    let public_key = PublicKey::from_bytes(raw).ok()?;
    Some(TrustedKey {
        key_id: row.key_id.clone(),
        publisher: row.publisher.clone(),
        public_key,
        not_before_ms: row.not_before.timestamp_millis(),
        not_after_ms: row.not_after.map(|t| t.timestamp_millis()),
        revoked: row.revoked_at.is_some(),
    })
}

fn trust_error(err: TrustError) -> AnnexError {
    match err {
        TrustError::SignatureMissing => AnnexError::new(
            ErrorCode::SignatureMissing,
            "the bundle is not signed; sign it with `annex sign`",
        ),
        TrustError::UntrustedPublisher => AnnexError::new(
            ErrorCode::UntrustedPublisher,
            "no trusted signing key for this publisher; add one with `annex trust add`",
        ),
        TrustError::SignatureInvalid => AnnexError::new(
            ErrorCode::SignatureInvalid,
            "the signature does not verify for this bundle, publisher, name and version",
        ),
        TrustError::KeyRevoked { key_id } => AnnexError::new(
            ErrorCode::KeyRevoked,
            format!("the bundle is signed by revoked key {key_id}"),
        ),
        TrustError::KeyExpired { key_id } => AnnexError::new(
            ErrorCode::KeyExpired,
            format!("the bundle is signed by key {key_id}, which is outside its validity window"),
        ),
    }
}
