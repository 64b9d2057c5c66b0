//! The host services of captured and replayed executions.
//! [`RecordingBackend`] passes every call to the worker's real backend and
//! writes the call and its answer to the tape; [`PlayingBackend`] answers
//! from the tape and reaches nothing. Calls whose arguments are protobuf
//! messages (scheduler, endpoints, relays) are kept as their encoded
//! bytes, without the grant. Log publishing is not the guest's and is
//! neither recorded nor replayed.

use std::collections::BTreeMap;
use std::sync::Arc;

use annex_proto::pb;
use async_trait::async_trait;
use prost::Message;

use super::tape::{Answer, Ask, Bytes, Record};
use super::{Player, Recorder};
use crate::backend::{
    HostApi, HostApiResponse, HostBackend, HostError, StorageItem, StorageOptions, StorageRecord,
    UiProxyCall,
};

fn to_tape(r: &StorageRecord) -> Record {
    Record {
        namespace: r.namespace.clone(),
        key: r.key.clone(),
        value: Bytes::of(&r.value),
        revision: r.revision,
    }
}

fn from_tape(r: Record) -> StorageRecord {
    StorageRecord {
        namespace: r.namespace,
        key: r.key,
        value: r.value.decode(),
        revision: r.revision,
    }
}

fn answer<T>(result: &Result<T, HostError>, ok: impl FnOnce(&T) -> Answer) -> Answer {
    match result {
        Ok(v) => ok(v),
        Err(e) => Answer::Failed {
            status: e.status,
            message: e.message.clone(),
        },
    }
}

fn message(name: &str, request: &impl Message) -> Ask {
    Ask::Message {
        name: name.to_string(),
        request: Bytes::of(&request.encode_to_vec()),
    }
}

fn put_ask(namespace: &str, item: &StorageItem, options: StorageOptions) -> Ask {
    Ask::StoragePut {
        namespace: namespace.to_string(),
        key: item.key.clone(),
        value: Bytes::of(&item.value),
        if_revision: item.if_revision,
        ttl_seconds: options.ttl_seconds,
        json: options.json,
        schema_version: options.schema_version,
    }
}

fn schedule_ask(name: &str, id: &str) -> Ask {
    message(
        name,
        &pb::GetScheduleRequest {
            grant: String::new(),
            schedule_id: id.to_string(),
        },
    )
}

fn host_api_ask(api: HostApi, body_json: &str) -> Ask {
    message(
        "host api",
        &pb::HostApiRequest {
            grant: String::new(),
            api: api.as_str().to_string(),
            body_json: body_json.to_string(),
        },
    )
}

fn ui_proxy_ask(call: &UiProxyCall) -> Ask {
    message(
        "ui proxy",
        &pb::UiProxyRequest {
            grant: String::new(),
            route: call.route.clone(),
            payload: call.payload.clone(),
            request_id: call.request_id.clone(),
            user_id: call.user_id.clone(),
            user_email: call.user_email.clone(),
        },
    )
}

fn host_api_answer(r: &HostApiResponse) -> Answer {
    Answer::Message(Bytes::of(
        &pb::HostApiResponse {
            status: u32::from(r.status),
            body: r.body.clone(),
        }
        .encode_to_vec(),
    ))
}

fn encoded(m: &impl Message) -> Answer {
    Answer::Message(Bytes::of(&m.encode_to_vec()))
}

/// The worker's backend, with every guest call written to a tape.
pub(crate) struct RecordingBackend {
    pub(crate) inner: Arc<dyn HostBackend>,
    pub(crate) recorder: Arc<Recorder>,
}

#[async_trait]
impl HostBackend for RecordingBackend {
    async fn storage_get(
        &self,
        grant: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StorageRecord>, HostError> {
        let result = self.inner.storage_get(grant, namespace, key).await;
        let ask = Ask::StorageGet {
            namespace: namespace.to_string(),
            key: key.to_string(),
        };
        self.recorder.call(
            ask,
            answer(&result, |r| Answer::Record(r.as_ref().map(to_tape))),
        );
        result
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
        let ask = put_ask(namespace, &item, options);
        let result = self
            .inner
            .storage_put_with(grant, namespace, item, options)
            .await;
        self.recorder
            .call(ask, answer(&result, |r| Answer::Record(Some(to_tape(r)))));
        result
    }

    async fn storage_bulk_put(
        &self,
        grant: &str,
        namespace: &str,
        items: Vec<StorageItem>,
        options: StorageOptions,
    ) -> Result<Vec<StorageRecord>, HostError> {
        let ask = bulk_ask(namespace, &items, options);
        let result = self
            .inner
            .storage_bulk_put(grant, namespace, items, options)
            .await;
        self.recorder.call(
            ask,
            answer(&result, |r| {
                Answer::Records(r.iter().map(to_tape).collect())
            }),
        );
        result
    }

    async fn storage_delete(
        &self,
        grant: &str,
        namespace: &str,
        key: &str,
    ) -> Result<bool, HostError> {
        let result = self.inner.storage_delete(grant, namespace, key).await;
        let ask = Ask::StorageDelete {
            namespace: namespace.to_string(),
            key: key.to_string(),
        };
        self.recorder
            .call(ask, answer(&result, |d| Answer::Deleted(*d)));
        result
    }

    async fn storage_list(
        &self,
        grant: &str,
        namespace: &str,
        cursor: Option<&str>,
    ) -> Result<Vec<StorageRecord>, HostError> {
        let result = self.inner.storage_list(grant, namespace, cursor).await;
        let ask = Ask::StorageList {
            namespace: namespace.to_string(),
            cursor: cursor.map(str::to_string),
        };
        self.recorder.call(
            ask,
            answer(&result, |r| {
                Answer::Records(r.iter().map(to_tape).collect())
            }),
        );
        result
    }

    async fn get_secrets(&self, grant: &str) -> Result<BTreeMap<String, String>, HostError> {
        let result = self.inner.get_secrets(grant).await;
        if let Ok(values) = &result {
            self.recorder.secrets(values);
        }
        self.recorder.call(
            Ask::Secrets,
            answer(&result, |m| Answer::SecretKeys(m.keys().cloned().collect())),
        );
        result
    }

    async fn list_schedules(&self, grant: &str) -> Result<Vec<pb::ScheduleInfo>, HostError> {
        let result = self.inner.list_schedules(grant).await;
        let ask = message("scheduler list", &pb::ListSchedulesRequest::default());
        self.recorder.call(
            ask,
            answer(&result, |s| {
                encoded(&pb::ListSchedulesResponse {
                    schedules: s.clone(),
                })
            }),
        );
        result
    }

    async fn get_schedule(
        &self,
        grant: &str,
        schedule_id: &str,
    ) -> Result<Option<pb::ScheduleInfo>, HostError> {
        let result = self.inner.get_schedule(grant, schedule_id).await;
        self.recorder.call(
            schedule_ask("scheduler get", schedule_id),
            answer(&result, |s| {
                encoded(&pb::GetScheduleResponse {
                    schedule: s.clone(),
                })
            }),
        );
        result
    }

    async fn create_schedule(
        &self,
        mut request: pb::CreateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        let grant = std::mem::take(&mut request.grant);
        let ask = message("scheduler create", &request);
        request.grant = grant;
        let result = self.inner.create_schedule(request).await;
        self.recorder.call(ask, answer(&result, encoded));
        result
    }

    async fn update_schedule(
        &self,
        mut request: pb::UpdateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        let grant = std::mem::take(&mut request.grant);
        let ask = message("scheduler update", &request);
        request.grant = grant;
        let result = self.inner.update_schedule(request).await;
        self.recorder.call(ask, answer(&result, encoded));
        result
    }

    async fn delete_schedule(
        &self,
        grant: &str,
        schedule_id: &str,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        let result = self.inner.delete_schedule(grant, schedule_id).await;
        self.recorder.call(
            schedule_ask("scheduler delete", schedule_id),
            answer(&result, encoded),
        );
        result
    }

    async fn get_endpoints(&self, grant: &str) -> Result<Vec<pb::EndpointInfo>, HostError> {
        let result = self.inner.get_endpoints(grant).await;
        let ask = message("scheduler endpoints", &pb::GetEndpointsRequest::default());
        self.recorder.call(
            ask,
            answer(&result, |e| {
                encoded(&pb::GetEndpointsResponse {
                    endpoints: e.clone(),
                })
            }),
        );
        result
    }

    async fn call_host_api(
        &self,
        grant: &str,
        api: HostApi,
        body_json: String,
    ) -> Result<HostApiResponse, HostError> {
        let ask = host_api_ask(api, &body_json);
        let result = self.inner.call_host_api(grant, api, body_json).await;
        self.recorder.call(ask, answer(&result, host_api_answer));
        result
    }

    async fn call_ui_proxy(
        &self,
        grant: &str,
        call: UiProxyCall,
    ) -> Result<HostApiResponse, HostError> {
        let ask = ui_proxy_ask(&call);
        let result = self.inner.call_ui_proxy(grant, call).await;
        self.recorder.call(ask, answer(&result, host_api_answer));
        result
    }

    async fn publish_logs(&self, events: Vec<pb::LogEvent>) -> Result<(), HostError> {
        self.inner.publish_logs(events).await
    }
}

fn bulk_ask(namespace: &str, items: &[StorageItem], options: StorageOptions) -> Ask {
    Ask::StorageBulkPut {
        namespace: namespace.to_string(),
        items: items
            .iter()
            .map(|i| (i.key.clone(), Bytes::of(&i.value), i.if_revision))
            .collect(),
        ttl_seconds: options.ttl_seconds,
        json: options.json,
        schema_version: options.schema_version,
    }
}

/// Host services answered from a tape.
pub(crate) struct PlayingBackend {
    pub(crate) player: Arc<Player>,
}

fn diverged() -> HostError {
    HostError::unavailable("replay diverged from the capture")
}

impl PlayingBackend {
    /// The recorded answer to `ask`: a recorded failure as the error, an
    /// answer `pick` takes as the value, anything else a divergence.
    fn play<T>(&self, ask: Ask, pick: impl FnOnce(Answer) -> Option<T>) -> Result<T, HostError> {
        match self.player.call(&ask) {
            None => Err(diverged()),
            Some(Answer::Failed { status, message }) => Err(HostError { status, message }),
            Some(answer) => pick(answer).ok_or_else(|| {
                self.player.malformed(&ask);
                diverged()
            }),
        }
    }

    fn play_message<T: Message + Default>(&self, ask: Ask) -> Result<T, HostError> {
        self.play(ask, |a| match a {
            Answer::Message(bytes) => T::decode(bytes.decode().as_slice()).ok(),
            _ => None,
        })
    }
}

fn record(a: Answer) -> Option<Option<StorageRecord>> {
    match a {
        Answer::Record(r) => Some(r.map(from_tape)),
        _ => None,
    }
}

fn records(a: Answer) -> Option<Vec<StorageRecord>> {
    match a {
        Answer::Records(r) => Some(r.into_iter().map(from_tape).collect()),
        _ => None,
    }
}

fn relayed(r: pb::HostApiResponse) -> HostApiResponse {
    HostApiResponse {
        status: u16::try_from(r.status).unwrap_or(0),
        body: r.body,
    }
}

#[async_trait]
impl HostBackend for PlayingBackend {
    async fn storage_get(
        &self,
        _: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StorageRecord>, HostError> {
        let ask = Ask::StorageGet {
            namespace: namespace.to_string(),
            key: key.to_string(),
        };
        self.play(ask, record)
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
        _: &str,
        namespace: &str,
        item: StorageItem,
        options: StorageOptions,
    ) -> Result<StorageRecord, HostError> {
        self.play(put_ask(namespace, &item, options), |a| record(a).flatten())
    }

    async fn storage_bulk_put(
        &self,
        _: &str,
        namespace: &str,
        items: Vec<StorageItem>,
        options: StorageOptions,
    ) -> Result<Vec<StorageRecord>, HostError> {
        self.play(bulk_ask(namespace, &items, options), records)
    }

    async fn storage_delete(&self, _: &str, namespace: &str, key: &str) -> Result<bool, HostError> {
        let ask = Ask::StorageDelete {
            namespace: namespace.to_string(),
            key: key.to_string(),
        };
        self.play(ask, |a| match a {
            Answer::Deleted(d) => Some(d),
            _ => None,
        })
    }

    async fn storage_list(
        &self,
        _: &str,
        namespace: &str,
        cursor: Option<&str>,
    ) -> Result<Vec<StorageRecord>, HostError> {
        let ask = Ask::StorageList {
            namespace: namespace.to_string(),
            cursor: cursor.map(str::to_string),
        };
        self.play(ask, records)
    }

    async fn get_secrets(&self, _: &str) -> Result<BTreeMap<String, String>, HostError> {
        let keys = self.play(Ask::Secrets, |a| match a {
            Answer::SecretKeys(keys) => Some(keys),
            _ => None,
        })?;
        Ok(self.player.secret_values(&keys))
    }

    async fn list_schedules(&self, _: &str) -> Result<Vec<pb::ScheduleInfo>, HostError> {
        let ask = message("scheduler list", &pb::ListSchedulesRequest::default());
        let r: pb::ListSchedulesResponse = self.play_message(ask)?;
        Ok(r.schedules)
    }

    async fn get_schedule(
        &self,
        _: &str,
        schedule_id: &str,
    ) -> Result<Option<pb::ScheduleInfo>, HostError> {
        let r: pb::GetScheduleResponse =
            self.play_message(schedule_ask("scheduler get", schedule_id))?;
        Ok(r.schedule)
    }

    async fn create_schedule(
        &self,
        mut request: pb::CreateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        request.grant.clear();
        self.play_message(message("scheduler create", &request))
    }

    async fn update_schedule(
        &self,
        mut request: pb::UpdateScheduleRequest,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        request.grant.clear();
        self.play_message(message("scheduler update", &request))
    }

    async fn delete_schedule(
        &self,
        _: &str,
        schedule_id: &str,
    ) -> Result<pb::ScheduleMutationResult, HostError> {
        self.play_message(schedule_ask("scheduler delete", schedule_id))
    }

    async fn get_endpoints(&self, _: &str) -> Result<Vec<pb::EndpointInfo>, HostError> {
        let ask = message("scheduler endpoints", &pb::GetEndpointsRequest::default());
        let r: pb::GetEndpointsResponse = self.play_message(ask)?;
        Ok(r.endpoints)
    }

    async fn call_host_api(
        &self,
        _: &str,
        api: HostApi,
        body_json: String,
    ) -> Result<HostApiResponse, HostError> {
        let r: pb::HostApiResponse = self.play_message(host_api_ask(api, &body_json))?;
        Ok(relayed(r))
    }

    async fn call_ui_proxy(
        &self,
        _: &str,
        call: UiProxyCall,
    ) -> Result<HostApiResponse, HostError> {
        let r: pb::HostApiResponse = self.play_message(ui_proxy_ask(&call))?;
        Ok(relayed(r))
    }

    async fn publish_logs(&self, _: Vec<pb::LogEvent>) -> Result<(), HostError> {
        Ok(())
    }
}
