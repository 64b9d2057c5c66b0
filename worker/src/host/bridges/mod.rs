//! The host-application bridges: `invoicing`, `clients`, `services` and
//! `ui-proxy` (docs/design/alga-compatibility.md, "Host APIs"), one module
//! per bridge. The worker builds Alga's request bodies and the control
//! plane relays them (`HostServices.CallHostApi` / `CallUiProxy`) with the
//! host application's URL and credentials, which workers never hold.
//! Gating and response mapping are the runner's; this module holds what
//! the bridges share.

mod invoicing;
mod reads;
mod ui_proxy;

use serde_json::{Value, json};

use crate::backend::{HostApi, HostApiResponse, HostError};
use crate::host::HostState;

impl HostState {
    async fn relay(&mut self, api: HostApi, body: Value) -> Result<HostApiResponse, HostError> {
        self.services
            .backend
            .call_host_api(&self.call.grant, api, body.to_string())
            .await
    }

    /// Alga sends `user` only when the execution has one.
    fn bridge_user(&self) -> Option<Value> {
        self.call
            .user
            .as_ref()
            .map(|u| json!({ "userId": u.user_id, "userType": u.user_type }))
    }
}
