//! The host-application bridges: `invoicing`, `clients`, `services` and
//! `ui-proxy` (spec §11.3–§11.5). The worker builds Alga's request bodies
//! and the control plane relays them (`HostServices.CallHostApi` /
//! `CallUiProxy`) with the host application's URL and credentials, which
//! workers never hold. Gating and response mapping are the runner's.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::backend::{HostApi, HostApiResponse, HostError, UiProxyCall};
use crate::bindings::alga::extension::{clients, invoicing, services, ui_proxy};
use crate::bindings::types::{
    ClientReadError, ClientSummary, ClientsListInput, ClientsListResult, CreateManualInvoiceInput,
    CreateManualInvoiceResult, DiscountType, ProxyError, ServiceBillingMethod, ServiceItemKind,
    ServiceReadError, ServiceSummary, ServicesListInput, ServicesListResult,
};
use crate::capabilities::Capability;
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

// ---- invoicing -----------------------------------------------------------

fn invoice_failure(error: String) -> CreateManualInvoiceResult {
    CreateManualInvoiceResult {
        success: false,
        invoice_id: None,
        invoice_number: None,
        status: None,
        subtotal: None,
        tax: None,
        total: None,
        error: Some(error),
        field_errors: None,
    }
}

/// Alga's body: absent optional fields are omitted, never null.
fn invoice_body(input: &CreateManualInvoiceInput) -> Value {
    let items: Vec<Value> = input
        .items
        .iter()
        .map(|i| {
            let mut m = Map::new();
            m.insert("serviceId".into(), json!(i.service_id));
            m.insert("quantity".into(), json!(i.quantity));
            m.insert("description".into(), json!(i.description));
            m.insert("rate".into(), json!(i.rate));
            if let Some(d) = i.is_discount {
                m.insert("isDiscount".into(), json!(d));
            }
            if let Some(t) = i.discount_type {
                let t = match t {
                    DiscountType::Percentage => "percentage",
                    DiscountType::Fixed => "fixed",
                };
                m.insert("discountType".into(), json!(t));
            }
            if let Some(v) = &i.applies_to_item_id {
                m.insert("appliesToItemId".into(), json!(v));
            }
            if let Some(v) = &i.applies_to_service_id {
                m.insert("appliesToServiceId".into(), json!(v));
            }
            Value::Object(m)
        })
        .collect();
    let mut body = Map::new();
    body.insert("operation".into(), json!("createManualInvoice"));
    body.insert("clientId".into(), json!(input.client_id));
    body.insert("items".into(), Value::Array(items));
    for (k, v) in [
        ("invoiceDate", &input.invoice_date),
        ("dueDate", &input.due_date),
        ("poNumber", &input.po_number),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    Value::Object(body)
}

/// Reads a 2xx answer, flattening `invoice.*`, camelCase or snake_case.
fn invoice_result(body: &[u8]) -> CreateManualInvoiceResult {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return invoice_failure("invalid response from host application".into());
    };
    let invoice = v.get("invoice").unwrap_or(&Value::Null);
    let pick = |camel: &str, snake: &str| {
        invoice
            .get(camel)
            .or_else(|| invoice.get(snake))
            .or_else(|| v.get(camel))
            .or_else(|| v.get(snake))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let text = |x: Value| match x {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    let field_errors = v
        .get("fieldErrors")
        .or_else(|| v.get("field_errors"))
        .filter(|f| !f.is_null())
        .map(|f| f.to_string());
    CreateManualInvoiceResult {
        success: v.get("success").and_then(Value::as_bool).unwrap_or(false),
        invoice_id: text(pick("invoiceId", "invoice_id")),
        invoice_number: text(pick("invoiceNumber", "invoice_number")),
        status: text(pick("status", "status")),
        subtotal: pick("subtotal", "subtotal").as_f64(),
        tax: pick("tax", "tax").as_f64(),
        total: pick("total", "total").as_f64(),
        error: v.get("error").and_then(Value::as_str).map(str::to_string),
        field_errors,
    }
}

impl invoicing::Host for HostState {
    async fn create_manual_invoice(
        &mut self,
        input: CreateManualInvoiceInput,
    ) -> wasmtime::Result<CreateManualInvoiceResult> {
        if !self.caps.has(Capability::InvoiceManualCreate) {
            return Ok(invoice_failure(
                "Permission denied: cap:invoice.manual.create not granted".into(),
            ));
        }
        if self.call.install_id().is_none() {
            return Ok(invoice_failure(
                "Permission denied: install_id missing".into(),
            ));
        }
        Ok(
            match self.relay(HostApi::Invoicing, invoice_body(&input)).await {
                Ok(r) if (200..300).contains(&r.status) => invoice_result(&r.body),
                Ok(r) => invoice_failure(format!(
                    "http {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )),
                Err(e) => invoice_failure(format!("http {}: {}", e.status, e.message)),
            },
        )
    }
}

// ---- clients and services --------------------------------------------------

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

// ---- ui-proxy ---------------------------------------------------------------

/// Alga's pre-checks: an empty route, or a `.`/`..` segment, is a bad request.
fn route_ok(route: &str) -> bool {
    let path = route.split('?').next().unwrap_or("");
    !route.trim().is_empty() && !path.split('/').any(|s| s == "." || s == "..")
}

fn proxy_error(status: u16) -> ProxyError {
    match status {
        401 | 403 | 429 => ProxyError::Denied,
        404 => ProxyError::RouteNotFound,
        400..=499 => ProxyError::BadRequest,
        _ => ProxyError::Internal,
    }
}

impl ui_proxy::Host for HostState {
    async fn call_route(
        &mut self,
        route: String,
        payload: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<Vec<u8>, ProxyError>> {
        if !self.caps.has(Capability::UiProxy) {
            return Ok(Err(ProxyError::Denied));
        }
        if !route_ok(&route) {
            return Ok(Err(ProxyError::BadRequest));
        }
        let user = self.call.user.as_ref();
        let call = UiProxyCall {
            route,
            payload,
            // Alga sends `ui-proxy-call` when the request has no id.
            request_id: self
                .call
                .request_id
                .clone()
                .unwrap_or_else(|| "ui-proxy-call".to_string()),
            user_id: user.map(|u| u.user_id.clone()).unwrap_or_default(),
            user_email: user.map(|u| u.user_email.clone()).unwrap_or_default(),
        };
        let result = self
            .services
            .backend
            .call_ui_proxy(&self.call.grant, call)
            .await;
        Ok(match result {
            Ok(r) if (200..300).contains(&r.status) => Ok(r.body),
            Ok(r) => Err(proxy_error(r.status)),
            // A grant the control plane refuses is a denial; an unreachable
            // host application is internal.
            Err(e) => Err(match e.status {
                401 | 403 => ProxyError::Denied,
                _ => ProxyError::Internal,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_body_omits_absent_fields() {
        let input = CreateManualInvoiceInput {
            client_id: "c".into(),
            items: vec![crate::bindings::types::ManualInvoiceItemInput {
                service_id: "s".into(),
                quantity: 2.0,
                description: "d".into(),
                rate: 10.0,
                is_discount: None,
                discount_type: None,
                applies_to_item_id: None,
                applies_to_service_id: None,
            }],
            invoice_date: None,
            due_date: Some("2026-01-31".into()),
            po_number: None,
        };
        assert_eq!(
            invoice_body(&input),
            json!({"operation":"createManualInvoice","clientId":"c",
                   "items":[{"serviceId":"s","quantity":2.0,"description":"d","rate":10.0}],
                   "dueDate":"2026-01-31"})
        );
    }

    #[test]
    fn invoice_result_flattens_and_accepts_snake_case() {
        let r = invoice_result(
            br#"{"success":true,"invoice":{"invoice_id":"i","invoiceNumber":"INV-1","status":"draft","subtotal":10,"tax":1.5,"total":11.5}}"#,
        );
        assert!(r.success);
        assert_eq!(r.invoice_id.as_deref(), Some("i"));
        assert_eq!(r.invoice_number.as_deref(), Some("INV-1"));
        assert_eq!(r.total, Some(11.5));
        let r = invoice_result(
            br#"{"success":false,"error":"Client not found","fieldErrors":{"clientId":"x"}}"#,
        );
        assert_eq!(r.field_errors.as_deref(), Some(r#"{"clientId":"x"}"#));
    }

    #[test]
    fn one_malformed_service_fails_the_list() {
        let body = br#"{"items":[{"serviceId":"a","serviceName":"A","itemKind":"gadget","billingMethod":"fixed","defaultRate":1,"unitOfMeasure":"h","isActive":true}],"totalCount":1,"page":1,"pageSize":25}"#;
        assert!(serde_json::from_slice::<ListPage<ServiceJson>>(body).is_err());
    }

    #[test]
    fn proxy_routes_and_statuses() {
        assert!(!route_ok(""));
        assert!(!route_ok("/a/../b"));
        assert!(route_ok("/a/b?x=../y"));
        assert_eq!(proxy_error(404), ProxyError::RouteNotFound);
        assert_eq!(proxy_error(429), ProxyError::Denied);
        assert_eq!(proxy_error(422), ProxyError::BadRequest);
        assert_eq!(proxy_error(502), ProxyError::Internal);
    }

    #[test]
    fn paging_bounds() {
        assert!(paging_ok(None, None));
        assert!(!paging_ok(Some(0), None));
        assert!(!paging_ok(None, Some(101)));
        assert!(paging_ok(Some(3), Some(100)));
    }
}
