//! The one builder of `ExecuteRequest`: what the edge and the control plane
//! know about an install and a call, turned into the message a worker runs.
//! Keeping it in one place means a field added to the protocol is filled
//! by every sender or by none.

use std::collections::HashMap;

use annex_proto::pb;

/// What started an execution; the worker passes it to the guest's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `/api/ext` on the edge.
    Http,
    /// `/api/ext-proxy` on the edge.
    Proxy,
    /// `Dispatch.Execute` from an internal client.
    Internal,
    /// A schedule the control plane ran.
    Schedule,
}

impl Trigger {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Proxy => "proxy",
            Trigger::Internal => "internal",
            Trigger::Schedule => "schedule",
        }
    }
}

/// The active install an execution runs, as resolved by the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    pub tenant_id: String,
    /// The extension's registry id.
    pub extension_id: String,
    pub install_id: String,
    pub version_id: String,
    pub content_hash: String,
    pub config: HashMap<String, String>,
    /// The granted capabilities (`cap:*`), defaults included.
    pub providers: Vec<String>,
    pub secrets_version: String,
    pub execution_grant: String,
    pub egress_allowlist: Vec<String>,
    /// The install's capture policy (docs/design/replay.md); `None`:
    /// nothing is recorded.
    pub capture: Option<pb::CaptureSettings>,
}

/// One call of an installed extension.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Empty: a new UUID.
    pub request_id: String,
    pub trigger: Trigger,
    /// The schedule that ran (empty unless `trigger` is `Schedule`).
    pub schedule_id: String,
    pub http: pb::HttpRequest,
    pub user: Option<pb::User>,
    /// The guest's limits; a zero timeout leaves it to the worker's default.
    pub limits: Option<pb::Limits>,
    pub idempotency_key: String,
    /// The caller's W3C `traceparent`, already validated (empty: none).
    pub traceparent: String,
}

/// The request a worker executes for `call` of `install`.
pub fn execute_request(install: Installed, call: Invocation) -> pb::ExecuteRequest {
    let request_id = if call.request_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        call.request_id
    };
    pb::ExecuteRequest {
        context: Some(pb::ExecContext {
            request_id,
            tenant_id: install.tenant_id,
            extension_id: install.extension_id,
            install_id: install.install_id,
            version_id: install.version_id,
            content_hash: install.content_hash,
            config: install.config,
            trigger: call.trigger.as_str().to_owned(),
            schedule_id: call.schedule_id,
        }),
        http: Some(call.http),
        limits: call.limits,
        providers: install.providers,
        secrets_version: install.secrets_version,
        user: call.user,
        idempotency_key: call.idempotency_key,
        execution_grant: install.execution_grant,
        egress_allowlist: install.egress_allowlist,
        traceparent: call.traceparent,
        capture: install.capture,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Invocation {
        Invocation {
            request_id: "r1".into(),
            trigger: Trigger::Schedule,
            schedule_id: "s1".into(),
            http: pb::HttpRequest {
                method: "POST".into(),
                path: "/run".into(),
                ..Default::default()
            },
            user: None,
            limits: Some(pb::Limits {
                timeout_ms: 1_000,
                ..Default::default()
            }),
            idempotency_key: "k".into(),
            traceparent: String::new(),
        }
    }

    #[test]
    fn every_field_comes_from_the_install_or_the_call() {
        let install = Installed {
            tenant_id: "t".into(),
            extension_id: "e".into(),
            install_id: "i".into(),
            version_id: "v".into(),
            content_hash: "sha256:00".into(),
            config: [("k".to_owned(), "v".to_owned())].into(),
            providers: vec!["cap:log.emit".into()],
            secrets_version: "sv".into(),
            execution_grant: "g".into(),
            egress_allowlist: vec!["example.com".into()],
            capture: Some(pb::CaptureSettings {
                sample_ppm: 10_000,
                ..Default::default()
            }),
        };
        let req = execute_request(install, call());
        assert_eq!(req.capture.as_ref().map(|c| c.sample_ppm), Some(10_000));
        let ctx = req.context.expect("context");
        assert_eq!(
            (
                ctx.request_id.as_str(),
                ctx.tenant_id.as_str(),
                ctx.extension_id.as_str(),
                ctx.install_id.as_str(),
                ctx.version_id.as_str(),
                ctx.content_hash.as_str(),
                ctx.trigger.as_str(),
                ctx.schedule_id.as_str(),
            ),
            ("r1", "t", "e", "i", "v", "sha256:00", "schedule", "s1")
        );
        assert_eq!(ctx.config.get("k").map(String::as_str), Some("v"));
        assert_eq!(req.http.expect("http").path, "/run");
        assert_eq!(req.limits.expect("limits").timeout_ms, 1_000);
        assert_eq!(req.providers, ["cap:log.emit"]);
        assert_eq!(req.secrets_version, "sv");
        assert_eq!(req.idempotency_key, "k");
        assert_eq!(req.execution_grant, "g");
        assert_eq!(req.egress_allowlist, ["example.com"]);
    }

    #[test]
    fn an_empty_request_id_gets_a_new_one() {
        let req = execute_request(
            Installed::default(),
            Invocation {
                request_id: String::new(),
                ..call()
            },
        );
        let id = req.context.expect("context").request_id;
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
}
