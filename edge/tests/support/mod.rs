//! Test support for the edge's component tests: the control plane and the
//! edge from the test kit (in-memory store), a scripted worker registered
//! with the control plane, a published and installed extension, and session
//! tokens.

// Each test binary uses a part of this module and of its re-exports.
#![allow(dead_code, unused_imports)]

pub mod attack;
pub mod idp;
pub mod worker;

use std::time::Duration;

pub use annex_testkit::edge::EdgeLimits as Limits;
pub use annex_testkit::edge::{ORIGIN, UI_MAX_FILE};
pub use annex_testkit::http::{Resp, get, send};
pub use annex_testkit::{ControlPlane, Edge, EdgeOptions, Installed, assert_eventually};

pub use worker::ScriptedWorker;

pub const TENANT: &str = "tenant-a";
pub const OTHER_TENANT: &str = "tenant-b";
pub const PUBLISHER: &str = "acme";

pub fn manifest(name: &str, client_portal: bool) -> serde_json::Value {
    let mut hooks = serde_json::json!({"appMenu": {"label": "Demo"}});
    if client_portal {
        hooks["clientPortalMenu"] = serde_json::json!({"label": "Portal"});
    }
    serde_json::json!({
        "name": name,
        "publisher": PUBLISHER,
        "version": "1.0.0",
        "runtime": "wasm-js@1",
        "capabilities": ["cap:storage.kv"],
        "ui": {"type": "iframe", "entry": "ui/index.html", "hooks": hooks},
        "api": {"endpoints": [
            {"method": "GET", "path": "/hello", "handler": "dist/main"},
            {"method": "POST", "path": "/echo", "handler": "dist/main"},
            {"method": "GET", "path": "/items/:id", "handler": "dist/main"},
            {"method": "DELETE", "path": "/items/:id", "handler": "dist/main"},
            {"method": "PUT", "path": "/items/:id", "handler": "dist/main"},
            {"method": "GET", "path": "/headers", "handler": "dist/main"},
            {"method": "GET", "path": "/slow", "handler": "dist/main"},
            {"method": "GET", "path": "/trap", "handler": "dist/main"},
            {"method": "GET", "path": "/guest-timeout", "handler": "dist/main"},
            {"method": "GET", "path": "/teapot", "handler": "dist/main"},
            {"method": "GET", "path": "/compiling", "handler": "dist/main"}
        ]}
    })
}

pub const INDEX_HTML: &[u8] = b"<!doctype html><html><body>ui</body></html>";
pub const APP_JS: &[u8] = b"console.log('app');";

/// The smallest valid WebAssembly component: the preamble alone.
const EMPTY_COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

pub fn bundle(manifest: &serde_json::Value) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = |p: &str, data: &[u8]| {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    };
    w("manifest.json", manifest.to_string().as_bytes());
    w("dist/main.wasm", EMPTY_COMPONENT);
    w("ui/index.html", INDEX_HTML);
    w("ui/assets/app.js", APP_JS);
    w("ui/big.json", &vec![b' '; (UI_MAX_FILE + 1) as usize]);
    annex_bundle::archive::pack_dir(dir.path()).expect("pack")
}

/// Publishes `name` (signed by a freshly trusted key) and installs it for
/// `tenant`.
pub async fn install(
    cp: &ControlPlane,
    name: &str,
    tenant: &str,
    client_portal: bool,
) -> Installed {
    let manifest = manifest(name, client_portal);
    cp.publish_and_install(&manifest, &bundle(&manifest), tenant)
        .await
}

/// A session token for [`TENANT`] with `overrides` applied (a `null`
/// removes a claim).
pub fn token(overrides: serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut claims = serde_json::json!({
        "sub": "user-1", "tenant": TENANT, "email": "ann@example.com", "name": "Ann Example",
        "user_type": "internal", "permissions": ["extension:read", "extension:write"],
        "aud": "annex", "exp": now + 300,
    });
    if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    annex_testkit::edge::sign_session(&claims)
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Whether `check` holds within `secs` seconds (the kit's [`annex_testkit::eventually`]).
pub async fn eventually(secs: u64, check: impl AsyncFnMut() -> bool) -> bool {
    annex_testkit::eventually(Duration::from_secs(secs), check)
        .await
        .is_ok()
}

/// A control plane, one scripted worker, an installed extension and an edge.
pub struct World {
    pub cp: ControlPlane,
    pub worker: ScriptedWorker,
    pub ext: Installed,
    pub edge: Edge,
    _heartbeat: tokio::task::JoinHandle<()>,
}

impl World {
    pub async fn start() -> World {
        World::start_with(EdgeOptions::default()).await
    }

    pub async fn start_with(opts: EdgeOptions) -> World {
        let cp = ControlPlane::start().await;
        let worker = ScriptedWorker::start(&cp.ca, "worker-1").await;
        let heartbeat = cp.keep_registered(&worker.id, worker.addr);
        let ext = install(&cp, "hello", TENANT, false).await;
        // The first snapshot must hold the worker before the edge is ready.
        assert_eventually!(
            Duration::from_secs(5),
            async || cp.live_workers().await.is_ok_and(|w| !w.is_empty()),
            "the scripted worker in the routing snapshot"
        );
        let edge = Edge::start(&cp, opts).await;
        World {
            cp,
            worker,
            ext,
            edge,
            _heartbeat: heartbeat,
        }
    }

    /// `/api/ext/{registry id}{path}` with a full-permission session.
    pub async fn call(&self, method: &str, path: &str) -> Resp {
        let auth = bearer(&token(serde_json::json!({})));
        self.edge
            .send(
                method,
                &format!("/api/ext/{}{path}", self.ext.registry_id),
                &[("authorization", &auth)],
                b"",
            )
            .await
    }

    /// Audit rows of the installed extension, newest first.
    pub async fn audit_rows(&self) -> Vec<annex_control_plane::store::ExecutionRow> {
        let id = uuid::Uuid::parse_str(&self.ext.registry_id).expect("uuid");
        self.cp
            .store
            .list_executions(TENANT, id, 1000)
            .await
            .expect("list")
    }
}
