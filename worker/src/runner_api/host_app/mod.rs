//! Host calls of runner-API executions, made the way Alga's runner makes
//! them (docs/design/alga-compatibility.md, "Host APIs"): storage,
//! scheduler, invoicing, clients and services are `POST {base}/api/
//! internal/ext-{api}/install/{installId}` with `{"operation": …}` bodies
//! and `x-runner-auth`; ui-proxy goes to `UI_PROXY_BASE_URL` with the
//! install's `api_key` secret; secrets are the execution's opened envelope.
//!
//! [`HostApp`] is the process-wide client and settings; [`ExecutionHost`]
//! is one execution's [`HostBackend`] (its ids, user and secrets), so the
//! host interfaces stay as they are and the grant they pass is ignored.
//! Payloads are bounded as on the worker's own host calls (requests to
//! 4 MiB, answers to 16 MiB).
//! Guest logs are already `tracing` events on target `ext` (the worker's
//! own log); nothing else receives them. The per-API mappings live in
//! [`storage`], [`scheduler`] and [`ui_proxy`].

mod scheduler;
mod storage;
mod ui_proxy;

use std::collections::BTreeMap;
use std::sync::Arc;

use annex_proto::pb;
use async_trait::async_trait;
use serde_json::Value;

use crate::backend::{
    HostApi, HostApiResponse, HostBackend, HostError, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    StorageItem, StorageOptions, StorageRecord, UiProxyCall,
};
use crate::runner_api::settings::HostAppSettings;

/// Alga's host application, as runner-API executions reach it.
pub(crate) struct HostApp {
    settings: HostAppSettings,
    client: reqwest::Client,
}

impl HostApp {
    pub(crate) fn new(settings: HostAppSettings, client: reqwest::Client) -> HostApp {
        HostApp { settings, client }
    }

    /// One internal host-API call: `body` plus `"operation": op` to
    /// `ext-{api}` of `install`. A missing base or token, and a transport
    /// failure, are unavailable (the guest sees `internal`).
    async fn post(
        &self,
        api: &str,
        install: &str,
        body: String,
    ) -> Result<HostApiResponse, HostError> {
        if let Some(refused) = too_large(body.len()) {
            return Err(refused);
        }
        let (Some(base), Some(token)) = (&self.settings.base, &self.settings.token) else {
            return Err(HostError::unavailable(
                "the host application's base URL or token is not configured",
            ));
        };
        let mut url = url::Url::parse(base)
            .map_err(|e| HostError::unavailable(format!("host application URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| HostError::unavailable("host application URL has no path"))?
            .pop_if_empty()
            .extend(["api", "internal", &format!("ext-{api}"), "install", install]);
        let sent = self
            .client
            .post(url)
            .timeout(self.settings.timeout)
            .header("content-type", "application/json")
            .header("x-runner-auth", token)
            .body(body)
            .send()
            .await;
        read(sent, api).await
    }
}

/// The status and body of a host-application answer.
async fn read(
    sent: Result<reqwest::Response, reqwest::Error>,
    what: &str,
) -> Result<HostApiResponse, HostError> {
    let response = sent.map_err(|e| {
        tracing::warn!(error = %e, api = what, "calling the host application");
        HostError::unavailable(format!("calling the host application: {e}"))
    })?;
    let status = response.status().as_u16();
    let mut response = response;
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            tracing::warn!(error = %e, api = what, "reading a host application answer");
            HostError::unavailable(format!("reading the host application's answer: {e}"))
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            tracing::warn!(api = what, "host application answer too large");
            return Err(HostError::unavailable(format!(
                "the host application's answer exceeds {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HostApiResponse { status, body })
}

/// A request body above the worker's bound on host-call payloads.
fn too_large(bytes: usize) -> Option<HostError> {
    (bytes > MAX_REQUEST_BYTES).then(|| HostError {
        status: 413,
        message: format!("host call payload of {bytes} bytes exceeds {MAX_REQUEST_BYTES}"),
    })
}

/// A non-2xx answer as the status the host interfaces map.
fn failed(response: &HostApiResponse) -> HostError {
    let text = String::from_utf8_lossy(&response.body);
    HostError {
        status: response.status,
        message: text.chars().take(512).collect(),
    }
}

/// A 2xx answer that is not the JSON expected.
fn malformed(what: &str) -> HostError {
    HostError {
        status: 502,
        message: format!("malformed {what} answer from the host application"),
    }
}

/// The JSON of a 2xx answer; any other answer is its status.
fn json_ok(response: &HostApiResponse, what: &str) -> Result<Value, HostError> {
    if !(200..300).contains(&response.status) {
        return Err(failed(response));
    }
    serde_json::from_slice(&response.body).map_err(|_| malformed(what))
}

/// One runner-API execution's host services.
pub(crate) struct ExecutionHost {
    pub(crate) app: Arc<HostApp>,
    pub(crate) tenant: String,
    pub(crate) extension: String,
    pub(crate) install: Option<String>,
    pub(crate) version: Option<String>,
    /// The opened secret envelope (empty without one).
    pub(crate) secrets: BTreeMap<String, String>,
}

impl ExecutionHost {
    /// The install every internal host API is keyed by (the interfaces
    /// refuse calls without one before they get here).
    fn install(&self) -> Result<&str, HostError> {
        self.install
            .as_deref()
            .filter(|i| !i.trim().is_empty())
            .ok_or_else(|| HostError {
                status: 403,
                message: "install_id missing".into(),
            })
    }

    async fn call(&self, api: &str, body: Value) -> Result<HostApiResponse, HostError> {
        self.app.post(api, self.install()?, body.to_string()).await
    }
}

#[async_trait]
impl HostBackend for ExecutionHost {
    async fn storage_get(
        &self,
        _grant: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StorageRecord>, HostError> {
        let r = self.call("storage", storage::get(namespace, key)).await?;
        storage::read_get(&r)
    }

    async fn storage_put(
        &self,
        _grant: &str,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        if_revision: Option<u64>,
    ) -> Result<StorageRecord, HostError> {
        let body = storage::put(namespace, key, &value, if_revision);
        let r = self.call("storage", body).await?;
        storage::read_put(&r, namespace, key, value)
    }

    async fn storage_put_with(
        &self,
        _grant: &str,
        namespace: &str,
        item: StorageItem,
        options: StorageOptions,
    ) -> Result<StorageRecord, HostError> {
        let body = storage::put_with(namespace, &item, options)?;
        let r = self.call("storage", body).await?;
        storage::read_put(&r, namespace, &item.key, item.value)
    }

    async fn storage_bulk_put(
        &self,
        _grant: &str,
        namespace: &str,
        items: Vec<StorageItem>,
        options: StorageOptions,
    ) -> Result<Vec<StorageRecord>, HostError> {
        let body = storage::bulk_put(namespace, &items, options)?;
        let r = self.call("storage", body).await?;
        storage::read_bulk_put(&r, namespace, items)
    }

    async fn storage_delete(
        &self,
        _grant: &str,
        namespace: &str,
        key: &str,
    ) -> Result<bool, HostError> {
        let r = self
            .call("storage", storage::delete(namespace, key))
            .await?;
        storage::read_delete(&r)
    }

    async fn storage_list(
        &self,
        _grant: &str,
        namespace: &str,
        cursor: Option<&str>,
    ) -> Result<Vec<StorageRecord>, HostError> {
        let r = self
            .call("storage", storage::list(namespace, cursor))
            .await?;
        storage::read_list(&r)
    }

    async fn get_secrets(&self, _grant: &str) -> Result<BTreeMap<String, String>, HostError> {
        Ok(self.secrets.clone())
    }

    async fn list_schedules(&self, _grant: &str) -> Result<Vec<pb::ScheduleInfo>, HostError> {
        let r = self.call("scheduler", scheduler::op("list")).await?;
        scheduler::read_list(&r)
    }

    async fn get_schedule(
        &self,
        _grant: &str,
        schedule_id: &str,
    ) -> Result<Option<pb::ScheduleInfo>, HostError> {
        let r = self.call("scheduler", scheduler::get(schedule_id)).await?;
        scheduler::read_get(&r)
    }

    async fn create_schedule(
        &self,
        request: pb::CreateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        let r = self.call("scheduler", scheduler::create(&request)).await?;
        scheduler::read_mutation(&r)
    }

    async fn update_schedule(
        &self,
        request: pb::UpdateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        let r = self.call("scheduler", scheduler::update(&request)).await?;
        scheduler::read_mutation(&r)
    }

    async fn delete_schedule(
        &self,
        _grant: &str,
        schedule_id: &str,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        let r = self
            .call("scheduler", scheduler::delete(schedule_id))
            .await?;
        scheduler::read_mutation(&r)
    }

    async fn get_endpoints(&self, _grant: &str) -> Result<Vec<pb::EndpointInfo>, HostError> {
        let r = self
            .call("scheduler", scheduler::op("getEndpoints"))
            .await?;
        scheduler::read_endpoints(&r)
    }

    /// The interfaces built Alga's body (with its `operation`); it goes as is.
    async fn call_host_api(
        &self,
        _grant: &str,
        api: HostApi,
        body_json: String,
    ) -> Result<HostApiResponse, HostError> {
        self.app
            .post(api.as_str(), self.install()?, body_json)
            .await
    }

    async fn call_ui_proxy(
        &self,
        _grant: &str,
        call: UiProxyCall,
    ) -> Result<HostApiResponse, HostError> {
        ui_proxy::call(self, call).await
    }

    async fn publish_logs(&self, _events: Vec<pb::LogEvent>) -> Result<(), HostError> {
        Ok(())
    }
}
