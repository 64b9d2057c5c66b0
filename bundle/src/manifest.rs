//! Manifest v2: parsing, validation and normalisation on the publish path
//! (docs/design/alga-compatibility.md, "Manifest").
//!
//! This module owns the rules a `manifest.json` must satisfy before a version is registered, and
//! the normalised [`Manifest`] every other crate works on. It mirrors Alga's lenient publish-path
//! validator (`validateManifestShape` + `extractEndpoints`), including its issue paths and
//! messages, so authors see the same `{path, message}` list. It reports every issue at once rather
//! than the first. The public types live here; the field-by-field checks are in
//! `manifest_check.rs` (and its `ui`/`api` part in `manifest_check_ui_api.rs`). It must not decide
//! what a capability grants (see [`crate::capability`]), resolve wildcard versions against a
//! registry by itself (the caller supplies existing versions) or read files.
//!
//! Deliberate differences from Alga, each stricter:
//! - `publisher` is required: Annex signatures bind it, and the registry row needs it anyway.
//! - HTTP methods are matched ASCII-case-insensitively (JavaScript's Unicode `toUpperCase` would
//!   let `optıons`, with a dotless i, through as `OPTIONS`).
//! - A wildcard `01.2.*` is read as numbers and resolves under `1.2.`.
//! - Every capability name must be known ([`Capability`](crate::capability::Capability)): Alga
//!   accepts any string and drops the unknown ones at install, so a typo silently withholds a
//!   capability.
//!
//! Annex's addition: `runtime` also chooses the component's [`World`] (`manifest_world.rs`); a
//! `wasi:http/proxy` extension declares `"runtime": "wasi-http@0.2"` and may ask only for the
//! capabilities that world can use.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use serde_json::{Map, Value};

#[path = "manifest_check.rs"]
mod check;
#[path = "manifest_world.rs"]
mod world;

use check::Check;
pub use world::{UnsupportedRuntime, WASI_HTTP_RUNTIMES, World};

/// Top-level keys the publish path accepts; anything else is an issue.
pub(crate) const TOP_LEVEL_FIELDS: [&str; 9] = [
    "name",
    "publisher",
    "version",
    "runtime",
    "capabilities",
    "ui",
    "api",
    "assets",
    "precompiled",
];

/// HTTP methods an endpoint may declare (stored upper-case).
pub(crate) const HTTP_METHODS: [&str; 7] =
    ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"];

/// One validation problem. `path` is JSONPath-like (`api.endpoints[0].method`, `$` for the root),
/// as in Alga's `INVALID_MANIFEST` response `details.issues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not JSON (including invalid UTF-8).
    #[error("manifest is not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("Manifest must be a JSON object.")]
    NotAnObject,
    /// Every rule violation found, in a stable order.
    #[error("invalid manifest: {}", join_issues(.0))]
    Invalid(Vec<Issue>),
}

impl ManifestError {
    /// All problems as `{path, message}` pairs; the two structural errors become one issue at `$`.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            ManifestError::InvalidJson(message) => vec![issue("$", message.clone())],
            ManifestError::NotAnObject => vec![issue("$", self.to_string())],
            ManifestError::Invalid(issues) => issues.clone(),
        }
    }
}

fn join_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(Issue::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn issue(path: impl Into<String>, message: impl Into<String>) -> Issue {
    Issue {
        path: path.into(),
        message: message.into(),
    }
}

/// The `version` field: an exact semver-like string, or `X.Y.*` resolved at publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    Exact(String),
    Wildcard { major: u64, minor: u64 },
}

impl VersionSpec {
    /// The version to register. A wildcard becomes `X.Y.(highest stable patch among `existing`
    /// under `X.Y.`, plus one)`, or `X.Y.0` when there is none. Pre-release and build-tagged
    /// versions (`1.2.4-beta`, `1.2.4+b1`) are ignored, as in Alga. An exact version is returned
    /// unchanged.
    pub fn resolve<S: AsRef<str>>(&self, existing: &[S]) -> String {
        let (major, minor) = match self {
            VersionSpec::Exact(v) => return v.clone(),
            VersionSpec::Wildcard { major, minor } => (*major, *minor),
        };
        let prefix = format!("{major}.{minor}.");
        let max_patch = existing
            .iter()
            .filter_map(|v| v.as_ref().strip_prefix(&prefix))
            .filter(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|patch| patch.parse::<u64>().ok())
            .max();
        let next = max_patch.map_or(0, |p| p.saturating_add(1));
        format!("{prefix}{next}")
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSpec::Exact(v) => f.write_str(v),
            VersionSpec::Wildcard { major, minor } => write!(f, "{major}.{minor}.*"),
        }
    }
}

impl Serialize for VersionSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The iframe UI. Only the two hooks Alga persists are kept; labels are trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UiSpec {
    /// Normalised (`./` prefix removed, `//` collapsed), e.g. `ui/index.html`.
    pub entry: String,
    pub app_menu_label: Option<String>,
    pub client_portal_menu_label: Option<String>,
}

impl UiSpec {
    /// The shape Alga stores in `extension_version.ui`: `{type:"iframe", entry, hooks?}`.
    pub fn to_alga_json(&self) -> Value {
        let mut hooks = Map::new();
        if let Some(label) = &self.app_menu_label {
            hooks.insert("appMenu".into(), serde_json::json!({ "label": label }));
        }
        if let Some(label) = &self.client_portal_menu_label {
            hooks.insert(
                "clientPortalMenu".into(),
                serde_json::json!({ "label": label }),
            );
        }
        let mut ui = serde_json::json!({ "type": "iframe", "entry": self.entry });
        if !hooks.is_empty() {
            ui["hooks"] = Value::Object(hooks);
        }
        ui
    }
}

/// One `api.endpoints` entry, normalised: method upper-case, path starting with `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    pub method: String,
    pub path: String,
    pub handler: String,
}

/// A validated, normalised manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub name: String,
    pub publisher: String,
    pub version: VersionSpec,
    pub runtime: String,
    /// The world `runtime` chooses ([`World::Alga`] unless it names `wasi-http`).
    pub world: World,
    /// As declared (not normalised), every name a known
    /// [`Capability`](crate::capability::Capability); see
    /// [`crate::capability::granted`].
    pub capabilities: Vec<String>,
    pub ui: Option<UiSpec>,
    /// The authorisation allowlist for `/api/ext` (empty when `api` is absent).
    pub endpoints: Vec<Endpoint>,
    pub assets: Vec<String>,
    pub precompiled: BTreeMap<String, String>,
}

impl Manifest {
    /// Parses and validates `manifest.json` bytes, reporting every issue found.
    pub fn parse(json: &[u8]) -> Result<Manifest, ManifestError> {
        let value: Value =
            serde_json::from_slice(json).map_err(|e| ManifestError::InvalidJson(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(ManifestError::NotAnObject);
        };
        let mut check = Check::default();
        let manifest = check.manifest(&obj);
        match manifest {
            Some(manifest) if check.issues.is_empty() => Ok(manifest),
            _ => Err(ManifestError::Invalid(check.issues)),
        }
    }

    /// `extension_version.main_entry`: the UI entry, else `main`.
    pub fn main_entry(&self) -> &str {
        self.ui.as_ref().map_or("main", |ui| ui.entry.as_str())
    }

    /// The exact version, or `None` for a wildcard that still needs [`VersionSpec::resolve`].
    pub fn version_string(&self) -> Option<&str> {
        match &self.version {
            VersionSpec::Exact(v) => Some(v),
            VersionSpec::Wildcard { .. } => None,
        }
    }
}

/// JavaScript's `String.prototype.trim` also strips U+FEFF, which Rust's `trim` keeps.
fn js_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// `Some(s)` for a string that is non-empty after trimming (the string itself is not trimmed).
fn non_empty_str(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) if !js_trim(s).is_empty() => Some(s),
        _ => None,
    }
}

/// Alga's `sanitizePath`: drop leading `./` (repeatedly) and collapse runs of `/`. `..` is left
/// alone (validation rejects it before this runs).
pub(crate) fn sanitize_path(p: &str) -> String {
    let mut rest = p;
    while let Some(stripped) = rest.strip_prefix("./") {
        rest = stripped;
    }
    let mut out = String::with_capacity(rest.len());
    for c in rest.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

fn ensure_leading_slash(p: String) -> String {
    if p.is_empty() || p.starts_with('/') {
        p
    } else {
        format!("/{p}")
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
