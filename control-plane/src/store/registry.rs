//! The registry area: extensions (`extension_registry`), their immutable
//! versions (`extension_version`) and each version's current bundle
//! (`extension_bundle`), as [`RegistryStore`] and the rows it reads and writes.
//!
//! The store keeps what must hold under concurrency (one winner per version,
//! distinct wildcard patches); validating a manifest and its signature is the
//! `registry` module's job before it calls in. Bundle bytes are the
//! [`BlobStore`](super::BlobStore)'s.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;

/// An `extension_registry` row: one per (publisher, name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRow {
    pub id: Uuid,
    pub publisher: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl ExtensionRow {
    /// `lower(publisher + "." + name)`, the slug Alga accepts in URLs.
    pub fn slug(&self) -> String {
        slug(&self.publisher, &self.name)
    }
}

/// `lower(publisher + "." + name)`.
pub(crate) fn slug(publisher: &str, name: &str) -> String {
    format!("{publisher}.{name}").to_lowercase()
}

/// A declared endpoint, normalised as at publish.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointRow {
    pub method: String,
    pub path: String,
    pub handler: String,
}

/// The stored `ui` of a version: `{type:'iframe', entry, hooks?}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct UiRow {
    pub entry: String,
    pub app_menu_label: Option<String>,
    pub client_portal_menu_label: Option<String>,
}

/// An `extension_version` row joined with its current bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub id: Uuid,
    pub registry_id: Uuid,
    pub publisher: String,
    pub name: String,
    pub version: String,
    /// The manifest's `version` field as written and signed: equal to
    /// `version`, or the `X.Y.*` pattern a wildcard publish resolved.
    /// (Column `extension_version.manifest_version`.)
    pub manifest_version: String,
    pub runtime: String,
    pub main_entry: String,
    pub endpoints: Vec<EndpointRow>,
    pub ui: Option<UiRow>,
    pub capabilities: Vec<String>,
    pub deprecated: bool,
    pub deprecation_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub bundle: BundleRow,
}

/// An `extension_bundle` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRow {
    pub id: Uuid,
    pub version_id: Uuid,
    /// `sha256:<hex>`.
    pub content_hash: String,
    /// Standard base64 Ed25519 signature over the Annex signing statement.
    pub signature: String,
    pub signing_key_id: String,
    pub size_bytes: u64,
    pub created_at: DateTime<Utc>,
}

/// Everything a publish writes, already validated (manifest parsed from the
/// bundle, signature verified). `version` may be a wildcard `X.Y.*`, which the
/// store resolves inside the publishing transaction to `X.Y.(max stable patch + 1)`
/// (starting at `.0`; pre-releases ignored).
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub publisher: String,
    pub name: String,
    pub version: VersionSpec,
    pub runtime: String,
    pub main_entry: String,
    pub endpoints: Vec<EndpointRow>,
    pub ui: Option<UiRow>,
    pub capabilities: Vec<String>,
    pub content_hash: String,
    pub signature: String,
    pub signing_key_id: String,
    pub size_bytes: u64,
}

/// A version as the manifest states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    Exact(String),
    /// `major.minor.*`.
    Wildcard {
        major: u64,
        minor: u64,
    },
}

impl VersionSpec {
    /// The manifest's `version` as written (stored as `manifest_version`).
    pub(crate) fn as_written(&self) -> String {
        match self {
            VersionSpec::Exact(v) => v.clone(),
            VersionSpec::Wildcard { major, minor } => format!("{major}.{minor}.*"),
        }
    }
}

/// Resolves `major.minor.*` against the versions an extension already has:
/// `major.minor.(highest stable patch + 1)`, or `major.minor.0` when there is
/// none. Pre-releases (`1.2.4-beta`) are ignored; build metadata (`1.2.3+b1`)
/// counts as stable. Both stores call this inside their publishing critical
/// section, so concurrent wildcard publishes get distinct patches.
pub(crate) fn resolve_wildcard<'a>(
    major: u64,
    minor: u64,
    existing: impl IntoIterator<Item = &'a str>,
) -> String {
    let next = existing
        .into_iter()
        .filter_map(|v| stable_patch(v, major, minor))
        .max()
        .map_or(0, |patch| patch.saturating_add(1));
    format!("{major}.{minor}.{next}")
}

/// The patch of `version` when it is a stable `major.minor.patch[+build]`.
fn stable_patch(version: &str, major: u64, minor: u64) -> Option<u64> {
    let core = version
        .split_once('+')
        .map_or(version, |(core, _build)| core);
    let mut parts = core.split('.');
    let numeric = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (ma, mi, pa) = (
        numeric(parts.next()?)?,
        numeric(parts.next()?)?,
        numeric(parts.next()?)?,
    );
    (parts.next().is_none() && ma == major && mi == minor).then_some(pa)
}

/// How a request names an extension: an install id, a registry id (both UUIDs)
/// or a slug. A UUID is tried as an install id first, then as a registry id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionSelector {
    Id(Uuid),
    Slug(String),
}

impl ExtensionSelector {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        Some(match Uuid::parse_str(s) {
            Ok(id) => ExtensionSelector::Id(id),
            Err(_) => ExtensionSelector::Slug(s.to_lowercase()),
        })
    }
}

/// Extensions, versions and their bundles.
#[async_trait]
pub trait RegistryStore: Send + Sync {
    /// Writes registry (get-or-create by publisher+name), version, bundle and
    /// endpoint rows in one transaction. Exactly one of several concurrent
    /// publishes of one (extension, version) succeeds; the others get
    /// [`StoreError::VersionExists`](super::StoreError::VersionExists).
    async fn publish_version(&self, new: NewVersion) -> StoreResult<(ExtensionRow, VersionRow)>;
    /// Ordered by publisher, name.
    async fn list_extensions(&self) -> StoreResult<Vec<ExtensionRow>>;
    /// By registry id or slug (a UUID here is a registry id only).
    async fn get_extension(
        &self,
        selector: &ExtensionSelector,
    ) -> StoreResult<Option<ExtensionRow>>;
    /// Newest first (by created_at, then version id).
    async fn list_versions(&self, registry_id: Uuid) -> StoreResult<Vec<VersionRow>>;
    async fn get_version(
        &self,
        registry_id: Uuid,
        version: &str,
    ) -> StoreResult<Option<VersionRow>>;
    async fn get_version_by_id(&self, version_id: Uuid) -> StoreResult<Option<VersionRow>>;
    /// Marks a version deprecated; NotFound when absent.
    async fn deprecate_version(
        &self,
        registry_id: Uuid,
        version: &str,
        reason: &str,
    ) -> StoreResult<VersionRow>;
    /// The version that owns the newest bundle with this content hash.
    async fn version_by_content_hash(&self, content_hash: &str) -> StoreResult<Option<VersionRow>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_takes_the_next_stable_patch() {
        let check = |existing: &[&str], expected: &str| {
            assert_eq!(
                resolve_wildcard(1, 2, existing.iter().copied()),
                expected,
                "{existing:?}"
            );
        };
        check(&[], "1.2.0");
        check(&["1.2.0", "1.2.3", "1.2.4-beta"], "1.2.4");
        check(&["1.2.3+build.7"], "1.2.4");
        check(
            &["1.3.9", "2.2.5", "1.2", "1.2.x", "1.2.3.4", "v1.2.7"],
            "1.2.0",
        );
        check(&["1.2.9", "1.2.10"], "1.2.11");
    }
}
