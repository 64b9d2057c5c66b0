//! `alga:extension/context` and Annex's `alga:extension/config`.
//!
//! `get-context` needs `cap:context.read`, which every request holds by
//! default; without it Alga's host function panics, here the call traps.
//! `config` exposes the install configuration (a deliberate addition:
//! Alga never shows config to guests).

use crate::bindings::alga::extension::{config, context};
use crate::bindings::types::ContextData;
use crate::capabilities::Capability;
use crate::host::HostState;

impl context::Host for HostState {
    async fn get_context(&mut self) -> wasmtime::Result<ContextData> {
        if !self.caps.has(Capability::ContextRead) {
            wasmtime::bail!("cap:context.read not granted");
        }
        let c = &self.call;
        Ok(ContextData {
            request_id: c.request_id.clone(),
            tenant_id: c.tenant_id.clone(),
            extension_id: c.extension_id.clone(),
            install_id: c.install_id.clone(),
            version_id: c.version_id.clone(),
        })
    }
}

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.call.config.get(&key).cloned())
    }

    async fn list(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .call
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
