//! Declared-endpoint matching (docs/design/alga-compatibility.md, "Gateway"): the installed version's
//! `api.endpoints` are an allowlist. Method must match exactly (HEAD counts as
//! GET), the segment count must match, `:param` segments match any non-empty
//! segment, and nothing else is normalised. No match means 404: fail-closed.

/// A declared endpoint as the control plane resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub method: String,
    pub path: String,
}

/// The endpoint `method path` is served by, if any.
pub(crate) fn find<'a>(
    endpoints: &'a [Endpoint],
    method: &str,
    path: &str,
) -> Option<&'a Endpoint> {
    let method = if method == "HEAD" { "GET" } else { method };
    let want: Vec<&str> = segments(path).collect();
    endpoints.iter().find(|e| {
        e.method.eq_ignore_ascii_case(method) && {
            let template: Vec<&str> = segments(&e.path).collect();
            template.len() == want.len()
                && template.iter().zip(&want).all(|(t, w)| {
                    if t.starts_with(':') && t.len() > 1 {
                        !w.is_empty()
                    } else {
                        t == w
                    }
                })
        }
    })
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    trimmed.split('/').filter({
        let empty = trimmed.is_empty();
        move |_| !empty
    })
}

/// Methods the gateway routes at all (HEAD is served as GET).
pub(crate) fn is_routable(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE")
}

/// Decodes `%XX` escapes of a URL path; `None` for a malformed escape or
/// bytes that are not UTF-8. An encoded `/` becomes a separator (as in Alga).
pub(crate) fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Why a request path is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// A malformed escape or bytes that are not UTF-8: 404
    /// `endpoint_not_found`, as Alga answers.
    #[error("malformed percent escape or non-UTF-8 path")]
    Malformed,
    /// A control character (NUL included) once decoded: 400 `invalid_path`.
    /// No handler path needs one, and it must never reach a guest, a log
    /// line or the audit trail.
    #[error("control character in the decoded path")]
    ControlCharacter,
}

/// The request path as Alga forms it: `"/" + segments.join("/")` of the
/// decoded tail (repeated and trailing slashes dropped).
pub(crate) fn request_path(tail: &str) -> Result<String, PathError> {
    let decoded = percent_decode(tail).ok_or(PathError::Malformed)?;
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    let parts: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(method: &str, path: &str) -> Endpoint {
        Endpoint {
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn matching_is_exact_and_fail_closed() {
        let eps = vec![
            ep("GET", "/hello"),
            ep("DELETE", "/api/schedules/:id"),
            ep("POST", "/"),
        ];
        let cases = [
            ("GET", "/hello", true),
            ("HEAD", "/hello", true),
            ("POST", "/hello", false),
            ("GET", "/hello/x", false),
            ("GET", "/Hello", false),
            ("DELETE", "/api/schedules/42", true),
            ("DELETE", "/api/schedules", false),
            ("DELETE", "/api/schedules/42/x", false),
            ("POST", "/", true),
            ("GET", "/", false),
        ];
        for (m, p, want) in cases {
            assert_eq!(find(&eps, m, p).is_some(), want, "{m} {p}");
        }
        assert!(find(&[], "GET", "/hello").is_none());
    }

    #[test]
    fn paths_are_decoded_and_joined() {
        assert_eq!(request_path("a/b/").as_deref(), Ok("/a/b"));
        assert_eq!(request_path("a%2Fb").as_deref(), Ok("/a/b"));
        assert_eq!(request_path("").as_deref(), Ok("/"));
        assert_eq!(request_path("x%20y").as_deref(), Ok("/x y"));
        assert_eq!(request_path("bad%zz"), Err(PathError::Malformed));
        assert_eq!(request_path("bad%ff"), Err(PathError::Malformed));
        for bad in ["a%00b", "a%0Ab", "a%0d%0a", "tab%09", "del%7F", "c1%C2%85"] {
            assert_eq!(request_path(bad), Err(PathError::ControlCharacter), "{bad}");
        }
    }
}
