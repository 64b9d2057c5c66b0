//! {{title}}: an Annex extension. `routes` holds what the extension does (plain Rust, tested
//! by `cargo test`); this file is the WebAssembly glue: it turns the host's `execute-request`
//! into a [`routes::Request`] and the [`routes::Reply`] back into an `execute-response`.

pub mod routes;

#[cfg(target_arch = "wasm32")]
mod component {
    // The `alga:extension` WIT shipped in wit/: world `runner` is Alga's ABI, so this
    // component also runs on Alga. World `runner-v2` adds `alga:extension/config`.
    wit_bindgen::generate!({ path: "wit", world: "runner" });

    use alga::extension::logging;
    use alga::extension::types::HttpHeader;

    use crate::routes;

    struct Extension;

    impl Guest for Extension {
        fn handler(request: ExecuteRequest) -> ExecuteResponse {
            let http = request.http;
            // Needs `cap:log.emit` (every install has it); `annex logs` shows the line.
            logging::log_info(&format!("{} {}", http.method, http.url));
            let reply = routes::route(&routes::Request {
                method: &http.method,
                url: &http.url,
                body: http.body.as_deref().unwrap_or_default(),
                tenant_id: &request.context.tenant_id,
            });
            ExecuteResponse {
                status: reply.status,
                headers: vec![HttpHeader {
                    name: "content-type".to_string(),
                    value: "application/json".to_string(),
                }],
                body: Some(reply.body.to_string().into_bytes()),
            }
        }
    }

    export!(Extension);
}
