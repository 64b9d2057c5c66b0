//! Tokens minted by PyJWT (an implementation independent of the edge's) for
//! each algorithm verify at the edge, from configured PEM keys and from a
//! JWKS document PyJWT wrote.
//!
//! PyJWT and `cryptography` come from PyPI into a virtualenv under the
//! target directory. Under `CI=true` a missing prerequisite fails the test;
//! elsewhere (no network, no `python3 -m venv`) it says why and skips.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use support::idp::{Idp, claims, verifier};
use support::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef-pyjwt";
const PACKAGES: [&str; 2] = ["PyJWT==2.10.1", "cryptography==44.0.2"];

/// The virtualenv's python with PyJWT installed, or why there is none.
fn python() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyjwt-venv");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import jwt, cryptography"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&py) {
        return Ok(py);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PACKAGES),
        "pip install PyJWT cryptography",
    )?;
    if ready(&py) {
        Ok(py)
    } else {
        Err("PyJWT does not import after installing".into())
    }
}

/// PyJWT's keys and tokens for `claims` (see `tests/pyjwt/mint.py`).
fn mint(py: &Path, claims: &serde_json::Value) -> serde_json::Value {
    use std::io::Write as _;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyjwt/mint.py");
    let mut child = Command::new(py)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running mint.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            json!({"claims": claims, "hs256_secret": SECRET})
                .to_string()
                .as_bytes(),
        )
        .expect("writing claims");
    let out = child.wait_with_output().expect("mint.py");
    assert!(out.status.success(), "mint.py failed");
    serde_json::from_slice(&out.stdout).expect("mint.py output")
}

async fn status(w: &World, token: &str) -> u16 {
    w.edge
        .send(
            "GET",
            &format!("/api/ext/{}/hello", w.ext.registry_id),
            &[("authorization", &bearer(token))],
            b"",
        )
        .await
        .status
}

#[tokio::test]
async fn pyjwt_tokens_of_every_algorithm_verify() {
    let py = match python() {
        Ok(py) => py,
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: PyJWT is not available ({why})");
            return;
        }
        Err(why) => panic!("PyJWT is required under CI=true: {why}"),
    };
    let minted = mint(&py, &claims(json!({})));
    let algs = ["HS256", "RS256", "ES256", "EdDSA"];

    // Configured keys: the HS256 secret and PyJWT's public keys in PEM.
    let mut keys = vec![annex_edge::JwtKey::hs256(SECRET.as_bytes()).expect("hs")];
    for alg in &algs[1..] {
        let pem = minted["pems"][alg].as_str().expect("pem");
        let key = annex_edge::JwtKey::public_pem(pem).expect("PyJWT's public key");
        assert_eq!(format!("{:?}", key.algorithm()), *alg);
        keys.push(key);
    }
    let w = World::start_with(EdgeOptions {
        jwt: Some(verifier(keys)),
        ..EdgeOptions::default()
    })
    .await;
    for alg in algs {
        let token = minted["tokens"][alg].as_str().expect("token");
        assert_eq!(status(&w, token).await, 200, "PyJWT {alg} token");
    }
    let other = mint(&py, &claims(json!({})));
    for alg in &algs[1..] {
        let token = other["tokens"][alg].as_str().expect("token");
        assert_eq!(
            status(&w, token).await,
            401,
            "{alg} by a key not configured"
        );
    }
    drop(w);

    // PyJWT's JWKS, served by a stub provider; tokens name their key.
    let provider = Idp::start(minted["jwks"].clone()).await;
    let mut v = verifier(vec![]);
    v.jwks = Some(provider.settings(0));
    let w = World::start_with(EdgeOptions {
        jwt: Some(v),
        ..EdgeOptions::default()
    })
    .await;
    for alg in &algs[1..] {
        let token = minted["kid_tokens"][alg].as_str().expect("token");
        assert_eq!(status(&w, token).await, 200, "PyJWT {alg} token via JWKS");
    }
}
