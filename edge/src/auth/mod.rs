//! Who is calling: a host-application session (a JWT in `Authorization:
//! Bearer` or the configured cookie) or a tenant API key (`x-api-key`,
//! checked by the control plane and cached briefly). The result is a
//! [`Principal`]; the caller's credentials never travel past this module.

pub(crate) mod api_keys;
mod claims;
mod config;
mod jwks;
pub mod jwt;
mod session;

use http::HeaderMap;

pub(crate) use api_keys::{ApiKeyCache, ApiKeyCacheParts};
pub use config::SessionArgs;
pub(crate) use jwt::{Claims, JwtVerifier};
pub(crate) use session::SessionVerifier;

/// `extension:read` / `extension:write`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Permissions {
    pub read: bool,
    pub write: bool,
}

impl Permissions {
    pub(crate) fn from_names<S: AsRef<str>>(names: &[S]) -> Permissions {
        let has = |want: &str| names.iter().any(|n| n.as_ref().trim() == want);
        Permissions {
            read: has("extension:read"),
            write: has("extension:write"),
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub tenant: String,
    pub kind: PrincipalKind,
    pub permissions: Permissions,
    /// How the credentials arrived; only a cookie rides along on a request
    /// another site makes the browser send (see `crate::csrf`).
    pub via: Credential,
}

/// Where a request's credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential {
    /// `Authorization: Bearer`.
    Bearer,
    /// The session cookie.
    Cookie,
    /// `x-api-key`.
    ApiKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrincipalKind {
    /// An end user of the host application.
    User(UserInfo),
    /// A service client holding a tenant API key.
    ApiKey { key_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserInfo {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub user_type: UserType,
    pub client_id: Option<String>,
    pub client_name: String,
    /// What `/api/ext-proxy` passes on as the user's additional fields, as
    /// Alga's ext-proxy does: `contact_id` (and the same value as
    /// `contactId`), `username`, `locale`, `timezone`, each when the session
    /// carries it. Sorted by key.
    pub additional_fields: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserType {
    Internal,
    Client,
}

impl UserType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UserType::Internal => "internal",
            UserType::Client => "client",
        }
    }
}

impl Principal {
    /// `user` or `api_key`, as written in audit rows.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.kind {
            PrincipalKind::User(_) => "user",
            PrincipalKind::ApiKey { .. } => "api_key",
        }
    }

    pub(crate) fn user(&self) -> Option<&UserInfo> {
        match &self.kind {
            PrincipalKind::User(u) => Some(u),
            PrincipalKind::ApiKey { .. } => None,
        }
    }

    /// The id written to audit rows: the user id or `api_key:<id>`.
    pub(crate) fn audit_id(&self) -> String {
        match &self.kind {
            PrincipalKind::User(u) => u.user_id.clone(),
            PrincipalKind::ApiKey { key_id } => format!("api_key:{key_id}"),
        }
    }
}

/// Why a request is not authenticated; each maps to one of the gateway's
/// error answers (docs/design/alga-compatibility.md, "Gateway").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No credentials, or credentials that do not verify: 401 `Unauthorized`.
    #[error("no valid session")]
    NoSession,
    /// A verified session without a tenant, or with a tenant claim that is
    /// not exactly a tenant id (surrounding spaces included): 401
    /// `invalid_session`.
    #[error("the session has no usable tenant")]
    BadTenant,
    /// A verified session without a user id or user type: 401 `unauthenticated`.
    #[error("the session names no user")]
    NoUser,
    /// A verified session whose identity claims the edge cannot carry
    /// (control characters, over-long values): 401 `unauthenticated`.
    #[error("the session's identity claims are malformed")]
    MalformedClaim,
    /// The control plane could not be asked about an API key: 503.
    #[error("the API key could not be checked")]
    Unavailable,
    /// The client has asked about too many unknown API keys: 429, with
    /// `Retry-After` in seconds.
    #[error("too many API-key lookups from this client")]
    Limited(u64),
}

/// Where session tokens are read from.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    pub jwt: SessionVerifier,
    /// Cookie holding the session token when there is no `Authorization`.
    pub cookie: Option<String>,
    pub api_keys: ApiKeyCache,
}

impl Authenticator {
    /// Authenticates the request's credentials.
    /// `client` names the caller for the API-key cache's per-client budget
    /// of lookups (see [`ApiKeyCache::authenticate`]).
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: crate::clients::ClientKey,
    ) -> Result<Principal, AuthError> {
        if let Some((token, via)) = self.session_token(headers) {
            let mut principal = self.verify_session(&token).await?;
            principal.via = via;
            return Ok(principal);
        }
        if let Some(secret) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            return self.api_keys.authenticate(secret.trim(), client).await;
        }
        Err(AuthError::NoSession)
    }

    fn session_token(&self, headers: &HeaderMap) -> Option<(String, Credential)> {
        if let Some(auth) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let (scheme, token) = auth.trim().split_once(' ')?;
            return scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| (token.trim().to_owned(), Credential::Bearer));
        }
        let name = self.cookie.as_deref()?;
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (v.trim().to_owned(), Credential::Cookie))
    }

    async fn verify_session(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.jwt.verify(token).await.map_err(|e| {
            tracing::debug!(error = %e, "session token refused");
            AuthError::NoSession
        })?;
        principal_from_claims(claims)
    }
}

/// Longest user id accepted from a session.
const MAX_USER_ID: usize = 256;
/// Longest other identity claim (email, names, client id) accepted.
const MAX_CLAIM: usize = 1024;

/// A claim the edge may pass to a guest and write into the audit trail: no
/// control characters, at most `max` bytes.
fn carriable(value: &str, max: usize) -> bool {
    value.len() <= max && !value.chars().any(char::is_control)
}

/// Turns verified claims into a principal (docs/design/alga-compatibility.md,
/// "Gateway"). The tenant must be exactly a tenant id: a near miss (a
/// leading space) would resolve nothing and must not look like a server
/// failure.
pub(crate) fn principal_from_claims(claims: Claims) -> Result<Principal, AuthError> {
    if claims.tenant.trim().is_empty() || !crate::identifiers::is_tenant(&claims.tenant) {
        return Err(AuthError::BadTenant);
    }
    let user_type = match claims.user_type.as_str() {
        "internal" => UserType::Internal,
        "client" => UserType::Client,
        _ => return Err(AuthError::NoUser),
    };
    if claims.sub.trim().is_empty() {
        return Err(AuthError::NoUser);
    }
    let others = [
        Some(&claims.email),
        Some(&claims.name),
        claims.client_id.as_ref(),
        claims.client_name.as_ref(),
        claims.contact_id.as_ref(),
        claims.contact_id_camel.as_ref(),
        claims.username.as_ref(),
        claims.locale.as_ref(),
        claims.timezone.as_ref(),
    ];
    if !carriable(&claims.sub, MAX_USER_ID)
        || !others
            .into_iter()
            .flatten()
            .all(|v| carriable(v, MAX_CLAIM))
    {
        return Err(AuthError::MalformedClaim);
    }
    let additional_fields = additional_fields(&claims);
    Ok(Principal {
        tenant: claims.tenant,
        via: Credential::Bearer,
        permissions: Permissions::from_names(&claims.permissions),
        kind: PrincipalKind::User(UserInfo {
            user_id: claims.sub,
            email: claims.email,
            name: claims.name,
            user_type,
            client_id: claims.client_id.filter(|c| !c.trim().is_empty()),
            client_name: claims.client_name.unwrap_or_default(),
            additional_fields,
        }),
    })
}

/// The session's additional user fields (see [`UserInfo::additional_fields`]).
fn additional_fields(claims: &Claims) -> Vec<(String, String)> {
    fn present(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    let mut fields = Vec::new();
    if let Some(contact) = present(&claims.contact_id).or(present(&claims.contact_id_camel)) {
        fields.push(("contactId".to_owned(), contact.to_owned()));
        fields.push(("contact_id".to_owned(), contact.to_owned()));
    }
    for (name, value) in [
        ("locale", &claims.locale),
        ("timezone", &claims.timezone),
        ("username", &claims.username),
    ] {
        if let Some(v) = present(value) {
            fields.push((name.to_owned(), v.to_owned()));
        }
    }
    fields.sort();
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_map_to_principals_or_errors() {
        let base = Claims {
            sub: "u".into(),
            tenant: "t".into(),
            user_type: "internal".into(),
            permissions: vec!["extension:write".into()],
            ..Claims::default()
        };
        let p = principal_from_claims(base.clone()).expect("ok");
        assert_eq!(
            p.permissions,
            Permissions {
                read: false,
                write: true
            }
        );
        assert_eq!(p.kind_name(), "user");
        let blank = Claims {
            tenant: " ".into(),
            ..base.clone()
        };
        assert_eq!(principal_from_claims(blank), Err(AuthError::BadTenant));
        for tenant in [" t", "t ", "a b", "t\0", &"t".repeat(129)] {
            let odd = Claims {
                tenant: tenant.into(),
                ..base.clone()
            };
            assert_eq!(
                principal_from_claims(odd),
                Err(AuthError::BadTenant),
                "{tenant:?}"
            );
        }
        for bad in [
            Claims {
                sub: "u\0".into(),
                ..base.clone()
            },
            Claims {
                sub: "u".repeat(257),
                ..base.clone()
            },
            Claims {
                email: "a@b\r\nx".into(),
                ..base.clone()
            },
            Claims {
                client_name: Some("c\u{85}".into()),
                ..base.clone()
            },
        ] {
            assert_eq!(principal_from_claims(bad), Err(AuthError::MalformedClaim));
        }
        let nouser = Claims {
            sub: String::new(),
            ..base.clone()
        };
        assert_eq!(principal_from_claims(nouser), Err(AuthError::NoUser));
        let badtype = Claims {
            user_type: "admin".into(),
            ..base
        };
        assert_eq!(principal_from_claims(badtype), Err(AuthError::NoUser));
    }
}
