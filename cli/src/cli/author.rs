//! The arguments of the author's loop: `annex new`, `annex build` and `annex completions`
//! (`annex dev --watch` is a flag of [`super::DevArgs`]).
//!
//! Like its parent module, this only describes arguments; it must not touch files.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// The language of an extension project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust with wit-bindgen, built with cargo for wasm32-wasip2.
    Rust,
    /// JavaScript, bundled with esbuild and built with jco componentize.
    Js,
    /// TypeScript, bundled (types stripped) with esbuild and built with jco componentize.
    Ts,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Ts => "ts",
        }
    }
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Extension name: lower-case letters, digits and dashes, starting with a letter. It names
    /// the directory, the package and the manifest's `name`.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Language of the handler.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,

    /// The manifest's `publisher` (the slug becomes <publisher>.<name>).
    #[arg(long, default_value = "me", value_name = "PUBLISHER")]
    pub publisher: String,

    /// Where to create the project [default: ./<NAME>]. It must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Extension project: a directory with manifest.json and Cargo.toml (Rust) or
    /// package.json (JavaScript, TypeScript).
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    /// zstd level of bundle.tar.zst, 1-22.
    #[arg(long, default_value_t = annex_bundle::archive::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}
