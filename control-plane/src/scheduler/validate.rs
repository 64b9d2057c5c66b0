//! The scheduler's input rules with Alga's messages
//! (docs/design/alga-compatibility.md, "Host APIs"): time zone, payload,
//! name, schedule id and the endpoint selector. Lengths are counted in UTF-16
//! code units, as Alga's JavaScript counts them. Cron expressions are in
//! [`cron`](super::cron). Pure checks: nothing here reads or writes state.

use std::str::FromStr as _;

use chrono_tz::Tz;
use uuid::Uuid;

use crate::store::EndpointRow;

pub(crate) const MAX_TIMEZONE_LEN: usize = 64;
pub(crate) const MAX_NAME_LEN: usize = 128;
pub(crate) const MAX_PAYLOAD_LEN: usize = 100_000;

pub(crate) const ENDPOINT_NOT_SCHEDULABLE: &str = "Endpoint not found or not schedulable";
pub(crate) const PAYLOAD_NOT_JSON: &str = "Payload must be valid JSON object or array";

fn js_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// An IANA zone name, matched case-insensitively as `Intl.DateTimeFormat` does.
pub(crate) fn parse_timezone(name: &str) -> Option<Tz> {
    let name = name.trim();
    Tz::from_str(name)
        .ok()
        .or_else(|| Tz::from_str_insensitive(name).ok())
}

/// The zone to store: trimmed, `UTC` when absent or empty.
pub(crate) fn timezone(raw: Option<&str>) -> Result<String, &'static str> {
    let value = raw.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Ok("UTC".to_owned());
    }
    if js_len(value) > MAX_TIMEZONE_LEN {
        return Err("Timezone too long");
    }
    parse_timezone(value).ok_or("Invalid timezone")?;
    Ok(value.to_owned())
}

/// The payload's JSON text: an object or array, or null (stored as none).
pub(crate) fn payload(raw: Option<&str>) -> Result<Option<serde_json::Value>, &'static str> {
    let Some(text) = raw else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| PAYLOAD_NOT_JSON)?;
    match &value {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Object(_) | serde_json::Value::Array(_) => {}
        _ => return Err("Payload must be a JSON object or array"),
    }
    if js_len(&value.to_string()) > MAX_PAYLOAD_LEN {
        return Err("Payload too large");
    }
    Ok(Some(value))
}

/// A schedule name: trimmed; empty means none.
pub(crate) fn name(raw: Option<&str>) -> Result<Option<String>, &'static str> {
    let value = raw.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Ok(None);
    }
    if js_len(value) > MAX_NAME_LEN {
        return Err("Name too long");
    }
    Ok(Some(value.to_owned()))
}

/// A schedule id as the guest passed it.
pub(crate) fn schedule_id(raw: &str) -> Result<Uuid, &'static str> {
    let value = raw.trim();
    if value.is_empty() {
        return Err("Missing scheduleId");
    }
    Uuid::parse_str(value).map_err(|_| "Invalid scheduleId")
}

/// Whether an endpoint can be scheduled: GET or POST without path parameters.
pub(crate) fn schedulable(method: &str, path: &str) -> bool {
    matches!(method.to_ascii_uppercase().as_str(), "GET" | "POST")
        && !path.contains([':', '{', '}'])
}

fn with_slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// Resolves `"METHOD /path"` or a bare `/path` (GET or POST, the first
/// declared) against a version's endpoints; `None` when there is no such
/// endpoint or it cannot be scheduled. Paths match with or without the
/// leading `/`.
pub(crate) fn endpoint<'a>(
    selector: &str,
    endpoints: &'a [EndpointRow],
) -> Option<&'a EndpointRow> {
    let selector = selector.trim();
    let (method, path) = match selector.split_once(char::is_whitespace) {
        Some((method, path)) => (Some(method.to_ascii_uppercase()), path.trim()),
        None => (None, selector),
    };
    if path.is_empty() {
        return None;
    }
    let wanted = with_slash(path);
    endpoints
        .iter()
        .filter(|e| matches!(e.method.to_ascii_uppercase().as_str(), "GET" | "POST"))
        .filter(|e| {
            method
                .as_deref()
                .is_none_or(|m| m == e.method.to_ascii_uppercase())
        })
        .find(|e| with_slash(&e.path) == wanted)
        .filter(|e| schedulable(&e.method, &e.path))
}

/// `METHOD path`, normalised, as the upgrade remap compares endpoints.
pub(crate) fn endpoint_key(method: &str, path: &str) -> String {
    format!("{} {}", method.to_ascii_uppercase(), with_slash(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timezones_default_to_utc_and_must_be_iana() {
        let check = |raw: Option<&str>, expected: Result<&str, &str>| {
            assert_eq!(
                timezone(raw).as_deref(),
                expected.map(str::to_owned).as_deref(),
                "{raw:?}"
            );
        };
        check(None, Ok("UTC"));
        check(Some("  "), Ok("UTC"));
        check(Some(" Europe/Berlin "), Ok("Europe/Berlin"));
        check(Some("america/new_york"), Ok("america/new_york"));
        check(Some("Mars/Olympus"), Err("Invalid timezone"));
        check(Some("+02:00"), Err("Invalid timezone"));
        check(Some(&"A".repeat(65)), Err("Timezone too long"));
    }

    #[test]
    fn payloads_are_objects_arrays_or_null() {
        let check = |raw: Option<&str>, expected: Result<Option<&str>, &str>| {
            let got = payload(raw).map(|v| v.map(|v| v.to_string()));
            assert_eq!(got, expected.map(|v| v.map(str::to_owned)), "{raw:?}");
        };
        check(None, Ok(None));
        check(Some("null"), Ok(None));
        check(Some(r#"{"a": [1, 2]}"#), Ok(Some(r#"{"a":[1,2]}"#)));
        check(Some("[]"), Ok(Some("[]")));
        check(Some("{nope"), Err(PAYLOAD_NOT_JSON));
        check(Some(""), Err(PAYLOAD_NOT_JSON));
        check(Some("42"), Err("Payload must be a JSON object or array"));
        check(
            Some(r#""text""#),
            Err("Payload must be a JSON object or array"),
        );
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_PAYLOAD_LEN));
        check(Some(&big), Err("Payload too large"));
        let fits = format!(r#"["{}"]"#, "x".repeat(MAX_PAYLOAD_LEN - 4));
        assert!(payload(Some(&fits)).is_ok());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        let check = |raw: Option<&str>, expected: Result<Option<&str>, &str>| {
            assert_eq!(name(raw), expected.map(|v| v.map(str::to_owned)), "{raw:?}");
        };
        check(None, Ok(None));
        check(Some("   "), Ok(None));
        check(Some(" nightly "), Ok(Some("nightly")));
        check(Some(&"n".repeat(128)), Ok(Some(&"n".repeat(128))));
        check(Some(&"n".repeat(129)), Err("Name too long"));
        // UTF-16 units, as Alga counts: 64 astral characters are 128 units.
        check(Some(&"😀".repeat(65)), Err("Name too long"));
    }

    #[test]
    fn schedule_ids_are_uuids() {
        let id = Uuid::new_v4();
        let check = |raw: &str, expected: Result<Uuid, &str>| {
            assert_eq!(schedule_id(raw), expected, "{raw:?}");
        };
        check(&format!(" {id} "), Ok(id));
        check("", Err("Missing scheduleId"));
        check("not-a-uuid", Err("Invalid scheduleId"));
    }

    fn ep(method: &str, path: &str) -> EndpointRow {
        EndpointRow {
            method: method.into(),
            path: path.into(),
            handler: "dist/main".into(),
        }
    }

    #[test]
    fn endpoint_selectors_find_schedulable_endpoints() {
        let endpoints = [
            ep("GET", "/status"),
            ep("POST", "/sync"),
            ep("GET", "/sync"),
            ep("POST", "hello"),
            ep("DELETE", "/items"),
            ep("GET", "/items/:id"),
            ep("POST", "/users/{id}"),
        ];
        let check = |selector: &str, expected: Option<(&str, &str)>| {
            let got = endpoint(selector, &endpoints).map(|e| (e.method.as_str(), e.path.as_str()));
            assert_eq!(got, expected, "{selector:?}");
        };
        check("/status", Some(("GET", "/status")));
        check("status", Some(("GET", "/status")));
        check("GET /status", Some(("GET", "/status")));
        check("get  /status", Some(("GET", "/status")));
        check("POST /status", None);
        check("/sync", Some(("POST", "/sync")));
        check("GET /sync", Some(("GET", "/sync")));
        check("/hello", Some(("POST", "hello")));
        check("DELETE /items", None);
        check("/items", None);
        check("GET /items/:id", None);
        check("POST /users/{id}", None);
        check("/missing", None);
        check("", None);
        check("GET", None);
    }

    #[test]
    fn schedulable_means_get_or_post_without_parameters() {
        let check = |method: &str, path: &str, expected: bool| {
            assert_eq!(schedulable(method, path), expected, "{method} {path}");
        };
        check("GET", "/a", true);
        check("post", "/a/b", true);
        check("PUT", "/a", false);
        check("GET", "/a/:id", false);
        check("GET", "/a/{id}", false);
        check("GET", "/a}", false);
    }
}
