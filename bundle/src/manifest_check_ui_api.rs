//! The `ui` and `api` checks of [`Check`]: the iframe entry and its menu hooks, and the endpoint
//! allowlist (method, path, handler), with Alga's issue paths and messages.
//!
//! This module owns what an entry, hook label or endpoint must look like and how it is
//! normalised (`sanitize_path`, upper-case method, leading `/`). It must not decide how a request
//! is routed to an endpoint (the edge does) or read files.

use serde_json::{Map, Value};

use super::Check;
use crate::manifest::{
    Endpoint, HTTP_METHODS, UiSpec, ensure_leading_slash, js_trim, non_empty_str, sanitize_path,
};

impl Check {
    pub(super) fn ui(&mut self, obj: &Map<String, Value>) -> Option<UiSpec> {
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

    pub(super) fn api(&mut self, obj: &Map<String, Value>) -> Vec<Endpoint> {
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
