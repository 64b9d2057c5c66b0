//! Credential parsing: a session token verified as the edge verifies it
//! (HS256 and EdDSA keys, `exp`/`nbf`/`aud`, claims to a principal); input
//! that is a JSON object is used as claims, signed, verified and then
//! tampered with; and the API-key secret shape the control plane reads a
//! key id from (`annex_control_plane::api_key_id`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    annex_edge::fuzzing::session_token(&text);
    if let Ok(claims @ serde_json::Value::Object(_)) = serde_json::from_slice(data) {
        annex_edge::fuzzing::session_roundtrip(&claims);
    }
    if let Some(id) = annex_control_plane::api_key_id(&text) {
        let simple = id.simple().to_string();
        let hyphenated = id.hyphenated().to_string();
        let rest = text.trim().strip_prefix("annex_").unwrap_or_default();
        let (named, _) = rest.split_once('_').unwrap_or_default();
        assert!(
            named.eq_ignore_ascii_case(&simple)
                || named.eq_ignore_ascii_case(&hyphenated)
                || named.len() > hyphenated.len(),
            "{named:?} parsed as {id}"
        );
    }
});
