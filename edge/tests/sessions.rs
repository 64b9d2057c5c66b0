//! Session tokens at the edge, each algorithm a host application signs
//! with (HS256, RS256, ES256, EdDSA), minted by `jsonwebtoken`: configured
//! keys, issuer and leeway, and the identity provider's JWKS with key
//! rotation, a bounded fetch rate and an outage. (Tokens from an
//! independent implementation: `pyjwt.rs`.)

mod support;

use jsonwebtoken::Algorithm;
use serde_json::json;
use support::idp::{self, Idp, claims, key, verifier};
use support::*;

/// `/api/ext/{id}/hello` with `token`: the status and the error code.
async fn call(w: &World, token: &str) -> (u16, Option<String>) {
    let r = w
        .edge
        .send(
            "GET",
            &format!("/api/ext/{}/hello", w.ext.registry_id),
            &[("authorization", &bearer(token))],
            b"",
        )
        .await;
    let error = (r.status != 200).then(|| {
        r.json()["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default()
    });
    (r.status, error)
}

fn unauthorized() -> (u16, Option<String>) {
    (401, Some("Unauthorized".to_owned()))
}

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-sessions";

#[tokio::test]
async fn every_algorithm_verifies_with_its_configured_key() {
    let signers = [
        (
            "HS256",
            annex_edge::jwt::SigningKey::hs256(SECRET).expect("hs"),
        ),
        ("RS256", key("rsa-a", Algorithm::RS256)),
        ("ES256", key("ec", Algorithm::ES256)),
        ("EdDSA", key("ed", Algorithm::EdDSA)),
    ];
    let mut v = verifier(signers.iter().map(|(_, k)| k.verifying()).collect());
    v.issuers = vec!["https://app.example.com".into()];
    v.leeway_secs = 60;
    let w = World::start_with(EdgeOptions {
        jwt: Some(v),
        ..EdgeOptions::default()
    })
    .await;
    let now = claims(json!({}))["exp"].as_i64().expect("exp") - 300;
    for (name, signer) in &signers {
        let sign = |over: serde_json::Value| {
            let mut c = claims(json!({"iss": "https://app.example.com"}));
            for (k, v) in over.as_object().expect("object") {
                c[k] = v.clone();
            }
            signer.sign(&c).expect("sign")
        };
        assert_eq!(call(&w, &sign(json!({}))).await, (200, None), "{name}");
        assert_eq!(
            call(&w, &sign(json!({"exp": now - 30}))).await,
            (200, None),
            "{name}: 30 s past exp is within the 60 s leeway"
        );
        assert_eq!(
            call(&w, &sign(json!({"nbf": now + 30}))).await,
            (200, None),
            "{name}: nbf 30 s ahead is within the leeway"
        );
        for (what, token) in [
            ("expired beyond the leeway", sign(json!({"exp": now - 120}))),
            ("not yet valid", sign(json!({"nbf": now + 600}))),
            ("another audience", sign(json!({"aud": "other"}))),
            (
                "another issuer",
                sign(json!({"iss": "https://evil.example"})),
            ),
            ("no exp", {
                let mut c = claims(json!({"iss": "https://app.example.com"}));
                c.as_object_mut().expect("object").remove("exp");
                signer.sign(&c).expect("sign")
            }),
        ] {
            assert_eq!(call(&w, &token).await, unauthorized(), "{name}: {what}");
        }
    }
    // A key that is not configured, and a public key used as an HS256 secret.
    let stranger = key("rsa-b", Algorithm::RS256);
    let mut c = claims(json!({}));
    c["iss"] = json!("https://app.example.com");
    assert_eq!(
        call(&w, &stranger.sign(&c).expect("sign")).await,
        unauthorized()
    );
    let public =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa-a.pub")).expect("pem");
    let confused = annex_edge::jwt::SigningKey::hs256(&public).expect("hs");
    assert_eq!(
        call(&w, &confused.sign(&c).expect("sign")).await,
        unauthorized()
    );
}

#[tokio::test]
async fn a_rotated_key_set_verifies_the_new_key_and_an_outage_keeps_the_last() {
    let a = key("rsa-a", Algorithm::RS256).with_kid("a");
    let b = key("rsa-b", Algorithm::RS256).with_kid("b");
    let ed = key("ed", Algorithm::EdDSA).with_kid("ed");
    let provider = Idp::start(idp::jwks(&[
        ("rsa-a", Algorithm::RS256, "a"),
        ("ed", Algorithm::EdDSA, "ed"),
    ]))
    .await;
    let mut v = verifier(vec![]);
    v.jwks = Some(provider.settings(0));
    let w = World::start_with(EdgeOptions {
        jwt: Some(v),
        ..EdgeOptions::default()
    })
    .await;
    let session = claims(json!({}));
    assert_eq!(call(&w, &a.sign(&session).expect("a")).await, (200, None));
    assert_eq!(call(&w, &ed.sign(&session).expect("ed")).await, (200, None));

    // The provider goes down: a token naming an unknown key makes the edge
    // ask again, which fails; the keys it had keep verifying.
    provider.serve(None);
    let before = provider.hits();
    assert_eq!(
        call(&w, &b.sign(&session).expect("b")).await,
        unauthorized()
    );
    assert!(provider.hits() > before, "an unknown kid asks the provider");
    assert_eq!(call(&w, &a.sign(&session).expect("a")).await, (200, None));

    // Rotation: the provider now publishes b only.
    provider.serve(Some(idp::jwks(&[("rsa-b", Algorithm::RS256, "b")])));
    assert_eq!(call(&w, &b.sign(&session).expect("b")).await, (200, None));
    assert_eq!(
        call(&w, &a.sign(&session).expect("a")).await,
        unauthorized(),
        "a key the provider dropped no longer verifies"
    );
}

#[tokio::test]
async fn unknown_key_ids_do_not_make_the_edge_hammer_the_provider() {
    let a = key("ec", Algorithm::ES256).with_kid("a");
    let provider = Idp::start(idp::jwks(&[("ec", Algorithm::ES256, "a")])).await;
    let mut v = verifier(vec![]);
    // At most one fetch an hour: the start-up fetch is the only one here.
    v.jwks = Some(provider.settings(3600));
    let w = World::start_with(EdgeOptions {
        jwt: Some(v),
        ..EdgeOptions::default()
    })
    .await;
    let session = claims(json!({}));
    assert_eq!(call(&w, &a.sign(&session).expect("a")).await, (200, None));
    for i in 0..20 {
        let made_up = key("ec", Algorithm::ES256).with_kid(format!("made-up-{i}"));
        assert_eq!(
            call(&w, &made_up.sign(&session).expect("sign")).await,
            unauthorized()
        );
    }
    assert_eq!(provider.hits(), 1, "one fetch for 21 sessions");
    assert_eq!(call(&w, &a.sign(&session).expect("a")).await, (200, None));
}
