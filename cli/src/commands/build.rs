//! `annex build [DIR]`: turns an extension project into `dist/main.wasm` and
//! `bundle.tar.zst`. The language comes from the project: `Cargo.toml` is Rust (cargo for
//! `wasm32-wasip2`), `package.json` is JavaScript or TypeScript (`npm ci`, then the project's
//! own `npm run build`, which bundles with esbuild and runs `jco componentize`, as Alga's
//! samples do). The component, `manifest.json` and `ui/` are then staged in `build/stage/`
//! and packed by `annex pack`'s code, so sources, `node_modules/` and `target/` never end up
//! in the bundle.
//!
//! `annex dev --watch` uses [`compile`] and [`stage`] for every rebuild. Toolchain output goes
//! to stderr; stdout stays for the command's result. A missing toolchain is a [`BuildError`]
//! that says what to install; this module never installs toolchains itself.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use annex_bundle::archive::{COMPONENT_PATH, MANIFEST_PATH};
use serde_json::json;
use tokio::process::Command;

use super::pack;
use crate::cli::{BuildArgs, Lang};
use crate::output::Report;

/// Where intermediate files go inside a project (ignored by `annex dev --watch`).
pub const BUILD_DIR: &str = "build";
/// The Rust target every component is built for.
const WASM_TARGET: &str = "wasm32-wasip2";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error(
        "{0} is not an extension project: it has no manifest.json (`annex new` creates a project)"
    )]
    NoManifest(PathBuf),
    #[error(
        "{0} has neither Cargo.toml (Rust) nor package.json (JavaScript, TypeScript), so there \
         is nothing to build"
    )]
    UnknownLanguage(PathBuf),
    #[error("`{tool}` was not found; {hint}")]
    ToolMissing {
        tool: &'static str,
        hint: &'static str,
    },
    #[error(
        "the Rust target {WASM_TARGET} is not installed; run `rustup target add {WASM_TARGET}`"
    )]
    TargetMissing,
    #[error("running `{step}`: {source}")]
    Spawn {
        step: String,
        source: std::io::Error,
    },
    #[error("`{step}` failed ({status}); its output is above")]
    StepFailed { step: String, status: ExitStatus },
    #[error(
        "cargo built no WebAssembly library for {0}; Cargo.toml needs `crate-type = [\"cdylib\"]` \
         under [lib]"
    )]
    NoArtifact(PathBuf),
    #[error("`npm run build` finished without writing {0}")]
    NoComponent(PathBuf),
    #[error("staging the bundle in {path}: {source}")]
    Stage {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub async fn run(args: BuildArgs) -> anyhow::Result<Report> {
    let dir = args.dir;
    let lang = detect(&dir)?;
    let component = compile(&dir, lang).await?;
    let stage_dir = stage(&dir, None)?;
    let packed = pack::pack(&stage_dir, &dir.join("bundle.tar.zst"), args.level).await?;
    let mut report = packed.report();
    let size = std::fs::metadata(&component).map(|m| m.len()).unwrap_or(0);
    report.text = format!(
        "built {} ({}, {})\n{}",
        component.display(),
        lang.as_str(),
        super::human_bytes(size),
        report.text
    );
    if let Some(obj) = report.json.as_object_mut() {
        obj.insert("lang".into(), json!(lang.as_str()));
        obj.insert("component".into(), json!(component));
    }
    Ok(report)
}

/// The project's language: `Cargo.toml` → Rust; `package.json` → TypeScript when there is a
/// `tsconfig.json` or `src/index.ts`, else JavaScript.
pub fn detect(dir: &Path) -> Result<Lang, BuildError> {
    if !dir.is_dir() {
        return Err(BuildError::NotADirectory(dir.to_owned()));
    }
    if !dir.join(MANIFEST_PATH).is_file() {
        return Err(BuildError::NoManifest(dir.to_owned()));
    }
    if dir.join("Cargo.toml").is_file() {
        Ok(Lang::Rust)
    } else if dir.join("package.json").is_file() {
        let ts = dir.join("tsconfig.json").is_file() || dir.join("src/index.ts").is_file();
        Ok(if ts { Lang::Ts } else { Lang::Js })
    } else {
        Err(BuildError::UnknownLanguage(dir.to_owned()))
    }
}

/// Builds the component into `<dir>/dist/main.wasm` and returns that path.
pub async fn compile(dir: &Path, lang: Lang) -> Result<PathBuf, BuildError> {
    let out = dir.join(COMPONENT_PATH);
    match lang {
        Lang::Rust => compile_rust(dir, &out).await?,
        Lang::Js | Lang::Ts => compile_js(dir, &out).await?,
    }
    Ok(out)
}

async fn compile_rust(dir: &Path, out: &Path) -> Result<(), BuildError> {
    probe(dir, "cargo", "install Rust with rustup (https://rustup.rs)").await?;
    // The toolchain the project selects (rust-toolchain.toml) is the one asked.
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .current_dir(dir)
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if !libdir.is_some_and(|d| d.is_dir()) {
        return Err(BuildError::TargetMissing);
    }
    let step = format!("cargo build --release --target {WASM_TARGET}");
    let output = Command::new("cargo")
        .args(["build", "--release", "--target", WASM_TARGET])
        // Artifacts as JSON on stdout (to find the .wasm wherever CARGO_TARGET_DIR points),
        // diagnostics rendered on stderr as usual.
        .arg("--message-format=json-render-diagnostics")
        .current_dir(dir)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|source| BuildError::Spawn {
            step: step.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(BuildError::StepFailed {
            step,
            status: output.status,
        });
    }
    let manifest =
        std::fs::canonicalize(dir.join("Cargo.toml")).unwrap_or_else(|_| dir.join("Cargo.toml"));
    let wasm = cdylib_artifact(&String::from_utf8_lossy(&output.stdout), &manifest)
        .ok_or_else(|| BuildError::NoArtifact(dir.to_owned()))?;
    copy_file(&wasm, out)
}

/// The `.wasm` file of the cdylib cargo built for the package at `manifest` (its
/// `--message-format=json` lines).
fn cdylib_artifact(messages: &str, manifest: &Path) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["manifest_path"].as_str().map(Path::new) == Some(manifest))
        .filter(|m| {
            m["target"]["crate_types"]
                .as_array()
                .is_some_and(|types| types.iter().any(|t| t == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
        })
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
}

async fn compile_js(dir: &Path, out: &Path) -> Result<(), BuildError> {
    let hint = "install Node.js 18 or newer (it brings npm)";
    probe(dir, "node", hint).await?;
    probe(dir, "npm", hint).await?;
    if let Some(install) = npm_install_step(dir) {
        step(dir, "npm", install).await?;
    }
    // Removed first, so a build script that forgets to write it cannot pass off an old one.
    match std::fs::remove_file(out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BuildError::Stage {
                path: out.to_owned(),
                source,
            });
        }
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|source| BuildError::Stage {
            path: parent.to_owned(),
            source,
        })?;
    }
    step(dir, "npm", &["run", "build"]).await?;
    if !out.is_file() {
        return Err(BuildError::NoComponent(out.to_owned()));
    }
    Ok(())
}

/// `npm ci` when the lock file is newer than the installed tree (or nothing is installed);
/// `npm install` for a project without a lock file yet (it writes one); else nothing.
fn npm_install_step(dir: &Path) -> Option<&'static [&'static str]> {
    const QUIET: [&str; 3] = ["--no-audit", "--no-fund", "--loglevel=error"];
    const CI: &[&str] = &["ci", QUIET[0], QUIET[1], QUIET[2]];
    const INSTALL: &[&str] = &["install", QUIET[0], QUIET[1], QUIET[2]];
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    let lock = modified(&dir.join("package-lock.json"));
    let manifest = modified(&dir.join("package.json"));
    match (lock, installed) {
        (Some(_), None) => Some(CI),
        (Some(lock), Some(installed)) if lock > installed => Some(CI),
        (Some(_), Some(_)) => None,
        (None, None) => Some(INSTALL),
        (None, Some(installed)) if manifest.is_some_and(|m| m > installed) => Some(INSTALL),
        (None, Some(_)) => None,
    }
}

/// Fails with [`BuildError::ToolMissing`] unless `tool --version` runs.
async fn probe(dir: &Path, tool: &'static str, hint: &'static str) -> Result<(), BuildError> {
    let ran = Command::new(tool)
        .arg("--version")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match ran {
        Ok(status) if status.success() => Ok(()),
        _ => Err(BuildError::ToolMissing { tool, hint }),
    }
}

/// Runs `program args…` in `dir` with its output on our stderr.
async fn step(dir: &Path, program: &str, args: &[&str]) -> Result<(), BuildError> {
    let name = format!("{program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .await
        .map_err(|source| BuildError::Spawn {
            step: name.clone(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::StepFailed { step: name, status })
    }
}

/// Lays out what the bundle holds in `<dir>/build/stage/`: `manifest.json` (the project's, or
/// `manifest` when given), `dist/main.wasm` and `ui/`. Returns the stage directory.
pub fn stage(dir: &Path, manifest: Option<&[u8]>) -> Result<PathBuf, BuildError> {
    let stage = dir.join(BUILD_DIR).join("stage");
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Stage { path, source }
    };
    match std::fs::remove_dir_all(&stage) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&stage)(e)),
    }
    std::fs::create_dir_all(stage.join("dist")).map_err(err(&stage))?;
    let manifest_out = stage.join(MANIFEST_PATH);
    match manifest {
        Some(bytes) => std::fs::write(&manifest_out, bytes).map_err(err(&manifest_out))?,
        None => copy_file(&dir.join(MANIFEST_PATH), &manifest_out)?,
    }
    copy_file(&dir.join(COMPONENT_PATH), &stage.join(COMPONENT_PATH))?;
    let ui = dir.join("ui");
    if ui.is_dir() {
        copy_tree(&ui, &stage.join("ui"))?;
    }
    Ok(stage)
}

fn copy_file(from: &Path, to: &Path) -> Result<(), BuildError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|source| BuildError::Stage {
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| BuildError::Stage {
            path: from.to_owned(),
            source,
        })
}

/// Copies regular files and directories; symlinks are refused (a bundle holds exactly what is
/// on disk, and the packer refuses them too).
fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Stage { path, source }
    };
    std::fs::create_dir_all(to).map_err(err(to))?;
    for entry in std::fs::read_dir(from).map_err(err(from))? {
        let entry = entry.map_err(err(from))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(err(&path))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&path, &target)?;
        } else if kind.is_file() {
            copy_file(&path, &target)?;
        } else {
            return Err(err(&path)(std::io::Error::other(
                "not a regular file (bundles hold no symlinks)",
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in files {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, "{}").expect("write");
        }
        dir
    }

    #[test]
    fn the_language_comes_from_the_project_files() {
        let rust = project(&["manifest.json", "Cargo.toml"]);
        assert_eq!(detect(rust.path()).expect("rust"), Lang::Rust);
        let js = project(&["manifest.json", "package.json", "src/index.js"]);
        assert_eq!(detect(js.path()).expect("js"), Lang::Js);
        let ts = project(&["manifest.json", "package.json", "tsconfig.json"]);
        assert_eq!(detect(ts.path()).expect("ts"), Lang::Ts);
        let none = project(&["manifest.json"]);
        assert!(matches!(
            detect(none.path()),
            Err(BuildError::UnknownLanguage(_))
        ));
        let bare = project(&["Cargo.toml"]);
        assert!(matches!(
            detect(bare.path()),
            Err(BuildError::NoManifest(_))
        ));
    }

    #[test]
    fn the_component_is_the_projects_cdylib() {
        let manifest = Path::new("/p/Cargo.toml");
        let messages = [
            r#"{"reason":"compiler-artifact","manifest_path":"/dep/Cargo.toml","target":{"crate_types":["cdylib"]},"filenames":["/t/dep.wasm"]}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/p/Cargo.toml","target":{"crate_types":["cdylib","rlib"]},"filenames":["/t/p.wasm","/t/libp.rlib"]}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        assert_eq!(
            cdylib_artifact(&messages, manifest),
            Some(PathBuf::from("/t/p.wasm"))
        );
        assert_eq!(cdylib_artifact("", manifest), None);
    }

    #[test]
    fn staging_takes_the_manifest_component_and_ui_only() {
        let dir = project(&[
            "manifest.json",
            "dist/main.wasm",
            "dist/handler.js",
            "ui/index.html",
            "ui/img/logo.svg",
            "src/index.js",
            "node_modules/x/index.js",
        ]);
        let stage = stage(dir.path(), Some(b"{\"v\":2}")).expect("staged");
        let mut found = Vec::new();
        let mut stack = vec![stage.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read").flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(&stage).expect("under").to_owned();
                    found.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        found.sort();
        assert_eq!(
            found,
            [
                "dist/main.wasm",
                "manifest.json",
                "ui/img/logo.svg",
                "ui/index.html"
            ]
        );
        assert_eq!(
            std::fs::read(stage.join("manifest.json")).expect("manifest"),
            b"{\"v\":2}"
        );
    }

    #[test]
    fn npm_installs_only_when_the_tree_is_older_than_its_inputs() {
        let fresh = project(&["package.json"]);
        assert_eq!(
            npm_install_step(fresh.path()).map(|a| a[0]),
            Some("install")
        );
        let locked = project(&["package.json", "package-lock.json"]);
        assert_eq!(npm_install_step(locked.path()).map(|a| a[0]), Some("ci"));
    }
}
