//! The world an extension's component is built for, chosen by the manifest's `runtime` field
//! (docs/design/alga-compatibility.md, "Manifest"): Alga's `alga:extension` runner world (the
//! default, whatever else `runtime` says, as in Alga), or the standard `wasi:http/proxy` world
//! that Spin and `wasmtime serve` run (`"runtime": "wasi-http@0.2"`).
//!
//! This module owns the mapping from `runtime` to [`World`] and which capabilities a world can
//! use. It must not decide how a world is run (the worker does) or read files.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::capability::Capability;

/// The `runtime` values that select the `wasi:http/proxy` world (0.2.x). The first is the one
/// documented; the bare form is accepted as a synonym.
pub const WASI_HTTP_RUNTIMES: [&str; 2] = ["wasi-http@0.2", "wasi-http"];

/// Which exports a component must have and how a request reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum World {
    /// `alga:extension/runner`: the guest exports `handler(execute-request)` and imports the
    /// `alga:extension` host interfaces.
    #[default]
    Alga,
    /// `wasi:http/proxy@0.2`: the guest exports `wasi:http/incoming-handler` and may import
    /// `wasi:http/outgoing-handler`.
    WasiHttp,
}

/// A `runtime` that asks for a `wasi:http` version Annex does not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("runtime '{0}' names an unsupported wasi:http version; use '{first}'", first = WASI_HTTP_RUNTIMES[0])]
pub struct UnsupportedRuntime(pub String);

impl World {
    /// The world a `runtime` value selects. Anything that does not start with `wasi-http` is
    /// Alga's world (Alga accepts any runtime string containing `@` or `-`).
    pub fn of_runtime(runtime: &str) -> Result<World, UnsupportedRuntime> {
        let normalised = runtime.trim().to_ascii_lowercase();
        if WASI_HTTP_RUNTIMES.contains(&normalised.as_str()) {
            Ok(World::WasiHttp)
        } else if normalised.starts_with("wasi-http") {
            Err(UnsupportedRuntime(runtime.trim().to_owned()))
        } else {
            Ok(World::Alga)
        }
    }

    /// The world of a stored `manifest.json`, read leniently: only `runtime` matters, and a
    /// manifest without a readable one is Alga's world (publish has validated it already;
    /// stricter rules added later must not stop bundles published before them from loading).
    pub fn of_manifest_json(manifest: &[u8]) -> Result<World, UnsupportedRuntime> {
        match serde_json::from_slice::<Value>(manifest) {
            Ok(Value::Object(obj)) => match obj.get("runtime") {
                Some(Value::String(runtime)) => World::of_runtime(runtime),
                _ => Ok(World::Alga),
            },
            _ => Ok(World::Alga),
        }
    }

    /// Whether a component of this world can use `capability`. A `wasi:http/proxy` component
    /// reaches the host only through WASI: outgoing HTTP (`cap:http.fetch`) and the defaults
    /// (its stdout and stderr are the execution log).
    pub fn allows(self, capability: Capability) -> bool {
        match self {
            World::Alga => true,
            World::WasiHttp => {
                capability == Capability::HttpFetch || Capability::DEFAULTS.contains(&capability)
            }
        }
    }

    /// `alga` or `wasi-http`, for logs and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            World::Alga => "alga",
            World::WasiHttp => "wasi-http",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for World {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_chooses_the_world_and_alga_is_the_default() {
        for alga in [
            "wasm-js@1",
            "wasm-rust@1",
            "wasm32-wasi",
            "x@",
            "wasm-http@1",
        ] {
            assert_eq!(World::of_runtime(alga), Ok(World::Alga), "{alga}");
        }
        for http in ["wasi-http@0.2", "wasi-http", " WASI-HTTP@0.2 "] {
            assert_eq!(World::of_runtime(http), Ok(World::WasiHttp), "{http}");
        }
        for unsupported in ["wasi-http@0.3", "wasi-http@1", "wasi-https"] {
            assert!(World::of_runtime(unsupported).is_err(), "{unsupported}");
        }
    }

    #[test]
    fn a_stored_manifest_is_read_leniently() {
        let world = |json: &str| World::of_manifest_json(json.as_bytes());
        assert_eq!(world(r#"{"runtime":"wasi-http@0.2"}"#), Ok(World::WasiHttp));
        assert_eq!(world(r#"{"runtime":"wasm-js@1"}"#), Ok(World::Alga));
        assert_eq!(world(r#"{"runtime":7}"#), Ok(World::Alga));
        assert_eq!(world("not json"), Ok(World::Alga));
        assert!(world(r#"{"runtime":"wasi-http@0.3"}"#).is_err());
    }

    #[test]
    fn a_wasi_http_component_may_fetch_and_has_the_defaults_only() {
        for capability in Capability::ALL {
            assert!(World::Alga.allows(capability));
            let expected =
                capability == Capability::HttpFetch || Capability::DEFAULTS.contains(&capability);
            assert_eq!(World::WasiHttp.allows(capability), expected, "{capability}");
        }
    }
}
