//! Fleet-wide execution quotas at the edge: the routing snapshot carries this
//! edge's share of each tenant's and install's limits (see
//! `Dispatch.WatchRoutes`); [`admit`] holds a concurrency slot for the whole
//! execution and takes a token from the rate bucket. Over a limit the client
//! gets the gateway's `429 {"error":"rate_limited"}` with `Retry-After`.
//! The gate itself is [`annex_ops::quota::QuotaGate`], shared with the
//! control plane's own dispatch.

use annex_ops::quota::{QuotaGate, QuotaPermit, QuotaShare};
use annex_proto::pb;

use crate::error::ApiError;

/// The snapshot's quotas as gate shares.
pub(crate) fn shares(quotas: Vec<pb::TenantQuota>) -> Vec<QuotaShare> {
    quotas
        .into_iter()
        .filter(|q| !q.tenant_id.is_empty())
        .map(|q| QuotaShare {
            tenant_id: q.tenant_id,
            install_id: (!q.install_id.is_empty()).then_some(q.install_id),
            max_concurrency: q.max_concurrency,
            requests_per_second: q.requests_per_second,
        })
        .collect()
}

/// Admits one execution of the tenant's install, or answers 429.
pub(crate) fn admit(
    gate: &QuotaGate,
    tenant: &str,
    install_id: &str,
) -> Result<QuotaPermit, ApiError> {
    gate.acquire(tenant, install_id).map_err(|refusal| {
        tracing::debug!(tenant, install = install_id, limit = ?refusal.limit, "over the tenant's quota");
        ApiError::rate_limited(refusal.retry_after)
    })
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;

    use super::*;

    fn quota(tenant: &str, install: &str, conc: u32, rps: u32) -> pb::TenantQuota {
        pb::TenantQuota {
            tenant_id: tenant.into(),
            install_id: install.into(),
            max_concurrency: conc,
            requests_per_second: rps,
        }
    }

    #[tokio::test]
    async fn over_quota_is_a_429_with_retry_after_and_the_gateway_body() {
        let gate = QuotaGate::new();
        gate.apply(shares(vec![quota("t1", "", 1, 0)]));
        let held = admit(&gate, "t1", "i1").expect("first");
        let err = admit(&gate, "t1", "i1").expect_err("over");
        assert_eq!(err, ApiError::rate_limited(1));
        let resp = err.into_response();
        assert_eq!(resp.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(resp.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).expect("json"),
            serde_json::json!({"error": "rate_limited"})
        );
        // Other tenants are not affected.
        let _t2 = admit(&gate, "t2", "i2").expect("t2");
        drop(held);
        let _again = admit(&gate, "t1", "i1").expect("released");
    }

    #[test]
    fn per_install_quotas_name_their_install() {
        let s = shares(vec![
            quota("t", "i1", 0, 5),
            quota("t", "", 3, 0),
            quota("", "", 1, 1),
        ]);
        assert_eq!(s.len(), 2, "a quota without tenant is ignored");
        assert_eq!(s[0].install_id.as_deref(), Some("i1"));
        assert_eq!(s[1].install_id, None);
        let gate = QuotaGate::new();
        gate.apply(s);
        let _a = admit(&gate, "t", "i2").expect("i2 has no install quota");
        let _b = admit(&gate, "t", "i2").expect("tenant allows 3");
        let _c = admit(&gate, "t", "i2").expect("third");
        assert!(admit(&gate, "t", "i1").is_err(), "tenant quota full");
    }
}
