//! `alga:extension/invoicing`: `create-manual-invoice` through the host
//! application's invoicing API. Without `cap:invoice.manual.create` or an
//! install id the call fails with Alga's permission message; any non-2xx
//! answer is a failure record carrying the status and body.

use serde_json::{Map, Value, json};

use crate::backend::HostApi;
use crate::bindings::alga::extension::invoicing;
use crate::bindings::types::{CreateManualInvoiceInput, CreateManualInvoiceResult, DiscountType};
use crate::capabilities::Capability;
use crate::host::HostState;
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
}
