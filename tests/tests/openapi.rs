//! schemathesis fuzzes the edge's HTTP API from the OpenAPI document the
//! edge serves (`GET /openapi.json`), against the real binaries: control
//! plane on PostgreSQL, a Wasmtime worker, the edge, and the sample
//! extension published and installed. Every answer must be no server error
//! and must conform to the document: its status, content type and body
//! schema.
//!
//! schemathesis comes from PyPI into a virtualenv under the target
//! directory. Under `CI=true` a missing prerequisite fails the test;
//! elsewhere (no network, no `python3 -m venv`) it says why and skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use annex_e2e::Stack;
use annex_e2e::stack::TENANT;
use serde_json::json;

/// The pinned release (runs on the machines' Python 3.11).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Test cases per operation and phase: enough to reach every refusal of
/// the pipeline, few enough that the run takes under two minutes (about
/// 6,000 requests).
const MAX_EXAMPLES: &str = "100";

/// The virtualenv's `schemathesis`, or why there is none.
fn schemathesis() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let bin = venv.join("bin/schemathesis");
    let version = format!(
        "version {}",
        SCHEMATHESIS.trim_start_matches("schemathesis==")
    );
    let ready = |bin: &Path| {
        Command::new(bin)
            .arg("--version")
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&version)
            })
    };
    if ready(&bin) {
        return Ok(bin);
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
        Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SCHEMATHESIS,
        ]),
        "pip install schemathesis",
    )?;
    if ready(&bin) {
        Ok(bin)
    } else {
        Err("schemathesis does not run after installing".into())
    }
}

/// schemathesis' configuration: the names that reach the installed
/// extension are mixed into what it generates, so calls reach the worker
/// and the UI store, not only the refusals.
fn config(s: &Stack) -> String {
    let hello = &s.hello;
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| json!(i).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[dictionaries.extension]
values = [{extensions}]
[dictionaries.tail]
values = [{tails}]
[dictionaries.hash]
values = [{hash}]
[dictionaries.tenant]
values = [{tenant}]
[dictionaries.file]
values = ["host.js", "sdk.js"]

[parameters]
"path.extension_id" = {{ dictionary = "extension", probability = 0.7 }}
"query.extensionId" = {{ dictionary = "extension", probability = 0.7 }}
"path.path" = {{ dictionary = "tail", probability = 0.6 }}
"path.route" = {{ dictionary = "tail", probability = 0.6 }}
"path.content_hash" = {{ dictionary = "hash", probability = 0.7 }}
"query.tenant" = {{ dictionary = "tenant", probability = 0.7 }}
"path.file" = {{ dictionary = "file", probability = 0.7 }}
"header.x-alga-tenant" = {{ dictionary = "tenant", probability = 0.8 }}
"header.x-tenant-id" = {{ dictionary = "tenant", probability = 0.8 }}
"#,
        extensions = list(&[&hello.registry_id, &hello.install_id, &hello.slug]),
        tails = list(&["hello", "echo", "index.html", "app.js"]),
        hash = list(&[&hello.content_hash]),
        tenant = list(&[TENANT]),
    )
}

/// The worker's count of executions whose guest answered
/// (`annex_worker_executions_total{outcome="ok"}`).
async fn ok_executions(s: &Stack) -> u64 {
    let metrics = annex_e2e::get(s.workers[0].admin, "/metrics", &[])
        .await
        .text();
    metrics
        .lines()
        .filter(|l| l.starts_with("annex_worker_executions_total") && l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn schemathesis_finds_the_edge_conforming_to_its_document() {
    let bin = match schemathesis() {
        Ok(bin) => bin,
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: schemathesis is not available ({why})");
            return;
        }
        Err(why) => panic!("schemathesis is required under CI=true: {why}"),
    };
    let s = Stack::start().await;
    let edge = format!("http://{}", s.edge.http);
    let config_file = s.dir.path().join("schemathesis.toml");
    std::fs::write(&config_file, config(&s)).expect("writing the configuration");
    let auth = format!("Authorization: {}", s.bearer(&json!({})));
    let before = ok_executions(&s).await;
    let out = tokio::process::Command::new(&bin)
        .arg("--config-file")
        .arg(&config_file)
        .args(["run", &format!("{edge}/openapi.json"), "--url", &edge])
        .args(["--header", &auth])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "1",
            // One worker: with two, schemathesis failed with a
            // `SystemError` from Python's parser in its own thread pool.
            "--workers",
            "1",
            "--request-timeout",
            "10",
            // An open debug stream never ends; its refusals, but for the
            // cap on open streams, are the polling form's, which is fuzzed.
            "--exclude-operation-id",
            "debug_stream",
        ])
        .current_dir(s.dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    eprintln!("{stdout}");
    // The run reached the extension, not only the refusals before it.
    assert!(
        ok_executions(&s).await > before,
        "no fuzzed call ran the extension"
    );
}
