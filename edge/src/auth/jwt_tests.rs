use super::*;
use serde_json::json;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut base = json!({
        "sub": "u1", "tenant": "t1", "email": "a@b.c", "name": "Ann",
        "user_type": "internal", "permissions": ["extension:read"],
        "aud": "annex", "exp": now() + 60,
    });
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

fn ed_key() -> SigningKey {
    SigningKey::ed25519(&[7u8; 32]).expect("ed25519")
}

fn hs_key() -> SigningKey {
    SigningKey::hs256(b"secret-secret-secret-secret-secret").expect("hs256")
}

fn verifier(keys: Vec<JwtKey>) -> JwtVerifier {
    JwtVerifier {
        keys,
        audience: "annex".into(),
        issuers: vec![],
        leeway_secs: 5,
        jwks: None,
    }
}

fn sign(key: &SigningKey, claims: &serde_json::Value) -> String {
    key.sign(claims).expect("sign")
}

#[test]
fn both_configured_algorithms_verify_and_yield_claims() {
    for key in [ed_key(), hs_key()] {
        let token = sign(&key, &claims(json!({"client_id": "c9"})));
        let got = verifier(vec![key.verifying()])
            .verify(&token)
            .expect("valid");
        assert_eq!(got.sub, "u1");
        assert_eq!(got.tenant, "t1");
        assert_eq!(got.client_id.as_deref(), Some("c9"));
        assert_eq!(got.permissions, vec!["extension:read".to_owned()]);
    }
}

#[test]
fn failures_are_refused() {
    let key = ed_key();
    let v = verifier(vec![key.verifying()]);
    let now = now();
    let cases: Vec<(String, JwtError)> = vec![
        (
            sign(&key, &claims(json!({"exp": now - 10}))),
            JwtError::Expired,
        ),
        (sign(&key, &claims(json!({"exp": null}))), JwtError::Expired),
        (
            sign(&key, &claims(json!({"nbf": now + 100}))),
            JwtError::NotYetValid,
        ),
        (
            sign(&key, &claims(json!({"aud": "other"}))),
            JwtError::Audience,
        ),
        (
            sign(&key, &claims(json!({"aud": null}))),
            JwtError::Audience,
        ),
        (
            sign(
                &SigningKey::ed25519(&[8u8; 32]).expect("key"),
                &claims(json!({})),
            ),
            JwtError::Signature,
        ),
        // Algorithm confusion: an HS256 token whose secret is the public key.
        (
            sign(
                &SigningKey::hs256(&[7u8; 32]).expect("key"),
                &claims(json!({})),
            ),
            JwtError::Algorithm,
        ),
        ("a.b".into(), JwtError::Malformed),
        ("!!.??.**".into(), JwtError::Malformed),
    ];
    for (token, want) in cases {
        assert_eq!(v.verify(&token), Err(want), "{token}");
    }
    // An audience list containing ours is accepted; within the leeway too.
    let ok = sign(&key, &claims(json!({"aud": ["x", "annex"]})));
    assert!(v.verify(&ok).is_ok());
    let skewed = sign(&key, &claims(json!({"exp": now - 2, "nbf": now + 2})));
    assert!(v.verify(&skewed).is_ok(), "2 s of skew is within 5 s");
}

#[test]
fn issuers_are_checked_when_configured() {
    let key = hs_key();
    let v = JwtVerifier {
        issuers: vec!["https://idp.example.com".into()],
        ..verifier(vec![key.verifying()])
    };
    let from = |iss: serde_json::Value| sign(&key, &claims(json!({ "iss": iss })));
    assert!(v.verify(&from(json!("https://idp.example.com"))).is_ok());
    assert_eq!(
        v.verify(&from(json!("https://evil"))),
        Err(JwtError::Issuer)
    );
    assert_eq!(v.verify(&from(json!(null))), Err(JwtError::Issuer));
    // Without configured issuers `iss` is not read.
    let open = verifier(vec![key.verifying()]);
    assert!(open.verify(&from(json!("https://evil"))).is_ok());
}

#[test]
fn key_ids_pick_the_key() {
    let a = SigningKey::ed25519(&[1u8; 32]).expect("a").with_kid("a");
    let b = SigningKey::ed25519(&[2u8; 32]).expect("b").with_kid("b");
    let v = verifier(vec![a.verifying(), b.verifying()]);
    assert!(v.verify(&sign(&a, &claims(json!({})))).is_ok());
    assert!(v.verify(&sign(&b, &claims(json!({})))).is_ok());
    let c = SigningKey::ed25519(&[3u8; 32]).expect("c").with_kid("c");
    assert_eq!(
        v.verify(&sign(&c, &claims(json!({})))),
        Err(JwtError::UnknownKey)
    );
}

#[test]
fn unsigned_tokens_are_refused() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let payload = b64(&claims(json!({})).to_string());
    let v = verifier(vec![ed_key().verifying()]);
    for alg in ["none", "None", "HS384", "RS512"] {
        let token = format!("{}.{payload}.", b64(&format!(r#"{{"alg":"{alg}"}}"#)));
        assert_eq!(v.verify(&token), Err(JwtError::Algorithm), "{alg}");
    }
}

#[test]
fn key_material_is_checked_up_front() {
    assert_eq!(
        JwtKey::ed25519_from_text("AAAA").map(|_| ()),
        Err(JwtError::BadKey),
        "3 bytes are not an Ed25519 key"
    );
    assert_eq!(
        JwtKey::public_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
            .map(|_| ()),
        Err(JwtError::BadKey)
    );
    assert_eq!(JwtKey::hs256(b"").map(|_| ()), Err(JwtError::BadKey));
}
