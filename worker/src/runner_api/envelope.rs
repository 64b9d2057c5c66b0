//! The JSON of Alga's `/v1/execute` (docs/design/alga-compatibility.md,
//! "Runner API"): the request body as Alga's runner reads it (unknown
//! fields ignored; the fields it requires are required here too, so a
//! missing one is the framework's 422) and the answer it writes. Decoding
//! and mapping only: the request becomes an `ExecuteRequest` for the
//! executor, with the body decoded from base64 (an invalid one is reported
//! where Alga's runner reports it, after the bundle loaded).

use std::collections::{BTreeMap, HashMap};

use annex_proto::pb;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The body of `POST /v1/execute`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ExecuteBody {
    pub(crate) context: Context,
    pub(crate) http: Http,
    #[serde(default)]
    pub(crate) limits: Option<Limits>,
    #[serde(default)]
    pub(crate) providers: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) secret_envelope: Option<SecretEnvelope>,
    #[serde(default)]
    pub(crate) user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Context {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    pub(crate) tenant_id: String,
    pub(crate) extension_id: String,
    #[serde(default)]
    pub(crate) install_id: Option<String>,
    pub(crate) content_hash: String,
    #[serde(default)]
    pub(crate) version_id: Option<String>,
    #[serde(default)]
    pub(crate) config: Option<HashMap<String, String>>,
    /// Sent by Alga's scheduler (`schedule`); Alga's runner ignores it.
    #[serde(default)]
    pub(crate) trigger: Option<String>,
    #[serde(default)]
    pub(crate) schedule_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Http {
    pub(crate) method: String,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) query: Option<HashMap<String, String>>,
    #[serde(default)]
    pub(crate) headers: Option<HashMap<String, String>>,
    #[serde(default)]
    pub(crate) body_b64: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Limits {
    #[serde(default)]
    pub(crate) timeout_ms: Option<u64>,
    #[serde(default)]
    pub(crate) memory_mb: Option<u64>,
    #[serde(default)]
    pub(crate) fuel: Option<u64>,
}

/// Alga's secret envelope (opened by `secrets`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SecretEnvelope {
    pub(crate) ciphertext_b64: String,
    #[serde(default)]
    pub(crate) algorithm: Option<String>,
    #[serde(default)]
    pub(crate) version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct User {
    pub(crate) user_id: String,
    pub(crate) user_email: String,
    pub(crate) user_name: String,
    pub(crate) user_type: String,
    #[serde(default, alias = "company_name")]
    pub(crate) client_name: Option<String>,
    #[serde(default)]
    pub(crate) client_id: Option<String>,
    #[serde(default)]
    pub(crate) additional_fields: Option<HashMap<String, String>>,
}

/// What `/v1/execute` answers (always with HTTP 200 once the body decoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub(crate) status: u32,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body_b64: Option<String>,
    pub(crate) error: Option<String>,
}

impl Answer {
    /// A refusal with Alga's error string.
    pub(crate) fn error(status: u32, error: impl Into<String>) -> Answer {
        Answer {
            status,
            headers: BTreeMap::new(),
            body_b64: None,
            error: Some(error.into()),
        }
    }

    /// The executor's response: the guest's status, headers and body on
    /// success, the status and error string otherwise.
    pub(crate) fn from_response(response: pb::ExecuteResponse) -> Answer {
        let ok = response.outcome == pb::Outcome::Ok as i32;
        Answer {
            status: response.status,
            headers: response.headers.into_iter().collect(),
            body_b64: response.body.map(|b| STANDARD.encode(b)),
            error: Some(response.error).filter(|e| !ok && !e.is_empty()),
        }
    }
}

/// The body bytes: absent or `null` → none, `""` → empty, otherwise the
/// standard base64 of the trimmed text.
pub(crate) fn body(body_b64: Option<&str>) -> Result<Option<Vec<u8>>, base64::DecodeError> {
    body_b64.map(|b| STANDARD.decode(b.trim())).transpose()
}

impl ExecuteBody {
    /// The execution for the executor (the body and secrets are the
    /// caller's to add).
    pub(crate) fn to_pb(&self, content_hash: String) -> pb::ExecuteRequest {
        let c = &self.context;
        let h = &self.http;
        let limits = self.limits.clone().unwrap_or_default();
        pb::ExecuteRequest {
            context: Some(pb::ExecContext {
                request_id: c.request_id.clone().unwrap_or_default(),
                tenant_id: c.tenant_id.clone(),
                extension_id: c.extension_id.clone(),
                install_id: c.install_id.clone().unwrap_or_default(),
                version_id: c.version_id.clone().unwrap_or_default(),
                content_hash,
                config: c.config.clone().unwrap_or_default(),
                trigger: c.trigger.clone().unwrap_or_else(|| "http".to_string()),
                schedule_id: c.schedule_id.clone().unwrap_or_default(),
            }),
            http: Some(pb::HttpRequest {
                method: h.method.clone(),
                path: h.path.clone(),
                query: h.query.clone().unwrap_or_default(),
                headers: h.headers.clone().unwrap_or_default(),
                body: None,
            }),
            limits: Some(pb::Limits {
                // 0 means the worker's default (never Alga's immediate trap).
                timeout_ms: clamp_u32(limits.timeout_ms),
                memory_mb: clamp_u32(limits.memory_mb),
                fuel: limits.fuel,
                max_response_bytes: 0,
            }),
            providers: self.providers.clone().unwrap_or_default(),
            user: self.user.as_ref().map(User::to_pb),
            ..Default::default()
        }
    }
}

fn clamp_u32(v: Option<u64>) -> u32 {
    v.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX))
}

impl User {
    fn to_pb(&self) -> pb::User {
        pb::User {
            user_id: self.user_id.clone(),
            user_email: self.user_email.clone(),
            user_name: self.user_name.clone(),
            user_type: self.user_type.clone(),
            client_name: self.client_name.clone().unwrap_or_default(),
            client_id: self.client_id.clone(),
            additional_fields: self.additional_fields.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algas_envelope_decodes_with_aliases_and_ignored_fields() {
        let body: ExecuteBody = serde_json::from_value(serde_json::json!({
            "context": {"request_id": null, "tenant_id": "t", "extension_id": "e",
                        "content_hash": "sha256:ab", "config": {"k": "v"}, "trigger": "schedule"},
            "http": {"method": "POST", "path": "/a", "url": "/a", "body_b64": ""},
            "limits": {"timeout_ms": 5000, "fuel": null},
            "user": {"user_id": "u", "user_email": "e", "user_name": "n", "user_type": "internal",
                     "company_name": "Acme"},
            "endpoint": "ui-proxy:/a"
        }))
        .expect("decodes");
        let pb = body.to_pb("sha256:ab".into());
        let ctx = pb.context.expect("context");
        assert_eq!(ctx.request_id, "");
        assert_eq!(ctx.trigger, "schedule");
        assert_eq!(ctx.config.get("k").map(String::as_str), Some("v"));
        assert_eq!(pb.limits.map(|l| l.timeout_ms), Some(5000));
        assert_eq!(pb.user.map(|u| u.client_name), Some("Acme".to_string()));
        assert_eq!(super::body(body.http.body_b64.as_deref()), Ok(Some(vec![])));
        assert_eq!(super::body(None), Ok(None));
        assert!(super::body(Some("@@")).is_err());
    }

    #[test]
    fn a_user_without_its_required_fields_does_not_decode() {
        let missing = serde_json::from_value::<ExecuteBody>(serde_json::json!({
            "context": {"tenant_id": "t", "extension_id": "e", "content_hash": "h"},
            "http": {"method": "GET", "path": "/"},
            "user": {"user_id": "u"}
        }));
        assert!(missing.is_err());
    }

    #[test]
    fn answers_carry_the_error_only_when_the_guest_did_not_answer() {
        let ok = Answer::from_response(pb::ExecuteResponse {
            status: 201,
            body: Some(b"hi".to_vec()),
            outcome: pb::Outcome::Ok as i32,
            ..Default::default()
        });
        assert_eq!(ok.body_b64.as_deref(), Some("aGk="));
        assert_eq!(ok.error, None);
        let failed = Answer::from_response(pb::ExecuteResponse {
            status: 500,
            outcome: pb::Outcome::Trap as i32,
            error: "execute_failed: boom".into(),
            ..Default::default()
        });
        assert_eq!(failed.error.as_deref(), Some("execute_failed: boom"));
        assert_eq!(failed.body_b64, None);
    }
}
