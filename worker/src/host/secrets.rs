//! `alga:extension/secrets`. The install's opened secrets come from
//! `HostServices.GetSecrets` on the first read and are kept for the rest of
//! the execution. Gating (docs/design/alga-compatibility.md,
//! "Capabilities"): `get` without `cap:secrets.get` is
//! `denied`; an install without secrets, or an absent key, is `missing`;
//! `list-keys` without the capability is an empty list. A failed fetch is
//! `internal` (Alga fails the whole request before the guest runs instead).

use std::collections::BTreeMap;

use crate::bindings::alga::extension::secrets;
use crate::bindings::types::SecretError;
use crate::capabilities::Capability;
use crate::host::HostState;

impl HostState {
    async fn secret_map(&mut self) -> Result<&BTreeMap<String, String>, SecretError> {
        if self.call.secrets_version.is_empty() {
            return Err(SecretError::Missing);
        }
        if self.secrets.is_none() {
            let map = self
                .services
                .backend
                .get_secrets(&self.call.grant)
                .await
                .map_err(|error| {
                    tracing::warn!(%error, tenant = %self.call.tenant_id, "fetching install secrets failed");
                    SecretError::Internal
                })?;
            self.secrets = Some(map);
        }
        self.secrets.as_ref().ok_or(SecretError::Internal)
    }
}

impl secrets::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<String, SecretError>> {
        if !self.caps.has(Capability::SecretsGet) {
            return Ok(Err(SecretError::Denied));
        }
        Ok(self
            .secret_map()
            .await
            .and_then(|m| m.get(&key).cloned().ok_or(SecretError::Missing)))
    }

    async fn list_keys(&mut self) -> wasmtime::Result<Vec<String>> {
        if !self.caps.has(Capability::SecretsGet) {
            return Ok(Vec::new());
        }
        Ok(self
            .secret_map()
            .await
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }
}
