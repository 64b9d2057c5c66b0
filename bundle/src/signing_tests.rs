use super::*;
use proptest::prelude::*;

/// Generated with `openssl genpkey -algorithm ed25519` (OpenSSL 3).
const OPENSSL_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIEEWkMAWtJrp0CKbv+21t7xnE1UNUD0LhykuMuiuSb5u
-----END PRIVATE KEY-----
";
/// `openssl pkey -in key.pem -pubout` for the key above.
const OPENSSL_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAXQsaxEAd5fKiEfq7hbLc+owoDvcYU7nTSly5LOvSmnk=
-----END PUBLIC KEY-----
";
/// `openssl pkeyutl -sign -inkey key.pem -rawin -in stmt.bin | base64`, where `stmt.bin` is the
/// statement for (sha256 of nothing, "Acme", "com.acme.x", "1.0.0") built by a separate script.
const OPENSSL_SIGNATURE: &str =
    "kWKNke2xVZLYnBdm8UALuW+sOdD5UK7RMetpE/Uz0FNjBtSfJ6cu4+zmdsumVR/pb5+14cPqruey/vrpusZnBA==";

/// RFC 8032 §7.1 test 1.
const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn empty_hash() -> ContentHash {
    ContentHash::of(b"")
}

fn rfc_key() -> KeyPair {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(RFC8032_SEED, &mut seed).expect("seed hex");
    KeyPair::from_seed(&seed)
}

#[test]
fn statement_wire_format_is_fixed() {
    let hash = empty_hash();
    let mut want = b"annex-bundle-signature-v1\n".to_vec();
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 71]);
    want.extend_from_slice(format!("sha256:{}", hash.hex()).as_bytes());
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 4]);
    want.extend_from_slice(b"Acme");
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 10]);
    want.extend_from_slice(b"com.acme.x");
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
    want.extend_from_slice(b"1.0.0");
    let got = statement(&hash, "Acme", "com.acme.x", "1.0.0");
    assert_eq!(got, want);
    // Cross-checked with an independent Python implementation.
    assert_eq!(
        ContentHash::of(&got).hex(),
        "abf7e065c3ea692741d268a0044abb700a5b5139605ccddc67d8172fef369c94"
    );
}

#[test]
fn sign_verify_round_trip() {
    let key = KeyPair::generate();
    let hash = ContentHash::of(b"bundle");
    let sig = sign_bundle(&key, &hash, "Acme", "com.acme.x", "1.2.3");
    assert_eq!(STANDARD.decode(&sig).expect("standard base64").len(), 64);
    let public = key.public_key();
    assert_eq!(
        verify_bundle(&public, &hash, "Acme", "com.acme.x", "1.2.3", &sig),
        Ok(())
    );
}

#[test]
fn any_changed_field_fails() {
    let key = KeyPair::generate();
    let public = key.public_key();
    let hash = ContentHash::of(b"bundle");
    let sig = sign_bundle(&key, &hash, "Acme", "com.acme.x", "1.2.3");
    let other = ContentHash::of(b"bundle2");
    let cases: [(&ContentHash, &str, &str, &str); 6] = [
        (&other, "Acme", "com.acme.x", "1.2.3"),
        (&hash, "acme", "com.acme.x", "1.2.3"),
        (&hash, "Evil", "com.acme.x", "1.2.3"),
        (&hash, "Acme", "com.acme.y", "1.2.3"),
        (&hash, "Acme", "com.acme.x", "1.2.4"),
        (&hash, "Acme", "com.acme.x", "1.2.3 "),
    ];
    for (h, p, n, v) in cases {
        assert_eq!(
            verify_bundle(&public, h, p, n, v, &sig),
            Err(SignatureError::Mismatch),
            "{h} {p} {n} {v}"
        );
    }
    let stranger = KeyPair::generate().public_key();
    assert_eq!(
        verify_bundle(&stranger, &hash, "Acme", "com.acme.x", "1.2.3", &sig),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn signature_encodings() {
    let key = rfc_key();
    let public = key.public_key();
    let hash = empty_hash();
    let sig = sign_bundle(&key, &hash, "p", "n", "1.0.0");
    let raw = STANDARD.decode(&sig).expect("base64");
    for alt in [
        URL_SAFE_NO_PAD.encode(&raw),
        URL_SAFE.encode(&raw),
        STANDARD_NO_PAD.encode(&raw),
        format!(" {sig}\n"),
    ] {
        assert_eq!(
            verify_bundle(&public, &hash, "p", "n", "1.0.0", &alt),
            Ok(())
        );
    }
    for bad in [
        String::new(),
        "not base64!".into(),
        STANDARD.encode(&raw[..63]),
        STANDARD.encode([raw.as_slice(), &[0]].concat()),
    ] {
        assert_eq!(
            verify_bundle(&public, &hash, "p", "n", "1.0.0", &bad),
            Err(SignatureError::Malformed),
            "{bad:?}"
        );
    }
    // A non-canonical S (S + group order) is refused by verify_strict.
    let mut high_s = raw.clone();
    high_s[63] |= 0xf0;
    assert!(verify_bundle(&public, &hash, "p", "n", "1.0.0", &STANDARD.encode(&high_s)).is_err());
}

#[test]
fn signatures_interoperate_with_openssl() {
    let key = KeyPair::from_pkcs8_pem(OPENSSL_PRIVATE_PEM).expect("openssl PKCS#8 PEM");
    let public = PublicKey::parse(OPENSSL_PUBLIC_PEM).expect("openssl SPKI PEM");
    assert_eq!(key.public_key(), public);
    assert_eq!(public.to_pem(), OPENSSL_PUBLIC_PEM);
    // Ed25519 is deterministic: the same key and statement give OpenSSL's exact signature.
    let sig = sign_bundle(&key, &empty_hash(), "Acme", "com.acme.x", "1.0.0");
    assert_eq!(sig, OPENSSL_SIGNATURE);
    assert_eq!(
        verify_bundle(
            &public,
            &empty_hash(),
            "Acme",
            "com.acme.x",
            "1.0.0",
            OPENSSL_SIGNATURE
        ),
        Ok(())
    );
}

#[test]
fn private_key_pem_round_trip() {
    let key = KeyPair::generate();
    let pem = key.to_pkcs8_pem().expect("encode");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let back = KeyPair::from_pkcs8_pem(&pem).expect("decode");
    assert_eq!(back.public_key(), key.public_key());
    // v1 encoding of a seed is exactly the length OpenSSL writes.
    let reread = KeyPair::from_pkcs8_pem(OPENSSL_PRIVATE_PEM).expect("openssl key");
    assert_eq!(reread.to_pkcs8_pem().expect("encode"), OPENSSL_PRIVATE_PEM);
    assert!(matches!(
        KeyPair::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        Err(SignatureError::InvalidPrivateKey(_))
    ));
    assert!(!format!("{key:?}").contains(&pem));
}

#[test]
fn public_key_forms() {
    let key = rfc_key().public_key();
    assert_eq!(hex::encode(key.as_bytes()), RFC8032_PUBLIC);
    // Cross-checked with Python's hashlib.
    assert_eq!(key.key_id(), "ed25519:21fe31dfa154a261");

    let pem = key.to_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let der_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let raw = key.as_bytes();
    for form in [
        pem.clone(),
        format!("\n  {pem}  \n"),
        key.to_base64(),
        STANDARD_NO_PAD.encode(raw),
        URL_SAFE.encode(raw),
        URL_SAFE_NO_PAD.encode(raw),
        der_body,
    ] {
        assert_eq!(PublicKey::parse(&form), Ok(key.clone()), "{form:?}");
    }
    assert_eq!(PublicKey::from_bytes(raw), Ok(key.clone()));

    let json = serde_json::to_string(&key).expect("serialise");
    assert_eq!(json, format!("\"{}\"", key.to_base64()));
    assert_eq!(
        serde_json::from_str::<PublicKey>(&json).expect("deserialise"),
        key
    );
}

#[test]
fn bad_public_keys() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for bad in [
        String::new(),
        "%%%".into(),
        STANDARD.encode([7u8; 31]),
        STANDARD.encode([7u8; 33]),
        // The identity point: small order, refused as weak.
        STANDARD.encode(identity),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into(),
        // A private key PEM is not a public key.
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEEWkMAWtJrp0CKbv+21t7xnE1UNUD0LhykuMuiuSb5u\n-----END PRIVATE KEY-----".into(),
    ] {
        assert!(
            matches!(PublicKey::parse(&bad), Err(SignatureError::InvalidPublicKey(_))),
            "{bad:?}"
        );
    }
}

proptest! {
    /// Distinct field tuples never share a statement, however the bytes are split.
    #[test]
    fn statement_is_injective(
        a in prop::collection::vec("[ab/]{0,3}", 3),
        b in prop::collection::vec("[ab/]{0,3}", 3),
    ) {
        let hash = ContentHash::of(b"x");
        let sa = statement(&hash, &a[0], &a[1], &a[2]);
        let sb = statement(&hash, &b[0], &b[1], &b[2]);
        prop_assert_eq!(sa == sb, a == b);
    }
}

#[test]
fn statement_boundaries_are_unambiguous() {
    let h = empty_hash();
    assert_ne!(statement(&h, "a", "bc", "1"), statement(&h, "ab", "c", "1"));
    assert_ne!(statement(&h, "", "a", "1"), statement(&h, "a", "", "1"));
    assert_ne!(
        statement(&h, "a\n", "b", "1"),
        statement(&h, "a", "\nb", "1")
    );
}
