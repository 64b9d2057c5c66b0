//! The author's loop through the real `annex` binary, the way an author works: `annex new`
//! → the project's own tests → `annex build` → `annex dev --watch` → the extension answers
//! through the edge and its UI is served → a broken edit keeps the last good version serving
//! → a good edit of the handler → the next call answers with the edit. For Rust and for
//! JavaScript; for TypeScript, new → build → the worker runs the component.
//!
//! Guest toolchains are real: cargo for wasm32-wasip2 (the Rust guests share a target
//! directory under Cargo's test scratch space, so later runs only rebuild the guest itself)
//! and npm packages by name from the registry.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::dev::{Dev, http};
use support::run_annex;

/// A cold guest build (wit-bindgen and its macros, or npm installs plus componentize) can take
/// minutes on a 2-core machine; a rebuild far less.
const BUILD: Duration = Duration::from_secs(900);

/// Where Rust guests build: outside the `cargo test` run's own (locked) target directory.
fn guest_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("author-loop-guests")
}

/// The environment of every `annex` and toolchain run here.
fn guest_env() -> Vec<(&'static str, String)> {
    vec![(
        "CARGO_TARGET_DIR",
        guest_target().to_string_lossy().into_owned(),
    )]
}

/// `annex args…` in `dir` (no control plane needed).
fn annex(dir: &Path, args: &[&str]) -> support::Run {
    let env = guest_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_annex(dir, args, &env)
}

/// Runs a toolchain command in `dir`; panics with its output when it fails.
fn tool(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(guest_env())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed in {}:\n{}\n{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `annex new` then `annex build` in a new scratch directory; returns it.
fn new_and_build(name: &str, lang: &str) -> tempfile::TempDir {
    let work = tempfile::tempdir().expect("tempdir");
    let created = annex(
        work.path(),
        &["--json", "new", name, "--lang", lang, "--publisher", "acme"],
    )
    .ok()
    .json();
    assert_eq!(created["slug"], format!("acme.{name}"));
    let project = work.path().join(name);
    for file in [
        "manifest.json",
        "ui/index.html",
        "wit/alga-extension.wit",
        "README.md",
    ] {
        assert!(project.join(file).is_file(), "annex new wrote no {file}");
    }
    // A second `annex new` never overwrites.
    let line = annex(work.path(), &["new", name, "--lang", lang]).fails_with(1);
    assert!(line.contains("not empty"), "{line}");

    let built = annex(work.path(), &["--json", "build", name]).ok().json();
    assert_eq!(built["lang"], lang);
    assert_eq!(built["slug"], format!("acme.{name}"));
    assert_eq!(built["version"], "0.1.0");
    let component = std::fs::read(project.join("dist/main.wasm")).expect("dist/main.wasm");
    assert_eq!(&component[..8], b"\0asm\x0d\x00\x01\x00", "a component");
    let bundle = std::fs::read(project.join("bundle.tar.zst")).expect("bundle");
    assert_eq!(
        built["content_hash"],
        annex_bundle::hash::ContentHash::of(&bundle).to_string()
    );
    // Only what the extension serves is packed: no sources, no node_modules, no target/.
    let unpacked = annex_bundle::archive::unpack(&bundle, &Default::default()).expect("unpacks");
    let files: Vec<&str> = unpacked.files.keys().map(String::as_str).collect();
    assert_eq!(
        files,
        [
            "dist/main.wasm",
            "manifest.json",
            "ui/app.js",
            "ui/index.html",
            "ui/style.css"
        ]
    );
    work
}

/// `annex dev --watch <name>` in `work`.
fn watch(work: tempfile::TempDir, name: &str) -> Dev {
    let env = guest_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Dev::start_in(
        work,
        &["--memory-store".into(), "--watch".into(), name.into()],
        &env,
    )
}

/// The loop for one language: the first build answers, a broken edit is reported while the
/// last good version keeps answering, a good edit answers next.
fn author_loop(name: &str, lang: &str, handler: &str, broken: &str) {
    let work = new_and_build(name, lang);
    let project = work.path().join(name);
    let mut dev = watch(work, name);
    let slug = format!("acme.{name}");
    assert_eq!(dev.var("ANNEX_SAMPLE"), slug);

    let hello = dev.call_within(BUILD, &["call", &slug, "/hello"], |o| {
        o.contains(&format!("Hello from {name}!"))
    });
    assert!(hello.contains("\"tenantId\":\"dev\""), "{hello}");
    let echo = dev
        .annex(&["call", &slug, "/echo", "-X", "POST", "-d", r#"{"n":7}"#])
        .ok()
        .stdout;
    assert!(echo.contains(r#""echo":{"n":7}"#), "{echo}");
    assert_ui_is_served(&dev, name);

    // A broken handler: the build fails, says so, and 0.1.0-dev.1 keeps answering.
    let handler = project.join(handler);
    let good = std::fs::read_to_string(&handler).expect("handler");
    std::fs::write(&handler, format!("{good}\n{broken}\n")).expect("break the handler");
    dev.log_within(BUILD, "the failed build", |log| {
        log.contains("the build failed")
    });
    assert!(dev.log().contains("still serving"), "{}", dev.log());
    let still = dev.annex(&["call", &slug, "/hello"]).ok().stdout;
    assert!(still.contains(&format!("Hello from {name}!")), "{still}");

    // The good edit (saved once, as an editor does): the next call answers with it.
    assert!(good.contains("Hello from"), "{good}");
    std::fs::write(&handler, good.replace("Hello from", "Edited: hello from"))
        .expect("save the edited handler");
    let edited = dev.call_within(BUILD, &["call", &slug, "/hello"], |o| {
        o.contains(&format!("Edited: hello from {name}!"))
    });
    assert!(edited.contains("\"tenantId\":\"dev\""), "{edited}");
    let versions = dev.annex(&["--json", "versions", &slug]).ok().json();
    let listed: Vec<&str> = versions["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert_eq!(listed, ["0.1.0-dev.2", "0.1.0-dev.1"]);
}

/// The `--watch` page hosts the installed bundle's UI from the edge, and forwards the
/// bridge's calls to the extension.
fn assert_ui_is_served(dev: &Dev, name: &str) {
    let (status, page) = http(dev.ui_port, "GET", "/");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/ext-bridge/host.js"), "{page}");
    let (status, current) = http(dev.ui_port, "GET", "/__annex/current");
    assert_eq!(status, 200, "{current}");
    let current: serde_json::Value = serde_json::from_str(&current).expect("JSON");
    let status_json = dev
        .annex(&["--json", "status", &format!("acme.{name}")])
        .ok()
        .json();
    assert_eq!(current["contentHash"], status_json["content_hash"]);
    assert_eq!(current["registryId"], status_json["registry_id"]);
    assert_eq!(current["uiEntry"], "ui/index.html");

    let id = current["registryId"].as_str().expect("registry id");
    let hash = current["contentHash"].as_str().expect("hash");
    let edge_port: u16 = dev
        .var("ANNEX_EDGE_URL")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("edge port");
    let (status, html) = http(
        edge_port,
        "GET",
        &format!("/ext-ui/{id}/{hash}/index.html?tenant=dev"),
    );
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("/ext-bridge/sdk.js"), "{html}");

    let (status, answer) = http(dev.ui_port, "GET", &format!("/api/ext-proxy/{id}/hello"));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(&format!("Hello from {name}!")), "{answer}");
}

#[test]
fn rust_extension_from_new_to_an_edited_answer() {
    author_loop(
        "greeter-rs",
        "rust",
        "src/routes.rs",
        "fn this_does_not_compile() -> u8 { \"text\" }",
    );
}

#[test]
fn javascript_extension_from_new_to_an_edited_answer() {
    author_loop(
        "greeter-js",
        "js",
        "src/routes.js",
        "export function broken( {",
    );
}

#[test]
fn typescript_extension_builds_into_a_component_the_worker_runs() {
    let work = new_and_build("greeter-ts", "ts");
    let project = work.path().join("greeter-ts");
    tool(&project, "npm", &["test"]);
    tool(&project, "npm", &["run", "typecheck"]);
    let dev = watch(work, "greeter-ts");
    let hello = dev.call_within(BUILD, &["call", "acme.greeter-ts", "/hello"], |o| {
        o.contains("Hello from greeter-ts!")
    });
    assert!(hello.contains("\"tenantId\":\"dev\""), "{hello}");
}

#[test]
fn the_generated_projects_own_tests_pass() {
    let work = tempfile::tempdir().expect("tempdir");
    annex(work.path(), &["new", "tested-rs", "--lang", "rust"]).ok();
    tool(
        &work.path().join("tested-rs"),
        "cargo",
        &["test", "--quiet"],
    );
    annex(work.path(), &["new", "tested-js", "--lang", "js"]).ok();
    // node's built-in runner needs nothing installed for the JavaScript routes.
    tool(&work.path().join("tested-js"), "npm", &["test"]);
}

#[test]
fn new_refuses_unusable_names_and_completions_cover_every_shell() {
    let work = tempfile::tempdir().expect("tempdir");
    let line = annex(work.path(), &["new", "Bad_Name"]).fails_with(2);
    assert!(line.contains("not a usable extension name"), "{line}");
    assert!(!work.path().join("Bad_Name").exists());
    let line = annex(work.path(), &["build", "nowhere"]).fails_with(1);
    assert!(line.contains("nowhere is not a directory"), "{line}");
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = annex(work.path(), &["completions", shell]).ok().stdout;
        assert!(script.contains("completions"), "{shell}: {script}");
    }
}
