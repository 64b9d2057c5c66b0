//! Extension bundles and publishing: the hello UI the browser test drives,
//! packing a manifest, a component and UI files into a bundle, and
//! publishing it signed for [`PUBLISHER`] and installing it for a tenant.

use std::path::Path;

use annex_bundle::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_ops::Role;
use annex_proto::pb;
use tonic::transport::Channel;

use super::{Installed, PUBLISHER, Stack, TENANT};

/// The UI the Chromium test drives: a button that calls `GET /hello`
/// through the bridge and shows the answer.
pub const UI_INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>hello ui</title></head>
<body>
<button id="call">Call handler</button>
<pre id="out">idle</pre>
<script src="/ext-bridge/sdk.js"></script>
<script src="app.js"></script>
</body></html>
"#;

pub const UI_APP: &str = r#"var bridge = AnnexSdk.createBridge();
var out = document.getElementById('out');
document.getElementById('call').addEventListener('click', function () {
  out.textContent = 'calling';
  AnnexSdk.callHandlerJson(bridge, '/hello').then(function (r) {
    out.textContent = 'answer: ' + r.message + ' for ' + r.tenantId;
  }).catch(function (e) {
    out.textContent = 'error: ' + e.message;
  });
});
bridge.ready();
out.textContent = 'ready';
"#;

pub(super) fn pack(
    dir: &Path,
    manifest: &serde_json::Value,
    component: &[u8],
    ui: &[(&str, &[u8])],
) -> Vec<u8> {
    let root = dir.join(format!(
        "bundle-{}",
        manifest["name"].as_str().unwrap_or("x")
    ));
    let write = |rel: &str, data: &[u8]| {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(path, data).unwrap_or_else(|e| panic!("write {rel}: {e}"));
    };
    write("manifest.json", manifest.to_string().as_bytes());
    write("dist/main.wasm", component);
    for (rel, data) in ui {
        write(&format!("ui/{rel}"), data);
    }
    annex_bundle::archive::pack_dir(&root).unwrap_or_else(|e| panic!("pack: {e}"))
}

impl Stack {
    /// Publishes a signed bundle of `component` under `manifest` and installs
    /// it for [`TENANT`].
    pub async fn publish_and_install(
        &self,
        manifest: &serde_json::Value,
        component: &[u8],
    ) -> Installed {
        let bundle = pack(self.dir.path(), manifest, component, &[]);
        let operator = self.channel(Role::Operator).await;
        publish_and_install(&operator, &self.publisher_key, manifest, &bundle).await
    }

    /// Publishes a signed bundle of `component` with the UI files `ui`
    /// (paths under `ui/`) and installs it for [`TENANT`].
    pub async fn publish_and_install_with_ui(
        &self,
        manifest: &serde_json::Value,
        component: &[u8],
        ui: &[(&str, &[u8])],
    ) -> Installed {
        let bundle = pack(self.dir.path(), manifest, component, ui);
        let operator = self.channel(Role::Operator).await;
        publish_and_install(&operator, &self.publisher_key, manifest, &bundle).await
    }

    /// Publishes a signed bundle of `component` under `manifest` without
    /// installing it (a further version of an installed extension).
    pub async fn publish(&self, manifest: &serde_json::Value, component: &[u8]) {
        let bundle = pack(self.dir.path(), manifest, component, &[]);
        let operator = self.channel(Role::Operator).await;
        publish(&operator, &self.publisher_key, manifest, &bundle).await;
    }

    /// Installs an already published extension (registry id or slug) for another tenant.
    pub async fn install_for(&self, tenant: &str, extension: &str) -> Installed {
        let info = pb::installs_client::InstallsClient::new(self.channel(Role::Operator).await)
            .install(pb::InstallRequest {
                tenant_id: tenant.into(),
                extension: extension.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("installing {extension} for {tenant}: {e}"))
            .into_inner();
        Installed {
            registry_id: info.registry_id,
            install_id: info.install_id,
            content_hash: info.content_hash,
            slug: format!("{}.{}", info.publisher, info.name)
                .to_lowercase()
                .replace(' ', "%20"),
        }
    }
}

/// Publishes `bytes` signed with `key` (which the control plane must trust
/// for [`PUBLISHER`]) and installs it for [`TENANT`].
pub async fn publish_and_install(
    operator: &Channel,
    key: &KeyPair,
    manifest: &serde_json::Value,
    bytes: &[u8],
) -> Installed {
    let name = manifest["name"].as_str().unwrap_or_default();
    publish(operator, key, manifest, bytes).await;
    let slug = format!("{PUBLISHER}.{name}").to_lowercase();
    let info = pb::installs_client::InstallsClient::new(operator.clone())
        .install(pb::InstallRequest {
            tenant_id: TENANT.into(),
            extension: slug.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("installing {name}: {e}"))
        .into_inner();
    Installed {
        registry_id: info.registry_id,
        install_id: info.install_id,
        content_hash: info.content_hash,
        slug: slug.replace(' ', "%20"),
    }
}

/// Publishes `bytes` signed with `key` for [`PUBLISHER`].
pub async fn publish(
    operator: &Channel,
    key: &KeyPair,
    manifest: &serde_json::Value,
    bytes: &[u8],
) {
    let name = manifest["name"].as_str().unwrap_or_default();
    let version = manifest["version"].as_str().unwrap_or_default();
    let signature =
        annex_bundle::signing::sign_bundle(key, &ContentHash::of(bytes), PUBLISHER, name, version);
    let mut parts = vec![pb::PublishRequest {
        part: Some(pb::publish_request::Part::Header(pb::PublishHeader {
            signature,
            ..Default::default()
        })),
    }];
    parts.extend(bytes.chunks(64 * 1024).map(|c| pb::PublishRequest {
        part: Some(pb::publish_request::Part::Chunk(c.to_vec())),
    }));
    pb::registry_client::RegistryClient::new(operator.clone())
        .publish(futures::stream::iter(parts))
        .await
        .unwrap_or_else(|e| panic!("publishing {name}: {e}"));
}
