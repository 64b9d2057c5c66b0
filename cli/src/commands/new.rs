//! `annex new <name> --lang rust|js|ts`: writes a working extension project from the
//! embedded templates ([`crate::templates`]): manifest, handler, UI, build setup, a test, a
//! README and the `alga:extension` WIT.
//!
//! It never overwrites anything: the target directory must be absent or empty. It runs no
//! toolchain; `annex build` does.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::json;

use crate::cli::{Lang, NewArgs};
use crate::failure::usage;
use crate::output::{Report, fields};
use crate::templates::{self, Vars};

pub fn run(args: NewArgs) -> anyhow::Result<Report> {
    templates::check_name(&args.name).map_err(usage)?;
    templates::check_publisher(&args.publisher).map_err(usage)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    ensure_empty(&dir)?;
    let vars = Vars {
        name: args.name.clone(),
        publisher: args.publisher.clone(),
        lang: args.lang,
    };
    let mut written = Vec::new();
    for t in templates::project(args.lang) {
        let path = dir.join(t.path);
        write(&path, &templates::render(t.text, &vars), t.executable)?;
        written.push(t.path);
    }

    let slug = format!("{}.{}", args.publisher, args.name).to_lowercase();
    let text = format!(
        "created {} ({})\n{}next:\n  cd {}\n{}  annex build\n  annex dev --watch .\n",
        dir.display(),
        describe(args.lang),
        fields(&[
            ("extension", slug.clone()),
            ("handler", handler_file(args.lang).to_owned()),
            ("routes", "GET /hello, POST /echo".to_owned()),
            ("ui", "ui/index.html".to_owned()),
        ]),
        dir.display(),
        first_steps(args.lang),
    );
    let json = json!({
        "dir": dir,
        "name": args.name,
        "publisher": args.publisher,
        "slug": slug,
        "lang": args.lang.as_str(),
        "files": written,
    });
    Ok(Report::new(text, json))
}

fn describe(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust, wit-bindgen, cargo for wasm32-wasip2",
        Lang::Js => "JavaScript, esbuild + jco componentize",
        Lang::Ts => "TypeScript, esbuild + jco componentize",
    }
}

/// The file an author edits first.
pub fn handler_file(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "src/routes.rs",
        Lang::Js => "src/routes.js",
        Lang::Ts => "src/routes.ts",
    }
}

fn first_steps(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "  cargo test\n",
        Lang::Js | Lang::Ts => "  npm install && npm test\n",
    }
}

/// Refuses a directory that exists with something in it (or a file in its place).
fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                anyhow::bail!(
                    "{} already exists and is not empty; choose another name or --dir",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if dir.exists() => Err(anyhow::anyhow!(
            "{} exists and is not a directory ({e})",
            dir.display()
        )),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

fn write(path: &Path, text: &str, executable: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = executable;
    Ok(())
}
