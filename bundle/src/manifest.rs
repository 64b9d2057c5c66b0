//! Manifest v2: parsing, validation and normalisation on the publish path
//! (docs/design/alga-compatibility.md, "Manifest").
//!
//! This module owns the rules a `manifest.json` must satisfy before a version is registered, and
//! the normalised [`Manifest`] every other crate works on. It mirrors Alga's lenient publish-path
//! validator (`validateManifestShape` + `extractEndpoints`), including its issue paths and
//! messages, so authors see the same `{path, message}` list. It reports every issue at once rather
//! than the first. It must not decide what a capability grants (see [`crate::capability`]),
//! resolve wildcard versions against a registry by itself (the caller supplies existing versions)
//! or read files.
//!
//! Deliberate differences from Alga, each stricter:
//! - `publisher` is required: Annex signatures bind it, and the registry row needs it anyway.
//! - HTTP methods are matched ASCII-case-insensitively (JavaScript's Unicode `toUpperCase` would
//!   let `optıons`, with a dotless i, through as `OPTIONS`).
//! - A wildcard `01.2.*` is read as numbers and resolves under `1.2.`.
//! - Every capability name must be known ([`Capability`]): Alga accepts any string and drops the
//!   unknown ones at install, so a typo silently withholds a capability.
//!
//! Annex's addition: `runtime` also chooses the component's [`World`] (`manifest_world.rs`); a
//! `wasi:http/proxy` extension declares `"runtime": "wasi-http@0.2"` and may ask only for the
//! capabilities that world can use.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::capability::Capability;
use serde_json::{Map, Value};

#[path = "manifest_world.rs"]
mod world;

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
    /// As declared (not normalised), every name a known [`Capability`]; see
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

/// Collects issues while building the normalised manifest. Field checks run in Alga's order.
#[derive(Default)]
struct Check {
    issues: Vec<Issue>,
}

impl Check {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(issue(path, message));
    }

    fn manifest(&mut self, obj: &Map<String, Value>) -> Option<Manifest> {
        for key in obj.keys() {
            if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
                self.push(key.clone(), format!("Unknown top-level field '{key}'."));
            }
        }
        let name = self.name(obj);
        let version = self.version(obj);
        let runtime = self.runtime(obj);
        let world = runtime.as_deref().and_then(|r| self.world(r));
        let publisher = self.publisher(obj);
        let capabilities = self.capabilities(obj);
        if let Some(world) = world {
            self.world_capabilities(obj, world);
        }
        let assets = self.string_list(obj, "assets", "asset");
        let precompiled = self.precompiled(obj);
        let ui = self.ui(obj);
        let endpoints = self.api(obj);
        Some(Manifest {
            name: name?,
            publisher: publisher?,
            version: version?,
            runtime: runtime?,
            world: world?,
            capabilities,
            ui,
            endpoints,
            assets,
            precompiled,
        })
    }

    fn name(&mut self, obj: &Map<String, Value>) -> Option<String> {
        let name = non_empty_str(obj.get("name"));
        if name.is_none() {
            self.push(
                "name",
                "Field 'name' is required and must be a non-empty string.",
            );
        }
        name.map(str::to_owned)
    }

    fn version(&mut self, obj: &Map<String, Value>) -> Option<VersionSpec> {
        let Some(Value::String(raw)) = obj.get("version") else {
            self.push(
                "version",
                "Field 'version' is required and must be a string.",
            );
            return None;
        };
        let v = js_trim(raw);
        if is_semver_like(v) {
            return Some(VersionSpec::Exact(v.to_owned()));
        }
        match parse_wildcard(v) {
            Some(Some((major, minor))) => Some(VersionSpec::Wildcard { major, minor }),
            Some(None) => {
                self.push("version", "Field 'version' wildcard numbers are too large.");
                None
            }
            None => {
                self.push(
                    "version",
                    "Field 'version' must be a semver-like string (e.g., 1.2.3, 1.2.3-beta, 1.2.3+build).",
                );
                None
            }
        }
    }

    fn runtime(&mut self, obj: &Map<String, Value>) -> Option<String> {
        let Some(Value::String(raw)) = obj.get("runtime") else {
            self.push(
                "runtime",
                "Field 'runtime' is required and must be a string.",
            );
            return None;
        };
        let r = js_trim(raw);
        if r.is_empty() || !(r.contains('@') || r.contains('-')) {
            self.push(
                "runtime",
                "Field 'runtime' must be a non-empty string containing '@' or '-'.",
            );
            return None;
        }
        Some(raw.clone())
    }

    /// The world `runtime` chooses; an unsupported `wasi-http` version is an issue.
    fn world(&mut self, runtime: &str) -> Option<World> {
        match World::of_runtime(runtime) {
            Ok(world) => Some(world),
            Err(unsupported) => {
                self.push(
                    "runtime",
                    format!(
                        "Field 'runtime' names an unsupported wasi:http version '{}'; use '{}'.",
                        unsupported.0, WASI_HTTP_RUNTIMES[0]
                    ),
                );
                None
            }
        }
    }

    /// Capabilities the chosen world cannot use are issues (a `wasi:http/proxy` component
    /// reaches the host only through WASI).
    fn world_capabilities(&mut self, obj: &Map<String, Value>, world: World) {
        let Some(Value::Array(items)) = obj.get("capabilities") else {
            return;
        };
        for (i, v) in items.iter().enumerate() {
            if let Some(name) = non_empty_str(Some(v))
                && let Ok(capability) = Capability::parse(name)
                && !world.allows(capability)
            {
                self.push(
                    format!("capabilities[{i}]"),
                    format!(
                        "Capability '{capability}' is not available to {world} components; they may declare cap:http.fetch and the defaults."
                    ),
                );
            }
        }
    }

    /// Alga makes `publisher` optional; Annex requires it because a bundle signature binds the
    /// publisher (and the registry's `publisher` column is NOT NULL anyway).
    fn publisher(&mut self, obj: &Map<String, Value>) -> Option<String> {
        match obj.get("publisher") {
            None => {
                self.push(
                    "publisher",
                    "Field 'publisher' is required (Annex binds signatures to it) and must be a non-empty string.",
                );
                None
            }
            Some(v) => {
                let publisher = non_empty_str(Some(v));
                if publisher.is_none() {
                    self.push(
                        "publisher",
                        "Field 'publisher', if provided, must be a non-empty string.",
                    );
                }
                publisher.map(str::to_owned)
            }
        }
    }

    /// `capabilities` and `assets`: optional arrays of non-empty strings.
    fn string_list(&mut self, obj: &Map<String, Value>, field: &str, item: &str) -> Vec<String> {
        let Some(v) = obj.get(field) else {
            return Vec::new();
        };
        let Value::Array(items) = v else {
            self.push(
                field,
                format!("Field '{field}' must be an array of non-empty strings if provided."),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            match non_empty_str(Some(v)) {
                Some(s) => out.push(s.to_owned()),
                None => self.push(
                    format!("{field}[{i}]"),
                    format!("Each {item} must be a non-empty string."),
                ),
            }
        }
        out
    }

    /// `capabilities`: a string list whose every name is a known [`Capability`].
    fn capabilities(&mut self, obj: &Map<String, Value>) -> Vec<String> {
        let declared = self.string_list(obj, "capabilities", "capability");
        if let Some(Value::Array(items)) = obj.get("capabilities") {
            for (i, v) in items.iter().enumerate() {
                if let Some(name) = non_empty_str(Some(v))
                    && let Err(unknown) = Capability::parse(name)
                {
                    self.push(
                        format!("capabilities[{i}]"),
                        format!("Unknown capability '{}'.", unknown.0),
                    );
                }
            }
        }
        declared
    }

    fn precompiled(&mut self, obj: &Map<String, Value>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(v) = obj.get("precompiled") else {
            return out;
        };
        let Value::Object(map) = v else {
            self.push(
                "precompiled",
                "Field 'precompiled' must be an object mapping non-empty keys to non-empty strings.",
            );
            return out;
        };
        for (k, v) in map {
            if js_trim(k).is_empty() {
                self.push(
                    "precompiled",
                    "Field 'precompiled' has an empty key which is not allowed.",
                );
            }
            match non_empty_str(Some(v)) {
                Some(s) => {
                    out.insert(k.clone(), s.to_owned());
                }
                None => self.push(
                    format!("precompiled.{k}"),
                    "Each precompiled mapping value must be a non-empty string.",
                ),
            }
        }
        out
    }

    fn ui(&mut self, obj: &Map<String, Value>) -> Option<UiSpec> {
        let v = obj.get("ui")?;
        let Value::Object(ui) = v else {
            self.push("ui", "Field 'ui' must be an object if provided.");
            return None;
        };
        if ui.get("type") != Some(&Value::String("iframe".into())) {
            self.push(
                "ui.type",
                "Field 'ui.type' must be exactly 'iframe' when 'ui' is provided.",
            );
        }
        let entry = match non_empty_str(ui.get("entry")) {
            None => {
                self.push(
                    "ui.entry",
                    "Field 'ui.entry' is required and must be a non-empty string when 'ui' is provided.",
                );
                None
            }
            Some(e) if e.contains("..") => {
                self.push("ui.entry", "Field 'ui.entry' must not contain '..'.");
                None
            }
            Some(e) => Some(sanitize_path(e)),
        };
        let (app_menu_label, client_portal_menu_label) = match ui.get("hooks") {
            None => (None, None),
            Some(Value::Object(hooks)) => (
                self.hook_label(hooks, "appMenu"),
                self.hook_label(hooks, "clientPortalMenu"),
            ),
            Some(_) => {
                self.push(
                    "ui.hooks",
                    "Field 'ui.hooks' must be an object if provided.",
                );
                (None, None)
            }
        };
        Some(UiSpec {
            entry: entry?,
            app_menu_label,
            client_portal_menu_label,
        })
    }

    /// `ui.hooks.<hook>.label`: a non-empty string if the hook is present; returned trimmed.
    fn hook_label(&mut self, hooks: &Map<String, Value>, hook: &str) -> Option<String> {
        let Value::Object(h) = hooks.get(hook)? else {
            self.push(
                format!("ui.hooks.{hook}"),
                format!("Field 'ui.hooks.{hook}' must be an object if provided."),
            );
            return None;
        };
        let label = non_empty_str(h.get("label"));
        if label.is_none() {
            self.push(
                format!("ui.hooks.{hook}.label"),
                format!(
                    "Field 'ui.hooks.{hook}.label' is required and must be a non-empty string."
                ),
            );
        }
        label.map(|l| js_trim(l).to_owned())
    }

    fn api(&mut self, obj: &Map<String, Value>) -> Vec<Endpoint> {
        let Some(api) = obj.get("api") else {
            return Vec::new();
        };
        let Value::Object(api) = api else {
            self.push("api", "Field 'api' must be an object if provided.");
            return Vec::new();
        };
        let Some(endpoints) = api.get("endpoints") else {
            self.push(
                "api.endpoints",
                "Field 'api.endpoints' is required when 'api' is provided.",
            );
            return Vec::new();
        };
        let Value::Array(endpoints) = endpoints else {
            self.push("api.endpoints", "Field 'api.endpoints' must be an array.");
            return Vec::new();
        };
        endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, ep)| self.endpoint(&format!("api.endpoints[{i}]"), ep))
            .collect()
    }

    fn endpoint(&mut self, base: &str, ep: &Value) -> Option<Endpoint> {
        let Value::Object(e) = ep else {
            self.push(base, "Each endpoint must be an object.");
            return None;
        };
        let method = match non_empty_str(e.get("method")) {
            None => {
                self.push(
                    format!("{base}.method"),
                    "Endpoint 'method' is required and must be a non-empty string.",
                );
                None
            }
            Some(m) => {
                let upper = m.to_ascii_uppercase();
                if HTTP_METHODS.contains(&upper.as_str()) {
                    Some(upper)
                } else {
                    self.push(
                        format!("{base}.method"),
                        "Endpoint 'method' must be one of: GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD (case-insensitive).",
                    );
                    None
                }
            }
        };
        let path = self.endpoint_path(base, e.get("path"));
        let handler = match non_empty_str(e.get("handler")) {
            None => {
                self.push(
                    format!("{base}.handler"),
                    "Endpoint 'handler' is required and must be a non-empty string.",
                );
                None
            }
            Some(h) if h.contains("..") => {
                self.push(
                    format!("{base}.handler"),
                    "Endpoint 'handler' must not contain '..'.",
                );
                None
            }
            Some(h) => Some(sanitize_path(h)),
        };
        Some(Endpoint {
            method: method?,
            path: path?,
            handler: handler?,
        })
    }

    fn endpoint_path(&mut self, base: &str, v: Option<&Value>) -> Option<String> {
        let path_at = format!("{base}.path");
        let Some(raw) = non_empty_str(v) else {
            self.push(
                path_at,
                "Endpoint 'path' is required and must be a non-empty string starting with '/'.",
            );
            return None;
        };
        let before = self.issues.len();
        if raw.chars().any(|c| c.is_whitespace() || c == '\u{feff}') {
            self.push(path_at.clone(), "Endpoint 'path' must not contain spaces.");
        }
        if raw.contains("..") {
            self.push(path_at.clone(), "Endpoint 'path' must not contain '..'.");
        }
        // `./` alone sanitises to the empty string, which gets no leading slash.
        let norm = ensure_leading_slash(sanitize_path(raw));
        if !norm.starts_with('/') {
            self.push(path_at, "Endpoint 'path' must start with '/'.");
        }
        (self.issues.len() == before).then_some(norm)
    }
}

/// `^\d+\.\d+\.\d+(-[A-Za-z0-9.-]+)?(\+[A-Za-z0-9.-]+)?$` without a regex engine.
fn is_semver_like(v: &str) -> bool {
    let mut cur = Cursor {
        b: v.as_bytes(),
        i: 0,
    };
    if !(cur.digits() && cur.eat(b'.') && cur.digits() && cur.eat(b'.') && cur.digits()) {
        return false;
    }
    if cur.eat(b'-') && !cur.ident() {
        return false;
    }
    if cur.eat(b'+') && !cur.ident() {
        return false;
    }
    cur.done()
}

/// `^\d+\.\d+\.\*$`: `None` if it does not match, `Some(None)` if it matches but a number does not
/// fit in `u64`.
fn parse_wildcard(v: &str) -> Option<Option<(u64, u64)>> {
    let (major, rest) = v.split_once('.')?;
    let (minor, star) = rest.split_once('.')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if star != "*" || !all_digits(major) || !all_digits(minor) {
        return None;
    }
    Some(major.parse().ok().zip(minor.parse().ok()))
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn many(&mut self, ok: impl Fn(u8) -> bool) -> bool {
        let start = self.i;
        while self.b.get(self.i).is_some_and(|&c| ok(c)) {
            self.i += 1;
        }
        self.i > start
    }

    fn digits(&mut self) -> bool {
        self.many(|c| c.is_ascii_digit())
    }

    fn ident(&mut self) -> bool {
        self.many(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
