//! The extension projects `annex new` writes, embedded in the binary so the command works
//! anywhere: one template per language under `cli/templates/<lang>/`, the files every language
//! shares under `cli/templates/common/` (manifest, UI), and the repository's
//! `alga:extension` WIT, copied into each project's `wit/` so a project builds outside this
//! repository.
//!
//! Templates hold `{{name}}`, `{{publisher}}`, `{{title}}`, `{{runtime}}` and
//! `{{crate_name}}`; the values are checked by [`check_name`] and [`check_publisher`] to a
//! character set that is safe inside JSON, Rust, JavaScript, HTML and Markdown, so rendering
//! is plain substitution. This module renders; it must not write files.

use crate::cli::Lang;

/// One file of a project: its path and (unrendered) text.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub path: &'static str,
    pub text: &'static str,
    /// Written with the executable bit (build scripts).
    pub executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: false,
    }
}

/// The WIT every project builds against (the repository's copy, so they never drift).
const WIT: Template = file(
    "wit/alga-extension.wit",
    include_str!("../../examples/wit/alga-extension.wit"),
);

const COMMON: &[Template] = &[
    file(
        "manifest.json",
        include_str!("../templates/common/manifest.json"),
    ),
    file(
        "ui/index.html",
        include_str!("../templates/common/ui/index.html"),
    ),
    file("ui/app.js", include_str!("../templates/common/ui/app.js")),
    file(
        "ui/style.css",
        include_str!("../templates/common/ui/style.css"),
    ),
    WIT,
];

const RUST: &[Template] = &[
    file(
        "Cargo.toml",
        include_str!("../templates/rust/Cargo.toml.tmpl"),
    ),
    file("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    file(
        "src/routes.rs",
        include_str!("../templates/rust/src/routes.rs"),
    ),
    Template {
        path: "build.sh",
        text: include_str!("../templates/rust/build.sh"),
        executable: true,
    },
    file("README.md", include_str!("../templates/rust/README.md")),
    file(".gitignore", include_str!("../templates/rust/gitignore")),
];

const JS: &[Template] = &[
    file("package.json", include_str!("../templates/js/package.json")),
    file("src/index.js", include_str!("../templates/js/src/index.js")),
    file(
        "src/routes.js",
        include_str!("../templates/js/src/routes.js"),
    ),
    file(
        "test/routes.test.js",
        include_str!("../templates/js/test/routes.test.js"),
    ),
    file("README.md", include_str!("../templates/js/README.md")),
    file(".gitignore", include_str!("../templates/js/gitignore")),
];

const TS: &[Template] = &[
    file("package.json", include_str!("../templates/ts/package.json")),
    file(
        "tsconfig.json",
        include_str!("../templates/ts/tsconfig.json"),
    ),
    file("src/index.ts", include_str!("../templates/ts/src/index.ts")),
    file(
        "src/routes.ts",
        include_str!("../templates/ts/src/routes.ts"),
    ),
    file("src/types.ts", include_str!("../templates/ts/src/types.ts")),
    file(
        "src/alga.d.ts",
        include_str!("../templates/ts/src/alga.d.ts"),
    ),
    file(
        "test/routes.test.ts",
        include_str!("../templates/ts/test/routes.test.ts"),
    ),
    file("README.md", include_str!("../templates/ts/README.md")),
    file(".gitignore", include_str!("../templates/ts/gitignore")),
];

/// The values substituted into a template.
#[derive(Debug, Clone)]
pub struct Vars {
    pub name: String,
    pub publisher: String,
    pub lang: Lang,
}

impl Vars {
    /// `my-ext` → `My Ext`: the UI's heading and menu label.
    pub fn title(&self) -> String {
        self.name
            .split('-')
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut chars = w.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The manifest's `runtime`, by Alga's convention.
    pub fn runtime(&self) -> &'static str {
        match self.lang {
            Lang::Rust => "wasm-rust@1",
            Lang::Js | Lang::Ts => "wasm-js@1",
        }
    }
}

/// Every file of a `lang` project, unrendered.
pub fn project(lang: Lang) -> impl Iterator<Item = Template> {
    let own = match lang {
        Lang::Rust => RUST,
        Lang::Js => JS,
        Lang::Ts => TS,
    };
    COMMON.iter().chain(own).copied()
}

/// `text` with every placeholder replaced.
pub fn render(text: &str, vars: &Vars) -> String {
    text.replace("{{name}}", &vars.name)
        .replace("{{publisher}}", &vars.publisher)
        .replace("{{title}}", &vars.title())
        .replace("{{runtime}}", vars.runtime())
        .replace("{{crate_name}}", &vars.name.replace('-', "_"))
}

/// An extension name: what Cargo, npm and the manifest all accept as they are.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a usable extension name: use lower-case letters, digits and single \
             dashes, starting with a letter (at most 64 characters), e.g. `invoice-sync`"
        ))
    }
}

/// A publisher: letters, digits, `.`, `-` and `_`, starting with a letter or digit.
pub fn check_publisher(publisher: &str) -> Result<(), String> {
    let ok = publisher.len() <= 64
        && publisher.starts_with(|c: char| c.is_ascii_alphanumeric())
        && publisher
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{publisher}` is not a usable publisher: use letters, digits, `.`, `-` and `_`, \
             starting with a letter or digit (at most 64 characters)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annex_bundle::manifest::Manifest;

    fn vars(lang: Lang) -> Vars {
        Vars {
            name: "invoice-sync".into(),
            publisher: "acme".into(),
            lang,
        }
    }

    #[test]
    fn every_template_renders_a_valid_manifest_and_no_leftover_placeholders() {
        for lang in [Lang::Rust, Lang::Js, Lang::Ts] {
            let vars = vars(lang);
            let mut paths = Vec::new();
            for t in project(lang) {
                let text = render(t.text, &vars);
                assert!(
                    placeholder(&text).is_none(),
                    "{}: {} keeps {:?}",
                    lang.as_str(),
                    t.path,
                    placeholder(&text)
                );
                paths.push(t.path);
                if t.path == "manifest.json" {
                    let manifest = Manifest::parse(text.as_bytes()).expect("a valid manifest");
                    assert_eq!(manifest.name, "invoice-sync");
                    assert_eq!(manifest.publisher, "acme");
                    assert_eq!(manifest.runtime, vars.runtime());
                    let routes: Vec<_> = manifest
                        .endpoints
                        .iter()
                        .map(|e| format!("{} {}", e.method, e.path))
                        .collect();
                    assert_eq!(routes, ["GET /hello", "POST /echo"]);
                    assert_eq!(manifest.ui.expect("a UI").entry, "ui/index.html");
                }
            }
            for needed in [
                "manifest.json",
                "ui/index.html",
                "wit/alga-extension.wit",
                "README.md",
            ] {
                assert!(paths.contains(&needed), "{}: no {needed}", lang.as_str());
            }
            let mut unique = paths.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), paths.len(), "{}: a path twice", lang.as_str());
        }
    }

    /// The first `{{word}}` in `text` (JSDoc's `{{a: string}}` is not one).
    fn placeholder(text: &str) -> Option<&str> {
        text.match_indices("{{").find_map(|(i, _)| {
            let rest = &text[i + 2..];
            let end = rest.find("}}")?;
            let word = &rest[..end];
            (!word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .then_some(word)
        })
    }

    #[test]
    fn the_rust_build_script_names_the_crate_artifact() {
        let script = project(Lang::Rust)
            .find(|t| t.path == "build.sh")
            .expect("build.sh");
        assert!(script.executable);
        assert!(render(script.text, &vars(Lang::Rust)).contains("release/invoice_sync.wasm"));
    }

    #[test]
    fn titles_capitalise_each_word() {
        assert_eq!(vars(Lang::Js).title(), "Invoice Sync");
    }

    #[test]
    fn names_and_publishers_are_checked() {
        for good in ["a", "invoice-sync", "x2", "hello-world-3"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Hello",
            "2x",
            "-a",
            "a-",
            "a--b",
            "a_b",
            "a.b",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["me", "acme", "com.acme", "Acme_Labs-2"] {
            assert!(check_publisher(good).is_ok(), "{good}");
        }
        for bad in ["", ".acme", "ac me", "a\"b", "a/b"] {
            assert!(check_publisher(bad).is_err(), "{bad}");
        }
    }
}
