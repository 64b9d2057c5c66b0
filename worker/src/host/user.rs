//! `alga:extension/user` and `user-v2`, served from the request's `user`
//! (no server call). Without `cap:user.read`: `not-allowed`; with no user
//! in the request (scheduled runs): `not-available`. `tenant-id` comes from
//! the context; v2's additional fields are sorted by key.

use crate::bindings::alga::extension::{user, user_v2};
use crate::bindings::types::{UserData, UserDataV2, UserError};
use crate::capabilities::Capability;
use crate::host::HostState;
use annex_proto::pb;

impl HostState {
    fn user(&self) -> Result<&pb::User, UserError> {
        if !self.caps.has(Capability::UserRead) {
            return Err(UserError::NotAllowed);
        }
        self.call.user.as_ref().ok_or(UserError::NotAvailable)
    }
}

impl user::Host for HostState {
    async fn get_user(&mut self) -> wasmtime::Result<Result<UserData, UserError>> {
        let tenant_id = self.call.tenant_id.clone();
        Ok(self.user().map(|u| UserData {
            tenant_id,
            client_name: u.client_name.clone(),
            user_id: u.user_id.clone(),
            user_email: u.user_email.clone(),
            user_name: u.user_name.clone(),
            user_type: u.user_type.clone(),
        }))
    }
}

impl user_v2::Host for HostState {
    async fn get_user(&mut self) -> wasmtime::Result<Result<UserDataV2, UserError>> {
        let tenant_id = self.call.tenant_id.clone();
        Ok(self.user().map(|u| {
            let mut additional_fields: Vec<(String, String)> = u
                .additional_fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            additional_fields.sort();
            UserDataV2 {
                tenant_id,
                client_name: u.client_name.clone(),
                user_id: u.user_id.clone(),
                user_email: u.user_email.clone(),
                user_name: u.user_name.clone(),
                user_type: u.user_type.clone(),
                client_id: u.client_id.clone(),
                additional_fields,
            }
        }))
    }
}
