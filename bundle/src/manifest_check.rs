//! The publish-path checks behind [`Manifest::parse`](super::Manifest::parse): one method per
//! top-level field, run in Alga's order, each adding Alga's `{path, message}` issue when the field
//! is wrong and returning its normalised value when it is right.
//!
//! This module owns the field rules for the top level, `name`, `version` (with the semver-like and
//! `X.Y.*` syntax), `runtime` and the world it chooses, `publisher`, `capabilities`, `assets` and
//! `precompiled`; the `ui` and `api` rules are in `manifest_check_ui_api.rs`. It must not stop at
//! the first issue, define the public manifest types (they stay in `manifest.rs`), decide what a
//! capability grants or read files.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{
    Issue, Manifest, TOP_LEVEL_FIELDS, VersionSpec, WASI_HTTP_RUNTIMES, World, issue, js_trim,
    non_empty_str,
};
use crate::capability::Capability;

#[path = "manifest_check_ui_api.rs"]
mod ui_api;

/// Collects issues while building the normalised manifest. Field checks run in Alga's order.
#[derive(Default)]
pub(super) struct Check {
    pub(super) issues: Vec<Issue>,
}

impl Check {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(issue(path, message));
    }

    pub(super) fn manifest(&mut self, obj: &Map<String, Value>) -> Option<Manifest> {
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
