//! The sample extension (`annex dev` uses it): `GET /hello` answers a small
//! JSON greeting, `POST /echo` returns the request body with its content type.

wit_bindgen::generate!({
    path: "../wit",
    world: "runner",
});

use alga::extension::types::HttpHeader;

struct Hello;

impl Guest for Hello {
    fn handler(request: ExecuteRequest) -> ExecuteResponse {
        let http = request.http;
        let path = http.url.split('?').next().unwrap_or("");
        match (http.method.as_str(), path) {
            ("POST", "/echo") => {
                let content_type = http
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                    .map(|h| h.value.clone())
                    .unwrap_or_else(|| "application/octet-stream".to_string());
                response(200, &content_type, http.body.unwrap_or_default())
            }
            ("GET", _) => {
                let body = format!(
                    "{{\"message\":\"hello\",\"tenantId\":{},\"path\":{}}}",
                    json_string(&request.context.tenant_id),
                    json_string(path)
                );
                response(200, "application/json", body.into_bytes())
            }
            _ => response(
                404,
                "application/json",
                b"{\"error\":\"not_found\"}".to_vec(),
            ),
        }
    }
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> ExecuteResponse {
    ExecuteResponse {
        status,
        headers: vec![HttpHeader {
            name: "content-type".to_string(),
            value: content_type.to_string(),
        }],
        body: Some(body),
    }
}

/// A JSON string literal, escaping what JSON requires.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

export!(Hello);
