//! The claims Annex reads from a verified session token (see `jwt`).

use serde::Deserialize;

/// The claims Annex reads from a session token. `sub` is the user id.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub(crate) struct Claims {
    #[serde(default, alias = "user_id")]
    pub sub: String,
    #[serde(default, alias = "tenant_id")]
    pub tenant: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub name: String,
    /// `internal` or `client`.
    #[serde(default)]
    pub user_type: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The user's contact record; a string or a number. `contactId` is
    /// read when `contact_id` is absent (a token may carry both).
    #[serde(default, deserialize_with = "scalar_text")]
    pub contact_id: Option<String>,
    #[serde(default, rename = "contactId", deserialize_with = "scalar_text")]
    pub contact_id_camel: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub locale: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    pub timezone: Option<String>,
}

/// A claim the host application may send as a string or a number; anything
/// else (an object, a list, `null`) reads as absent rather than refusing
/// the whole token over a field Annex only passes on.
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}
