//! The author's and operator's path through the real `annex` binary against a real control
//! plane: keygen → pack → sign → trust → publish → versions → install → config → secrets →
//! upgrade → disable/enable → uninstall, asserting each step's effect; and the failures an
//! author meets, each as one readable line with a non-zero exit.

mod support;

use annex_bundle::hash::ContentHash;
use annex_bundle::signing::{PublicKey, verify_bundle};
use base64::Engine as _;
use support::{Stack, run_annex};

/// Packs, signs and publishes `ext` at `version` with an incompressible 700 KiB UI asset, so
/// the upload spans several 256 KiB chunks; returns the publish JSON.
fn release(stack: &Stack, ext: &str, version: &str) -> serde_json::Value {
    let dir = stack.write_extension(ext, version);
    let mut x: u32 = 0x2545_f491;
    let noise: Vec<u8> = (0..700 * 1024)
        .map(|_| {
            // xorshift32: cheap bytes zstd cannot shrink.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(dir.join("ui/noise.bin"), noise).expect("asset");
    stack.annex(&["pack", ext]).ok();
    let bundle = format!("{ext}/bundle.tar.zst");
    stack
        .annex(&["sign", &bundle, "--key", "keys/acme.pem"])
        .ok();
    stack.annex(&["--json", "publish", &bundle]).ok().json()
}

#[test]
fn author_path_from_keygen_to_uninstall() {
    let stack = Stack::start();

    // keygen: a 0600 private key, its public key beside it, and the key id.
    let key = stack
        .annex(&["--json", "keygen", "--out", "keys/acme.pem"])
        .ok()
        .json();
    let key_id = key["key_id"].as_str().expect("key id").to_owned();
    assert!(key_id.starts_with("ed25519:"), "{key_id}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(stack.path("keys/acme.pem"))
            .expect("private key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public_pem = std::fs::read_to_string(stack.path("keys/acme.pub.pem")).expect("public key");
    let public = PublicKey::parse(&public_pem).expect("a public key PEM");
    assert_eq!(public.key_id(), key_id);

    // pack: bundle.tar.zst and bundle.sha256 (`<hex>\n`) agree with the bytes.
    stack.write_extension("ext", "1.0.0");
    let packed = stack.annex(&["--json", "pack", "ext"]).ok().json();
    let bundle = std::fs::read(stack.path("ext/bundle.tar.zst")).expect("bundle");
    let hash = ContentHash::of(&bundle);
    assert_eq!(packed["content_hash"], hash.to_string());
    assert_eq!(
        std::fs::read_to_string(stack.path("ext/bundle.sha256")).expect("sidecar"),
        format!("{}\n", hash.hex())
    );
    let text = stack.annex(&["pack", "ext"]).ok().stdout;
    assert!(
        text.contains(&hash.to_string()),
        "pack prints the hash: {text}"
    );

    // sign: the .sig verifies under the public key for acme/demo 1.0.0.
    let signed = stack
        .annex(&[
            "--json",
            "sign",
            "ext/bundle.tar.zst",
            "--key",
            "keys/acme.pem",
        ])
        .ok()
        .json();
    assert_eq!(signed["key_id"], key_id.as_str());
    let sig_file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(stack.path("ext/bundle.tar.zst.sig")).expect("sig file"),
    )
    .expect("sig json");
    let signature = sig_file["signature"].as_str().expect("signature");
    verify_bundle(&public, &hash, "acme", "demo", "1.0.0", signature).expect("verifies");

    // trust add: the registry now lists the key for acme.
    let trusted = stack
        .annex(&[
            "--json",
            "trust",
            "add",
            "--publisher",
            "acme",
            "--key",
            "keys/acme.pub.pem",
        ])
        .ok()
        .json();
    assert_eq!(trusted["key_id"], key_id.as_str());
    let keys = stack.annex(&["--json", "trust", "list"]).ok().json();
    assert_eq!(keys["keys"][0]["publisher"], "acme");

    // publish: the registry holds version 1.0.0 with our hash and key.
    let published = stack
        .annex(&["--json", "publish", "ext/bundle.tar.zst"])
        .ok()
        .json();
    assert_eq!(published["extension"]["slug"], "acme.demo");
    assert_eq!(published["version"]["version"], "1.0.0");
    assert_eq!(published["version"]["content_hash"], hash.to_string());
    assert_eq!(published["version"]["signing_key_id"], key_id.as_str());
    let second = release(&stack, "ext2", "1.1.0");
    let size = second["version"]["size_bytes"].as_u64().expect("size");
    assert!(
        size > 600 * 1024,
        "a multi-chunk upload arrived whole: {size} bytes"
    );
    let local = std::fs::read(stack.path("ext2/bundle.tar.zst")).expect("bundle");
    assert_eq!(size, local.len() as u64);
    assert_eq!(
        second["version"]["content_hash"],
        ContentHash::of(&local).to_string()
    );

    // versions: newest first.
    let versions = stack
        .annex(&["--json", "versions", "acme.demo"])
        .ok()
        .json();
    let listed: Vec<&str> = versions["versions"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert_eq!(listed, ["1.1.0", "1.0.0"]);
    let table = stack.annex(&["versions", "acme.demo"]).ok().stdout;
    assert!(table.starts_with("VERSION"), "{table}");

    // install 1.0.0 with config and egress for tenant t1.
    let installed = stack
        .annex_for(
            "t1",
            &[
                "--json",
                "install",
                "acme.demo",
                "--version",
                "1.0.0",
                "--config",
                "region=eu",
                "--egress",
                "api.example.com",
            ],
        )
        .ok()
        .json();
    assert_eq!(installed["version"], "1.0.0");
    assert_eq!(installed["enabled"], true);
    assert_eq!(installed["egress_allowlist"][0], "api.example.com");

    // config: set merges, get reads back one key or all.
    stack
        .annex_for("t1", &["config", "set", "acme.demo", "color=blue"])
        .ok();
    let config = stack
        .annex_for("t1", &["--json", "config", "get", "acme.demo"])
        .ok()
        .json();
    assert_eq!(
        config["config"],
        serde_json::json!({"color": "blue", "region": "eu"})
    );
    let region = stack
        .annex_for("t1", &["config", "get", "acme.demo", "region"])
        .ok()
        .stdout;
    assert_eq!(region, "eu\n");
    stack
        .annex_for("t1", &["config", "set", "acme.demo", "--unset", "color"])
        .ok();
    let config = stack
        .annex_for("t1", &["--json", "config", "get", "acme.demo"])
        .ok()
        .json();
    assert_eq!(config["config"], serde_json::json!({"region": "eu"}));

    // secrets: values go in (arguments and a file), only names come out.
    std::fs::write(stack.path("secrets.env"), "# db\nDB_PASSWORD=hunter2\n").expect("write");
    let set = stack
        .annex_for(
            "t1",
            &[
                "secrets",
                "set",
                "acme.demo",
                "API_TOKEN=s3cret",
                "--from-file",
                "secrets.env",
            ],
        )
        .ok();
    assert!(!set.stdout.contains("s3cret") && !set.stdout.contains("hunter2"));
    let keys = stack
        .annex_for("t1", &["--json", "secrets", "list-keys", "acme.demo"])
        .ok()
        .json();
    assert_eq!(
        keys["keys"],
        serde_json::json!(["API_TOKEN", "DB_PASSWORD"])
    );

    // upgrade to 1.1.0; config survives.
    let upgraded = stack
        .annex_for(
            "t1",
            &["--json", "upgrade", "acme.demo", "--version", "1.1.0"],
        )
        .ok()
        .json();
    assert_eq!(upgraded["version"], "1.1.0");
    let status = stack
        .annex_for("t1", &["--json", "status", "acme.demo"])
        .ok()
        .json();
    assert_eq!(status["version"], "1.1.0");
    let region = stack
        .annex_for("t1", &["config", "get", "acme.demo", "region"])
        .ok()
        .stdout;
    assert_eq!(region, "eu\n");

    // disable, then enable.
    let disabled = stack
        .annex_for("t1", &["--json", "disable", "acme.demo"])
        .ok()
        .json();
    assert_eq!(disabled["enabled"], false);
    let listed = stack.annex_for("t1", &["--json", "installs"]).ok().json();
    assert_eq!(listed["installs"][0]["enabled"], false);
    let enabled = stack
        .annex_for("t1", &["--json", "enable", "acme.demo"])
        .ok()
        .json();
    assert_eq!(enabled["enabled"], true);

    // uninstall: the install is gone.
    stack.annex_for("t1", &["uninstall", "acme.demo"]).ok();
    let line = stack
        .annex_for("t1", &["status", "acme.demo"])
        .fails_with(1);
    assert!(line.contains("INSTALL_NOT_FOUND"), "{line}");
    let listed = stack.annex_for("t1", &["--json", "installs"]).ok().json();
    assert_eq!(listed["installs"], serde_json::json!([]));
}

#[test]
fn a_bad_signature_fails_publish_with_one_line_and_stores_nothing() {
    let stack = Stack::start();
    stack.annex(&["keygen", "--out", "keys/acme.pem"]).ok();
    stack
        .annex(&[
            "trust",
            "add",
            "--publisher",
            "acme",
            "--key",
            "keys/acme.pub.pem",
        ])
        .ok();
    stack.write_extension("ext", "1.0.0");
    stack.annex(&["pack", "ext"]).ok();
    stack
        .annex(&["sign", "ext/bundle.tar.zst", "--key", "keys/acme.pem"])
        .ok();

    // Keep the key id and hash, swap in a signature that is well-formed but wrong.
    let sig_path = stack.path("ext/bundle.tar.zst.sig");
    let mut sig: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sig_path).expect("sig")).expect("json");
    sig["signature"] = base64::engine::general_purpose::STANDARD
        .encode([7u8; 64])
        .into();
    std::fs::write(&sig_path, sig.to_string()).expect("write");

    let line = stack
        .annex(&["publish", "ext/bundle.tar.zst"])
        .fails_with(1);
    assert!(
        line.starts_with("error: SIGNATURE_INVALID: the signature does not verify"),
        "{line}"
    );
    let line = stack.annex(&["versions", "acme.demo"]).fails_with(1);
    assert!(
        line.contains("EXTENSION_NOT_FOUND"),
        "nothing was stored: {line}"
    );

    // A signature file made for other bytes is refused before uploading.
    std::fs::write(stack.path("ext/ui/extra.html"), "changed").expect("write");
    stack.annex(&["pack", "ext"]).ok();
    let line = stack
        .annex(&[
            "publish",
            "ext/bundle.tar.zst",
            "--signature-file",
            "ext/bundle.tar.zst.sig",
        ])
        .fails_with(1);
    assert!(line.contains("sign the bundle again"), "{line}");
}

#[test]
fn a_malformed_manifest_fails_pack_naming_the_problem() {
    let stack = Stack::start();
    stack.write_extension_with(
        "ext",
        br#"{"name": "demo", "publisher": "acme", "version": "one", "runtime": "wasm-js@1"}"#,
    );
    let line = stack.annex(&["pack", "ext"]).fails_with(1);
    assert!(
        line.contains("manifest.json is not a valid manifest"),
        "{line}"
    );
    assert!(
        line.contains("version: Field 'version' must be a semver-like string"),
        "{line}"
    );
    assert!(!stack.path("ext/bundle.tar.zst").exists(), "nothing packed");

    stack.write_extension_with("bad-json", b"{\"name\": ");
    let line = stack.annex(&["pack", "bad-json"]).fails_with(1);
    assert!(line.contains("not valid JSON"), "{line}");
}

#[test]
fn install_failures_and_usage_errors_are_one_line() {
    let stack = Stack::start();
    let line = stack
        .annex(&["--tenant", "t1", "install", "acme.nope"])
        .fails_with(1);
    assert!(line.starts_with("error: EXTENSION_NOT_FOUND: "), "{line}");
    assert!(line.contains("acme.nope"), "{line}");

    // No tenant: a usage error, exit 2.
    let line = stack.annex(&["install", "acme.nope"]).fails_with(2);
    assert!(line.contains("--tenant"), "{line}");
    // Malformed KEY=VALUE: clap's error, still one line, exit 2.
    let line = stack
        .annex(&["--tenant", "t1", "install", "x", "--config", "novalue"])
        .fails_with(2);
    assert!(line.contains("KEY=VALUE"), "{line}");

    // Explicit certificate files work like --tls-dir; a worker certificate is refused.
    let cert_flags = |role: &str| {
        vec![
            "--tls-ca".to_owned(),
            "pki/ca.pem".to_owned(),
            "--tls-cert".to_owned(),
            format!("pki/{role}.pem"),
            "--tls-key".to_owned(),
            format!("pki/{role}-key.pem"),
            "--control-plane".to_owned(),
            stack.url.clone(),
        ]
    };
    let mut args = cert_flags("operator");
    args.extend(["trust".to_owned(), "list".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_annex(stack.dir.path(), &args, &[]).ok();
    let mut args = cert_flags("worker");
    args.extend(["--tenant", "t1", "installs"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = run_annex(stack.dir.path(), &args, &[]).fails_with(1);
    assert!(line.starts_with("error: PERMISSION_DENIED: "), "{line}");

    // No control plane at the address: one line naming it.
    let line = run_annex(
        stack.dir.path(),
        &["versions", "acme.demo"],
        &[
            ("ANNEX_CONTROL_PLANE_URL", "https://127.0.0.1:9"),
            ("ANNEX_TLS_DIR", "pki"),
        ],
    )
    .fails_with(1);
    assert!(
        line.contains("cannot connect to the control plane at https://127.0.0.1:9"),
        "{line}"
    );
    // No certificates: one line saying where they were looked for.
    let line = run_annex(stack.dir.path(), &["versions", "acme.demo"], &[]).fails_with(1);
    assert!(line.contains(".annex/pki/ca.pem"), "{line}");
}

#[test]
fn token_mints_the_documented_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_annex(
        dir.path(),
        &[
            "--json",
            "token",
            "--tenant",
            "acme",
            "--user",
            "u1",
            "--user-type",
            "client",
            "--client-id",
            "c7",
            "--ttl",
            "10m",
        ],
        &[],
    )
    .ok()
    .json();
    let secret =
        std::fs::read_to_string(dir.path().join(".annex/dev-jwt.secret")).expect("secret created");
    let token = out["token"].as_str().expect("token");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    assert_eq!(
        b64.decode(parts[0]).expect("header"),
        br#"{"alg":"HS256","typ":"JWT"}"#
    );
    let claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).expect("claims")).expect("json");
    assert_eq!(claims["sub"], "u1");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["email"], "u1@example.test");
    assert_eq!(claims["user_type"], "client");
    assert_eq!(claims["client_id"], "c7");
    assert_eq!(
        claims["permissions"],
        serde_json::json!(["extension:read", "extension:write"])
    );
    assert_eq!(claims["aud"], "annex");
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(claims["exp"].as_i64(), Some(iat + 600));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.trim().as_bytes());
    ring::hmac::verify(
        &key,
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &b64.decode(parts[2]).expect("mac"),
    )
    .expect("HS256 with the secret file's trimmed bytes");

    // Text mode prints the token alone, for `export ANNEX_TOKEN=$(annex token …)`.
    let text = run_annex(dir.path(), &["token", "--tenant", "acme"], &[]).ok();
    assert_eq!(text.stdout.trim().split('.').count(), 3);
    assert_eq!(text.stdout.lines().count(), 1);
    let line = run_annex(dir.path(), &["token"], &[]).fails_with(2);
    assert!(line.contains("tenant"), "{line}");
}

#[test]
fn revoked_keys_block_installs_and_api_keys_come_and_go() {
    let stack = Stack::start();
    stack.annex(&["keygen", "--out", "keys/acme.pem"]).ok();
    let trusted = stack
        .annex(&[
            "--json",
            "trust",
            "add",
            "--publisher",
            "acme",
            "--key",
            "keys/acme.pub.pem",
        ])
        .ok()
        .json();
    let key_id = trusted["key_id"].as_str().expect("key id").to_owned();
    stack.write_extension("ext", "1.0.0");
    stack.annex(&["pack", "ext"]).ok();
    stack
        .annex(&["sign", "ext/bundle.tar.zst", "--key", "keys/acme.pem"])
        .ok();
    stack.annex(&["publish", "ext/bundle.tar.zst"]).ok();

    // Revoking the only key: listed as revoked, and the bundle can no longer be installed.
    stack.annex(&["trust", "revoke", &key_id]).ok();
    let keys = stack.annex(&["--json", "trust", "list"]).ok().json();
    assert_eq!(keys["keys"][0]["revoked"], true);
    let line = stack
        .annex_for("t1", &["install", "acme.demo"])
        .fails_with(1);
    assert!(line.starts_with("error: KEY_REVOKED: "), "{line}");

    // API keys: the secret is shown once at creation, listed without it, then revoked.
    let created = stack
        .annex_for("t1", &["--json", "api-key", "create", "--name", "ci"])
        .ok()
        .json();
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("annex_"), "{secret}");
    assert_eq!(
        created["permissions"],
        serde_json::json!(["extension:read", "extension:write"])
    );
    let listed = stack.annex_for("t1", &["api-key", "list"]).ok().stdout;
    assert!(
        listed.contains(&id) && !listed.contains(&secret),
        "{listed}"
    );
    stack.annex_for("t1", &["api-key", "revoke", &id]).ok();
    let listed = stack
        .annex_for("t1", &["--json", "api-key", "list"])
        .ok()
        .json();
    assert!(listed["keys"][0]["revoked_at"].is_string(), "{listed}");
}
