//! The worker's view of the control plane's `HostServices`: everything a
//! guest reaches that needs shared state (storage, secrets, scheduler, the
//! host-application bridges, the log stream). Each call carries the
//! execution grant from the `ExecuteRequest`; the control plane checks it, so
//! this worker cannot reach another install's data.
//!
//! [`HostBackend`] is the seam: [`GrpcHostBackend`] is the production
//! implementation (every call with a deadline and bounded messages);
//! [`NoHostBackend`] answers every call with "unavailable" (used when no
//! control plane is configured, e.g. in engine-only tests).
//!
//! The same seam carries the worker's own calls for keyed executions: the
//! idempotency records (claim, renew, complete, release;
//! docs/design/idempotency.md), made with the execution's grant before and
//! after the guest runs, never by the guest. A backend without them (the
//! default methods) answers "unavailable", so keyed calls are refused
//! there rather than run without their record.

use std::collections::BTreeMap;
use std::time::Duration;

use annex_ops::trace_context::Propagate;
use annex_ops::upstream::Upstream;
use annex_proto::AnnexError;
use annex_proto::pb;
use annex_proto::pb::host_services_client::HostServicesClient;
use async_trait::async_trait;
use tonic::service::interceptor::InterceptedService;

/// A failed host-service call, reduced to what the guest-visible mappings
/// branch on: the HTTP-equivalent status of the error code (Alga's runner
/// maps its server's HTTP statuses, see docs/design/alga-compatibility.md,
/// "Storage" and "Host APIs", and the error-code table gives the same
/// statuses), plus a message for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host service failed with status {status}: {message}")]
pub struct HostError {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl HostError {
    pub(crate) fn unavailable(message: impl Into<String>) -> HostError {
        HostError {
            status: 503,
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for HostError {
    fn from(status: tonic::Status) -> HostError {
        let err = AnnexError::from_status(&status);
        HostError {
            status: err.code.http_status().as_u16(),
            message: err.message,
        }
    }
}

/// A storage record as the guest sees it: `value` holds the decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRecord {
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) revision: u64,
}

/// Annex's `storage-v2` options of a put (all unset: a plain `storage_put`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageOptions {
    pub(crate) ttl_seconds: Option<u64>,
    /// The value is JSON text, stored as JSON.
    pub(crate) json: bool,
    pub(crate) schema_version: Option<u32>,
}

/// One entry of a bulk put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageItem {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) if_revision: Option<u64>,
}

/// A relayed host-application response (invoicing, clients, services,
/// ui-proxy): its HTTP status (0 when unreachable) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostApiResponse {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// One `ui-proxy.call-route`, with what the control plane forwards as
/// `x-request-id`, `x-user-id` and `x-user-email`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UiProxyCall {
    pub(crate) route: String,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) request_id: String,
    pub(crate) user_id: String,
    pub(crate) user_email: String,
}

/// The host-application API a relayed call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostApi {
    Invoicing,
    Clients,
    Services,
}

impl HostApi {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HostApi::Invoicing => "invoicing",
            HostApi::Clients => "clients",
            HostApi::Services => "services",
        }
    }
}

/// What a claim of an idempotency record found.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimAnswer {
    /// This worker holds the record: run the call.
    Claimed,
    /// Another call holds it; its lease ends in about `lease_left`.
    InProgress { lease_left: Duration },
    /// An earlier call's response.
    Completed(pb::IdempotentResponse),
    /// The key was used with another request.
    Conflict,
}

/// One idempotency record as this worker names it: the execution's grant
/// (its tenant and install), the key, and this worker's claim token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    pub(crate) grant: String,
    pub(crate) key: String,
    pub(crate) token: String,
}

fn no_records() -> HostError {
    HostError::unavailable("no idempotency records configured")
}

/// Shared-state host services, called with the execution's grant.
#[async_trait]
pub trait HostBackend: Send + Sync + 'static {
    async fn storage_get(
        &self,
        grant: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StorageRecord>, HostError>;
    async fn storage_put(
        &self,
        grant: &str,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        if_revision: Option<u64>,
    ) -> Result<StorageRecord, HostError>;
    /// A put with `storage-v2` options. Hosts that know only Alga's
    /// storage calls take a put without options and refuse the rest (501).
    async fn storage_put_with(
        &self,
        grant: &str,
        namespace: &str,
        item: StorageItem,
        options: StorageOptions,
    ) -> Result<StorageRecord, HostError> {
        if options != StorageOptions::default() {
            return Err(HostError {
                status: 501,
                message: "storage options are not available on this host".into(),
            });
        }
        self.storage_put(grant, namespace, &item.key, item.value, item.if_revision)
            .await
    }
    /// Several puts into one namespace as one transaction (501 on hosts
    /// without it).
    async fn storage_bulk_put(
        &self,
        _grant: &str,
        _namespace: &str,
        _items: Vec<StorageItem>,
        _options: StorageOptions,
    ) -> Result<Vec<StorageRecord>, HostError> {
        Err(HostError {
            status: 501,
            message: "bulk puts are not available on this host".into(),
        })
    }
    /// `Ok(false)` when there was nothing to delete.
    async fn storage_delete(
        &self,
        grant: &str,
        namespace: &str,
        key: &str,
    ) -> Result<bool, HostError>;
    async fn storage_list(
        &self,
        grant: &str,
        namespace: &str,
        cursor: Option<&str>,
    ) -> Result<Vec<StorageRecord>, HostError>;
    async fn get_secrets(&self, grant: &str) -> Result<BTreeMap<String, String>, HostError>;
    async fn list_schedules(&self, grant: &str) -> Result<Vec<pb::ScheduleInfo>, HostError>;
    async fn get_schedule(
        &self,
        grant: &str,
        schedule_id: &str,
    ) -> Result<Option<pb::ScheduleInfo>, HostError>;
    async fn create_schedule(
        &self,
        request: pb::CreateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError>;
    async fn update_schedule(
        &self,
        request: pb::UpdateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError>;
    async fn delete_schedule(
        &self,
        grant: &str,
        schedule_id: &str,
    ) -> Result<pb::ScheduleMutationResult, HostError>;
    async fn get_endpoints(&self, grant: &str) -> Result<Vec<pb::EndpointInfo>, HostError>;
    async fn call_host_api(
        &self,
        grant: &str,
        api: HostApi,
        body_json: String,
    ) -> Result<HostApiResponse, HostError>;
    async fn call_ui_proxy(
        &self,
        grant: &str,
        call: UiProxyCall,
    ) -> Result<HostApiResponse, HostError>;
    async fn publish_logs(&self, events: Vec<pb::LogEvent>) -> Result<(), HostError>;
    /// Claims `record` for a call whose request hashes to `request_hash`,
    /// holding it for `lease` unless renewed.
    async fn idempotency_claim(
        &self,
        _record: &RecordRef,
        _request_hash: &str,
        _lease: Duration,
    ) -> Result<ClaimAnswer, HostError> {
        Err(no_records())
    }
    /// Holds `record` for `lease` from now; false when it is no longer
    /// this claim's.
    async fn idempotency_renew(
        &self,
        _record: &RecordRef,
        _lease: Duration,
    ) -> Result<bool, HostError> {
        Err(no_records())
    }
    /// Completes `record` with `response`; false when it is no longer
    /// this claim's (nothing was written).
    async fn idempotency_complete(
        &self,
        _record: &RecordRef,
        _response: pb::IdempotentResponse,
    ) -> Result<bool, HostError> {
        Err(no_records())
    }
    /// Deletes `record` so the next claim runs the call; false when it is
    /// no longer this claim's.
    async fn idempotency_release(&self, _record: &RecordRef) -> Result<bool, HostError> {
        Err(no_records())
    }
    /// Stores one execution's capture (docs/design/replay.md); hosts
    /// without captures answer "unavailable".
    async fn record_capture(&self, _capture: pb::RecordCaptureRequest) -> Result<(), HostError> {
        Err(HostError::unavailable("no capture store configured"))
    }
}

/// Deadline of a storage, secrets, scheduler or endpoints call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of a host-application relay: the control plane gives the host
/// application 30 s.
pub(crate) const RELAY_TIMEOUT: Duration = Duration::from_secs(35);
/// Deadline of a ui-proxy relay: the control plane gives it 5 s.
pub(crate) const UI_PROXY_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one log publish.
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of an idempotency-record call: short, as the claim is on the
/// request path and a keyed call is refused without it.
pub(crate) const RECORD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest host-service request a guest can cause (the control plane
/// decodes at most this much; its per-API limits are smaller still).
pub(crate) const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest host-service answer taken in.
pub(crate) const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The control plane's `HostServices` over gRPC. Every call has a deadline
/// and bounded messages both ways: a request above [`MAX_REQUEST_BYTES`]
/// fails in the worker, before anything is sent.
#[derive(Clone)]
pub struct GrpcHostBackend {
    /// Every call carries the current span's trace context.
    client: HostServicesClient<InterceptedService<Upstream, Propagate>>,
}

impl GrpcHostBackend {
    /// `channel`: the control plane's replicas, or one fixed channel.
    pub fn new(channel: impl Into<Upstream>) -> GrpcHostBackend {
        GrpcHostBackend {
            client: HostServicesClient::with_interceptor(channel.into(), Propagate)
                .max_encoding_message_size(MAX_REQUEST_BYTES)
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
        }
    }

    fn client(&self) -> HostServicesClient<InterceptedService<Upstream, Propagate>> {
        self.client.clone()
    }
}

/// `message` with a deadline the control plane sees too (`grpc-timeout`).
fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Awaits `call` for at most `timeout`.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, HostError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(HostError::unavailable(format!(
            "the control plane did not answer within {} s",
            timeout.as_secs()
        ))),
    }
}

fn record_from_pb(r: pb::StorageRecord) -> StorageRecord {
    StorageRecord {
        namespace: r.namespace,
        key: r.key,
        value: r.value,
        revision: r.revision,
    }
}

#[async_trait]
impl HostBackend for GrpcHostBackend {
    async fn storage_get(
        &self,
        grant: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StorageRecord>, HostError> {
        let request = pb::StorageGetRequest {
            grant: grant.to_string(),
            namespace: namespace.to_string(),
            key: key.to_string(),
        };
        let mut client = self.client();
        let response = within(
            CALL_TIMEOUT,
            client.storage_get(timed(request, CALL_TIMEOUT)),
        )
        .await?;
        Ok(response.record.map(record_from_pb))
    }

    async fn storage_put(
        &self,
        grant: &str,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        if_revision: Option<u64>,
    ) -> Result<StorageRecord, HostError> {
        let item = StorageItem {
            key: key.to_string(),
            value,
            if_revision,
        };
        self.storage_put_with(grant, namespace, item, StorageOptions::default())
            .await
    }

    async fn storage_put_with(
        &self,
        grant: &str,
        namespace: &str,
        item: StorageItem,
        options: StorageOptions,
    ) -> Result<StorageRecord, HostError> {
        let request = pb::StoragePutRequest {
            grant: grant.to_string(),
            namespace: namespace.to_string(),
            key: item.key,
            value: item.value,
            if_revision: item.if_revision,
            ttl_seconds: options.ttl_seconds,
            json: options.json,
            schema_version: options.schema_version,
        };
        let mut client = self.client();
        let response = within(
            CALL_TIMEOUT,
            client.storage_put(timed(request, CALL_TIMEOUT)),
        )
        .await?;
        Ok(record_from_pb(response))
    }

    async fn storage_bulk_put(
        &self,
        grant: &str,
        namespace: &str,
        items: Vec<StorageItem>,
        options: StorageOptions,
    ) -> Result<Vec<StorageRecord>, HostError> {
        let request = pb::StorageBulkPutRequest {
            grant: grant.to_string(),
            namespace: namespace.to_string(),
            items: items
                .into_iter()
                .map(|i| pb::StorageBulkItem {
                    key: i.key,
                    value: i.value,
                    if_revision: i.if_revision,
                })
                .collect(),
            ttl_seconds: options.ttl_seconds,
            json: options.json,
            schema_version: options.schema_version,
        };
        let mut client = self.client();
        let response = within(
            CALL_TIMEOUT,
            client.storage_bulk_put(timed(request, CALL_TIMEOUT)),
        )
        .await?;
        Ok(response.records.into_iter().map(record_from_pb).collect())
    }

    async fn storage_delete(
        &self,
        grant: &str,
        namespace: &str,
        key: &str,
    ) -> Result<bool, HostError> {
        let request = pb::StorageDeleteRequest {
            grant: grant.to_string(),
            namespace: namespace.to_string(),
            key: key.to_string(),
            if_revision: None,
        };
        let mut client = self.client();
        let response = within(
            CALL_TIMEOUT,
            client.storage_delete(timed(request, CALL_TIMEOUT)),
        )
        .await?;
        Ok(response.deleted)
    }

    async fn storage_list(
        &self,
        grant: &str,
        namespace: &str,
        cursor: Option<&str>,
    ) -> Result<Vec<StorageRecord>, HostError> {
        let request = pb::StorageListRequest {
            grant: grant.to_string(),
            namespace: namespace.to_string(),
            cursor: cursor.unwrap_or_default().to_string(),
            // 0: the server's default page (25, as Alga's runner gets).
            limit: 0,
            key_prefix: String::new(),
        };
        let mut client = self.client();
        let response = within(
            CALL_TIMEOUT,
            client.storage_list(timed(request, CALL_TIMEOUT)),
        )
        .await?;
        Ok(response.records.into_iter().map(record_from_pb).collect())
    }

    async fn get_secrets(&self, grant: &str) -> Result<BTreeMap<String, String>, HostError> {
        let request = pb::GetSecretsRequest {
            grant: grant.to_string(),
        };
        let mut client = self.client();
        let response = within(
            CALL_TIMEOUT,
            client.get_secrets(timed(request, CALL_TIMEOUT)),
        )
        .await?;
        Ok(response.values.into_iter().collect())
    }

    async fn list_schedules(&self, grant: &str) -> Result<Vec<pb::ScheduleInfo>, HostError> {
        let request = pb::ListSchedulesRequest {
            grant: grant.to_string(),
        };
        let mut client = self.client();
        let response = within(
            CALL_TIMEOUT,
            client.list_schedules(timed(request, CALL_TIMEOUT)),
        )
        .await?;
        Ok(response.schedules)
    }

    async fn get_schedule(
        &self,
        grant: &str,
        schedule_id: &str,
    ) -> Result<Option<pb::ScheduleInfo>, HostError> {
        let request = pb::GetScheduleRequest {
            grant: grant.to_string(),
            schedule_id: schedule_id.to_string(),
        };
        let mut client = self.client();
        let response = within(
            CALL_TIMEOUT,
            client.get_schedule(timed(request, CALL_TIMEOUT)),
        )
        .await?;
        Ok(response.schedule)
    }

    async fn create_schedule(
        &self,
        request: pb::CreateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        let mut client = self.client();
        within(
            CALL_TIMEOUT,
            client.create_schedule(timed(request, CALL_TIMEOUT)),
        )
        .await
    }

    async fn update_schedule(
        &self,
        request: pb::UpdateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        let mut client = self.client();
        within(
            CALL_TIMEOUT,
            client.update_schedule(timed(request, CALL_TIMEOUT)),
        )
        .await
    }

    async fn delete_schedule(
        &self,
        grant: &str,
        schedule_id: &str,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        let request = pb::DeleteScheduleRequest {
            grant: grant.to_string(),
            schedule_id: schedule_id.to_string(),
        };
        let mut client = self.client();
        within(
            CALL_TIMEOUT,
            client.delete_schedule(timed(request, CALL_TIMEOUT)),
        )
        .await
    }

    async fn get_endpoints(&self, grant: &str) -> Result<Vec<pb::EndpointInfo>, HostError> {
        let request = pb::GetEndpointsRequest {
            grant: grant.to_string(),
        };
        let mut client = self.client();
        let response = within(
            CALL_TIMEOUT,
            client.get_endpoints(timed(request, CALL_TIMEOUT)),
        )
        .await?;
        Ok(response.endpoints)
    }

    async fn call_host_api(
        &self,
        grant: &str,
        api: HostApi,
        body_json: String,
    ) -> Result<HostApiResponse, HostError> {
        let request = pb::HostApiRequest {
            grant: grant.to_string(),
            api: api.as_str().to_string(),
            body_json,
        };
        let mut client = self.client();
        let response = within(
            RELAY_TIMEOUT,
            client.call_host_api(timed(request, RELAY_TIMEOUT)),
        )
        .await?;
        Ok(HostApiResponse {
            status: u16::try_from(response.status).unwrap_or(0),
            body: response.body,
        })
    }

    async fn call_ui_proxy(
        &self,
        grant: &str,
        call: UiProxyCall,
    ) -> Result<HostApiResponse, HostError> {
        let request = pb::UiProxyRequest {
            grant: grant.to_string(),
            route: call.route,
            payload: call.payload,
            request_id: call.request_id,
            user_id: call.user_id,
            user_email: call.user_email,
        };
        let mut client = self.client();
        let response = within(
            UI_PROXY_TIMEOUT,
            client.call_ui_proxy(timed(request, UI_PROXY_TIMEOUT)),
        )
        .await?;
        Ok(HostApiResponse {
            status: u16::try_from(response.status).unwrap_or(0),
            body: response.body,
        })
    }

    async fn publish_logs(&self, events: Vec<pb::LogEvent>) -> Result<(), HostError> {
        let mut client = self.client();
        within(
            PUBLISH_TIMEOUT,
            client.publish_logs(timed(pb::LogBatch { events }, PUBLISH_TIMEOUT)),
        )
        .await?;
        Ok(())
    }

    async fn idempotency_claim(
        &self,
        record: &RecordRef,
        request_hash: &str,
        lease: Duration,
    ) -> Result<ClaimAnswer, HostError> {
        use pb::idempotency_claim_response::State;
        let request = pb::IdempotencyClaimRequest {
            grant: record.grant.clone(),
            key: record.key.clone(),
            request_hash: request_hash.to_owned(),
            claim_token: record.token.clone(),
            lease_ms: millis(lease),
        };
        let mut client = self.client();
        let response = within(
            RECORD_TIMEOUT,
            client.idempotency_claim(timed(request, RECORD_TIMEOUT)),
        )
        .await?;
        Ok(match response.state() {
            State::Claimed => ClaimAnswer::Claimed,
            State::InProgress => ClaimAnswer::InProgress {
                lease_left: lease_left(response.lease_expires_at.as_ref()),
            },
            State::Completed => ClaimAnswer::Completed(response.response.unwrap_or_default()),
            State::Conflict => ClaimAnswer::Conflict,
            State::Unspecified => {
                return Err(HostError::unavailable(
                    "the control plane answered a claim without a state",
                ));
            }
        })
    }

    async fn idempotency_renew(
        &self,
        record: &RecordRef,
        lease: Duration,
    ) -> Result<bool, HostError> {
        let request = lease_request(record, lease);
        let mut client = self.client();
        let response = within(
            RECORD_TIMEOUT,
            client.idempotency_renew(timed(request, RECORD_TIMEOUT)),
        )
        .await?;
        Ok(response.owned)
    }

    async fn idempotency_complete(
        &self,
        record: &RecordRef,
        response: pb::IdempotentResponse,
    ) -> Result<bool, HostError> {
        let request = pb::IdempotencyCompleteRequest {
            grant: record.grant.clone(),
            key: record.key.clone(),
            claim_token: record.token.clone(),
            response: Some(response),
        };
        let mut client = self.client();
        let response = within(
            RECORD_TIMEOUT,
            client.idempotency_complete(timed(request, RECORD_TIMEOUT)),
        )
        .await?;
        Ok(response.owned)
    }

    async fn record_capture(&self, capture: pb::RecordCaptureRequest) -> Result<(), HostError> {
        let mut client = self.client();
        within(
            PUBLISH_TIMEOUT,
            client.record_capture(timed(capture, PUBLISH_TIMEOUT)),
        )
        .await?;
        Ok(())
    }

    async fn idempotency_release(&self, record: &RecordRef) -> Result<bool, HostError> {
        let request = lease_request(record, Duration::ZERO);
        let mut client = self.client();
        let response = within(
            RECORD_TIMEOUT,
            client.idempotency_release(timed(request, RECORD_TIMEOUT)),
        )
        .await?;
        Ok(response.owned)
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn lease_request(record: &RecordRef, lease: Duration) -> pb::IdempotencyLeaseRequest {
    pb::IdempotencyLeaseRequest {
        grant: record.grant.clone(),
        key: record.key.clone(),
        claim_token: record.token.clone(),
        lease_ms: millis(lease),
    }
}

/// How long until a lease the control plane reported ends, by this
/// machine's clock (a hint for when to retry, nothing more).
fn lease_left(expires: Option<&pb::Timestamp>) -> Duration {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let left = expires.map_or(0, |t| t.unix_ms.saturating_sub(now_ms));
    Duration::from_millis(u64::try_from(left).unwrap_or(0))
}

/// A backend for a worker without a control plane: every call is
/// unavailable (guests see `internal`-class errors), logs are dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHostBackend;

#[async_trait]
impl HostBackend for NoHostBackend {
    async fn storage_get(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<StorageRecord>, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn storage_put(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Vec<u8>,
        _: Option<u64>,
    ) -> Result<StorageRecord, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn storage_delete(&self, _: &str, _: &str, _: &str) -> Result<bool, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn storage_list(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<Vec<StorageRecord>, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn get_secrets(&self, _: &str) -> Result<BTreeMap<String, String>, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn list_schedules(&self, _: &str) -> Result<Vec<pb::ScheduleInfo>, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn get_schedule(&self, _: &str, _: &str) -> Result<Option<pb::ScheduleInfo>, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn create_schedule(
        &self,
        _: pb::CreateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn update_schedule(
        &self,
        _: pb::UpdateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn delete_schedule(
        &self,
        _: &str,
        _: &str,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn get_endpoints(&self, _: &str) -> Result<Vec<pb::EndpointInfo>, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn call_host_api(
        &self,
        _: &str,
        _: HostApi,
        _: String,
    ) -> Result<HostApiResponse, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn call_ui_proxy(&self, _: &str, _: UiProxyCall) -> Result<HostApiResponse, HostError> {
        Err(HostError::unavailable("no host services configured"))
    }
    async fn publish_logs(&self, _: Vec<pb::LogEvent>) -> Result<(), HostError> {
        Ok(())
    }
}
