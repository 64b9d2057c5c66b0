//! What the extension answers. Every route here must also be declared in manifest.json's
//! `api.endpoints`: the edge refuses anything else.

use serde_json::{Value, json};

/// The parts of a request the routes look at.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, e.g. `/hello?name=Ada`.
    pub url: &'a str,
    pub body: &'a [u8],
    pub tenant_id: &'a str,
}

/// A JSON answer.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }

    fn error(status: u16, error: &str) -> Reply {
        Reply {
            status,
            body: json!({ "error": error }),
        }
    }
}

pub fn route(request: &Request) -> Reply {
    let path = request.url.split('?').next().unwrap_or_default();
    match (request.method, path) {
        ("GET", "/hello") => Reply::ok(json!({
            "message": "Hello from {{name}}!",
            "tenantId": request.tenant_id,
        })),
        ("POST", "/echo") => match serde_json::from_slice::<Value>(request.body) {
            Ok(body) => Reply::ok(json!({ "echo": body })),
            Err(_) => Reply::error(400, "body_must_be_json"),
        },
        _ => Reply::error(404, "not_found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, url: &str, body: &[u8]) -> Reply {
        route(&Request {
            method,
            url,
            body,
            tenant_id: "t1",
        })
    }

    #[test]
    fn hello_greets_the_tenant() {
        let reply = call("GET", "/hello?x=1", b"");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["tenantId"], "t1");
        assert!(reply.body["message"].is_string());
    }

    #[test]
    fn echo_returns_the_json_body() {
        let reply = call("POST", "/echo", br#"{"a":1}"#);
        assert_eq!(reply, Reply::ok(json!({ "echo": { "a": 1 } })));
        assert_eq!(call("POST", "/echo", b"not json").status, 400);
    }

    #[test]
    fn other_routes_are_not_found() {
        assert_eq!(call("GET", "/nope", b"").status, 404);
    }
}
