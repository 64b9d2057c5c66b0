//! `alga:extension/clients` and `alga:extension/services`: list and get,
//! read-only, through the host application. Both share Alga's paging check
//! and status mapping (401/403 → not-allowed, 400 → invalid-input, else
//! internal); one malformed item fails the whole answer.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::backend::HostApi;
use crate::bindings::alga::extension::{clients, services};
use crate::bindings::types::{
    ClientReadError, ClientSummary, ClientsListInput, ClientsListResult, ServiceBillingMethod,
    ServiceItemKind, ServiceReadError, ServiceSummary, ServicesListInput, ServicesListResult,
};
use crate::capabilities::Capability;
use crate::host::HostState;
/// Alga's paging check (before any call): page ≥ 1, 1 ≤ page-size ≤ 100.
fn paging_ok(page: Option<u32>, page_size: Option<u32>) -> bool {
    page.is_none_or(|p| p >= 1) && page_size.is_none_or(|s| (1..=100).contains(&s))
}

/// Status mapping shared by clients and services: 401/403 → not-allowed,
/// 400 → invalid-input, else internal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadError {
    NotAllowed,
    InvalidInput,
    Internal,
}

fn read_error(status: u16) -> ReadError {
    match status {
        401 | 403 => ReadError::NotAllowed,
        400 => ReadError::InvalidInput,
        _ => ReadError::Internal,
    }
}

impl From<ReadError> for ClientReadError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotAllowed => ClientReadError::NotAllowed,
            ReadError::InvalidInput => ClientReadError::InvalidInput,
            ReadError::Internal => ClientReadError::Internal,
        }
    }
}

impl From<ReadError> for ServiceReadError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotAllowed => ServiceReadError::NotAllowed,
            ReadError::InvalidInput => ServiceReadError::InvalidInput,
            ReadError::Internal => ServiceReadError::Internal,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage<T> {
    items: Vec<T>,
    #[serde(alias = "total_count")]
    total_count: u32,
    page: u32,
    #[serde(alias = "page_size")]
    page_size: u32,
}

#[derive(Deserialize)]
struct GetOne<T> {
    item: Option<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientJson {
    #[serde(alias = "client_id")]
    client_id: String,
    #[serde(alias = "client_name")]
    client_name: String,
    #[serde(default, alias = "client_type")]
    client_type: Option<String>,
    #[serde(alias = "is_inactive")]
    is_inactive: bool,
    #[serde(default, alias = "default_currency_code")]
    default_currency_code: Option<String>,
    #[serde(default, alias = "account_manager_id")]
    account_manager_id: Option<String>,
    #[serde(default, alias = "account_manager_name")]
    account_manager_name: Option<String>,
    #[serde(default, alias = "billing_email")]
    billing_email: Option<String>,
}

impl From<ClientJson> for ClientSummary {
    fn from(c: ClientJson) -> Self {
        ClientSummary {
            client_id: c.client_id,
            client_name: c.client_name,
            client_type: c.client_type,
            is_inactive: c.is_inactive,
            default_currency_code: c.default_currency_code,
            account_manager_id: c.account_manager_id,
            account_manager_name: c.account_manager_name,
            billing_email: c.billing_email,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ItemKindJson {
    Service,
    Product,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum BillingJson {
    Fixed,
    Hourly,
    Usage,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceJson {
    #[serde(alias = "service_id")]
    service_id: String,
    #[serde(alias = "service_name")]
    service_name: String,
    #[serde(alias = "item_kind")]
    item_kind: ItemKindJson,
    #[serde(alias = "billing_method")]
    billing_method: BillingJson,
    #[serde(default, alias = "service_type_id")]
    service_type_id: Option<String>,
    #[serde(default, alias = "service_type_name")]
    service_type_name: Option<String>,
    #[serde(alias = "default_rate")]
    default_rate: f64,
    #[serde(alias = "unit_of_measure")]
    unit_of_measure: String,
    #[serde(alias = "is_active")]
    is_active: bool,
    #[serde(default)]
    sku: Option<String>,
}

impl From<ServiceJson> for ServiceSummary {
    fn from(s: ServiceJson) -> Self {
        ServiceSummary {
            service_id: s.service_id,
            service_name: s.service_name,
            item_kind: match s.item_kind {
                ItemKindJson::Service => ServiceItemKind::Service,
                ItemKindJson::Product => ServiceItemKind::Product,
            },
            billing_method: match s.billing_method {
                BillingJson::Fixed => ServiceBillingMethod::Fixed,
                BillingJson::Hourly => ServiceBillingMethod::Hourly,
                BillingJson::Usage => ServiceBillingMethod::Usage,
            },
            service_type_id: s.service_type_id,
            service_type_name: s.service_type_name,
            default_rate: s.default_rate,
            unit_of_measure: s.unit_of_measure,
            is_active: s.is_active,
            sku: s.sku,
        }
    }
}

impl HostState {
    /// Sends one clients/services operation and decodes a 2xx body as `T`.
    /// One malformed item fails the whole answer with `internal` (as Alga).
    async fn read_call<T: serde::de::DeserializeOwned>(
        &mut self,
        api: HostApi,
        capability: Capability,
        operation: &str,
        input: Value,
    ) -> Result<T, ReadError> {
        if !self.caps.has(capability) || self.call.install_id().is_none() {
            return Err(ReadError::NotAllowed);
        }
        let mut body = json!({ "operation": operation, "input": input });
        if let Some(user) = self.bridge_user() {
            body["user"] = user;
        }
        match self.relay(api, body).await {
            Ok(r) if (200..300).contains(&r.status) => {
                serde_json::from_slice(&r.body).map_err(|_| ReadError::Internal)
            }
            Ok(r) => Err(read_error(r.status)),
            Err(e) => Err(read_error(e.status)),
        }
    }
}

fn list_input(
    search: &Option<String>,
    extra: (&str, Value),
    page: Option<u32>,
    page_size: Option<u32>,
) -> Value {
    let mut m = Map::new();
    if let Some(s) = search {
        m.insert("search".into(), json!(s));
    }
    if !extra.1.is_null() {
        m.insert(extra.0.into(), extra.1);
    }
    m.insert("page".into(), json!(page.unwrap_or(1)));
    m.insert("pageSize".into(), json!(page_size.unwrap_or(25)));
    Value::Object(m)
}

impl clients::Host for HostState {
    async fn list_clients(
        &mut self,
        input: ClientsListInput,
    ) -> wasmtime::Result<Result<ClientsListResult, ClientReadError>> {
        if !paging_ok(input.page, input.page_size)
            && self.caps.has(Capability::ClientRead)
            && self.call.install_id().is_some()
        {
            return Ok(Err(ClientReadError::InvalidInput));
        }
        let body = list_input(
            &input.search,
            ("includeInactive", json!(input.include_inactive)),
            input.page,
            input.page_size,
        );
        let r: Result<ListPage<ClientJson>, _> = self
            .read_call(HostApi::Clients, Capability::ClientRead, "list", body)
            .await;
        Ok(r.map(|p| ClientsListResult {
            items: p.items.into_iter().map(Into::into).collect(),
            total_count: p.total_count,
            page: p.page,
            page_size: p.page_size,
        })
        .map_err(Into::into))
    }

    async fn get_client(
        &mut self,
        client_id: String,
    ) -> wasmtime::Result<Result<Option<ClientSummary>, ClientReadError>> {
        let r: Result<GetOne<ClientJson>, _> = self
            .read_call(
                HostApi::Clients,
                Capability::ClientRead,
                "get",
                json!({ "clientId": client_id }),
            )
            .await;
        Ok(r.map(|g| g.item.map(Into::into)).map_err(Into::into))
    }
}

impl services::Host for HostState {
    async fn list_services(
        &mut self,
        input: ServicesListInput,
    ) -> wasmtime::Result<Result<ServicesListResult, ServiceReadError>> {
        if !paging_ok(input.page, input.page_size)
            && self.caps.has(Capability::ServiceRead)
            && self.call.install_id().is_some()
        {
            return Ok(Err(ServiceReadError::InvalidInput));
        }
        let mut body = list_input(
            &input.search,
            ("isActive", json!(input.is_active)),
            input.page,
            input.page_size,
        );
        if let Some(k) = input.item_kind {
            body["itemKind"] = json!(match k {
                ServiceItemKind::Service => "service",
                ServiceItemKind::Product => "product",
            });
        }
        if let Some(b) = input.billing_method {
            body["billingMethod"] = json!(match b {
                ServiceBillingMethod::Fixed => "fixed",
                ServiceBillingMethod::Hourly => "hourly",
                ServiceBillingMethod::Usage => "usage",
            });
        }
        let r: Result<ListPage<ServiceJson>, _> = self
            .read_call(HostApi::Services, Capability::ServiceRead, "list", body)
            .await;
        Ok(r.map(|p| ServicesListResult {
            items: p.items.into_iter().map(Into::into).collect(),
            total_count: p.total_count,
            page: p.page,
            page_size: p.page_size,
        })
        .map_err(Into::into))
    }

    async fn get_service(
        &mut self,
        service_id: String,
    ) -> wasmtime::Result<Result<Option<ServiceSummary>, ServiceReadError>> {
        let r: Result<GetOne<ServiceJson>, _> = self
            .read_call(
                HostApi::Services,
                Capability::ServiceRead,
                "get",
                json!({ "serviceId": service_id }),
            )
            .await;
        Ok(r.map(|g| g.item.map(Into::into)).map_err(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_malformed_service_fails_the_list() {
        let body = br#"{"items":[{"serviceId":"a","serviceName":"A","itemKind":"gadget","billingMethod":"fixed","defaultRate":1,"unitOfMeasure":"h","isActive":true}],"totalCount":1,"page":1,"pageSize":25}"#;
        assert!(serde_json::from_slice::<ListPage<ServiceJson>>(body).is_err());
    }

    #[test]
    fn paging_bounds() {
        assert!(paging_ok(None, None));
        assert!(!paging_ok(Some(0), None));
        assert!(!paging_ok(None, Some(101)));
        assert!(paging_ok(Some(3), Some(100)));
    }
}
