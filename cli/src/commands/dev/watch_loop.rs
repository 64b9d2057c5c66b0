//! `annex dev --watch DIR`: the author's loop. Once the services are up, the project in `DIR`
//! is released to tenant `dev` ([`super::release`]), and again after every change to its
//! files; its UI is served on a local page ([`super::ui_host`]); the API and UI URLs are
//! printed after each release.
//!
//! Changes come from the `notify` crate (inotify, FSEvents, ReadDirectoryChangesW). Build
//! outputs and tool state never trigger a build: `target/`, `node_modules/`, `dist/`,
//! `build/`, hidden files and directories (`.annex/`, `.git/`, editor swap files), the bundle
//! files and the lock files (written by the builds themselves). Events are debounced: a build
//! starts once the tree has been quiet for [`QUIET`], so a save that touches several files, or
//! a `git checkout`, is one build; changes made during a build cause one more build after it.
//!
//! A failed build prints its error and keeps the last good version installed and served. Only
//! a failure to watch at all ends `annex dev`.

use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use annex_bundle::signing::KeyPair;
use anyhow::Context as _;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

use super::DEV_TENANT;
use super::release::{Releaser, Served};
use super::ui_host;
use crate::cli::Lang;
use crate::client::{ControlPlane, Target};

/// How long the tree must be quiet before a build starts: editors write a file in several
/// steps (temporary file, rename, metadata) within a few milliseconds.
const QUIET: Duration = Duration::from_millis(300);

/// Top-level directories that hold build outputs or installed tools.
const IGNORED_DIRS: &[&str] = &["target", "node_modules", "dist", "build"];
/// Files the builds and the packer write.
const IGNORED_FILES: &[&str] = &[
    "bundle.tar.zst",
    "bundle.tar.zst.sig",
    "bundle.sha256",
    "Cargo.lock",
    "package-lock.json",
];

/// The watched project, checked before anything starts.
#[derive(Debug, Clone)]
pub struct Project {
    /// Absolute.
    pub dir: PathBuf,
    pub lang: Lang,
    /// `publisher.name` from its manifest.
    pub slug: String,
}

impl Project {
    /// Checks that `dir` is a buildable extension project with a valid manifest.
    pub fn open(dir: &Path) -> anyhow::Result<Project> {
        let dir = std::path::absolute(dir)
            .with_context(|| format!("resolving --watch {}", dir.display()))?;
        let lang = super::super::build::detect(&dir)?;
        let manifest_path = dir.join(annex_bundle::archive::MANIFEST_PATH);
        let raw = std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let manifest = super::super::pack::parse_manifest(&manifest_path, &raw)?;
        let slug = format!("{}.{}", manifest.publisher, manifest.name).to_lowercase();
        Ok(Project { dir, lang, slug })
    }
}

/// Everything the loop needs from the running `annex dev`.
#[derive(Debug)]
pub struct Setup {
    pub project: Project,
    /// `.annex`, absolute: where the dev publisher key lives.
    pub dev_dir: PathBuf,
    /// The in-process control plane, reached with the dev operator certificate.
    pub control_plane: Target,
    pub edge_url: String,
    pub ui_listener: tokio::net::TcpListener,
    pub jwt_secret: Vec<u8>,
}

/// Runs the loop until `shutdown` resolves.
pub async fn run(
    setup: Setup,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let key = dev_publisher_key(&setup.dev_dir)?;
    let cp = ControlPlane::connect(&setup.control_plane).await?;
    let ui_url = format!(
        "http://{}/",
        setup
            .ui_listener
            .local_addr()
            .context("reading the UI page's address")?
    );
    let (served_tx, served_rx) = watch::channel(None::<Served>);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ui = tokio::spawn(ui_host::serve(
        setup.ui_listener,
        setup.edge_url.clone(),
        setup.jwt_secret,
        served_rx,
        async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|s| *s).await;
        },
    ));

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let _watcher = watch_tree(&setup.project.dir, events_tx)?;
    let mut releaser = Releaser::new(setup.project.dir.clone(), setup.project.lang, cp, key);
    let urls = Urls {
        edge: setup.edge_url,
        ui: ui_url,
    };
    tokio::pin!(shutdown);
    let result = loop {
        // Ctrl-C interrupts a build too (the build's processes are killed with it).
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = release(&mut releaser, &served_tx, &urls) => {}
        }
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            changed = next_change(&setup.project.dir, &mut events) => match changed {
                Some(paths) => eprintln!("annex dev: {} changed", describe(&paths)),
                None => break Err(anyhow::anyhow!("watching {} stopped", setup.project.dir.display())),
            },
        }
    };
    let _ = stop_tx.send(true);
    let _ = ui.await;
    result
}

struct Urls {
    edge: String,
    ui: String,
}

/// One release, its outcome printed; the UI page follows a new one.
async fn release(releaser: &mut Releaser, served_tx: &watch::Sender<Option<Served>>, urls: &Urls) {
    match releaser.release().await {
        Ok(Some(served)) => {
            print_urls(&served, urls);
            served_tx.send_replace(Some(served));
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("annex dev: the build failed: {e:#}");
            match served_tx.borrow().as_ref() {
                Some(s) => eprintln!(
                    "annex dev: still serving {} {}; fix the error and save to try again",
                    s.slug, s.version
                ),
                None => eprintln!("annex dev: nothing is installed yet; fix the error and save"),
            }
        }
    }
}

fn print_urls(served: &Served, urls: &Urls) {
    let api = format!(
        "{}/api/ext/{}",
        urls.edge.trim_end_matches('/'),
        served.slug
    );
    let example = served
        .endpoints
        .iter()
        .find_map(|e| e.strip_prefix("GET "))
        .unwrap_or("/");
    let ui = if served.ui_entry.is_some() {
        urls.ui.clone()
    } else {
        "(none: the manifest declares no ui)".to_owned()
    };
    eprintln!(
        "\n  API   {api}{example}\
         \n        routes: {}\
         \n  UI    {ui}\
         \n  try   annex call {} {example} --tenant {DEV_TENANT}\n",
        served.endpoints.join(", "),
        served.slug,
    );
}

/// `.annex/dev-publisher.pem`, created on first use (the key `annex dev` signs with).
fn dev_publisher_key(dev_dir: &Path) -> anyhow::Result<KeyPair> {
    let path = dev_dir.join("dev-publisher.pem");
    match std::fs::read_to_string(&path) {
        Ok(pem) => KeyPair::from_pkcs8_pem(&pem)
            .with_context(|| format!("reading the dev publisher key {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate();
            let pem = key
                .to_pkcs8_pem()
                .context("encoding the dev publisher key")?;
            crate::files::write_private(&path, pem.as_bytes(), false)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Starts watching `dir` recursively; events arrive on `tx` until the watcher is dropped.
fn watch_tree(
    dir: &Path,
    tx: mpsc::UnboundedSender<notify::Result<notify::Event>>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })
    .context("starting the file watcher")?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    Ok(watcher)
}

/// Waits for a relevant change, then for [`QUIET`] without one; returns the changed paths
/// (relative, deduplicated), or `None` when the watcher is gone.
async fn next_change(
    root: &Path,
    events: &mut mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
) -> Option<Vec<PathBuf>> {
    let mut changed = Vec::new();
    while changed.is_empty() {
        take(root, events.recv().await?, &mut changed);
    }
    loop {
        match tokio::time::timeout(QUIET, events.recv()).await {
            Ok(Some(event)) => take(root, event, &mut changed),
            Ok(None) | Err(_) => return Some(changed),
        }
    }
}

fn take(root: &Path, event: notify::Result<notify::Event>, changed: &mut Vec<PathBuf>) {
    let event = match event {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "file watcher error");
            return;
        }
    };
    if !matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Any
            | EventKind::Other
    ) {
        return;
    }
    for path in event.paths {
        if let Some(rel) = relevant(root, &path)
            && !changed.contains(&rel)
        {
            changed.push(rel);
        }
    }
}

/// `path` relative to `root` when a change there should rebuild, else `None`.
fn relevant(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = rel.components().filter_map(|c| match c {
        Component::Normal(s) => Some(s.to_string_lossy()),
        _ => None,
    });
    let first = parts.next()?;
    if IGNORED_DIRS.contains(&first.as_ref()) {
        return None;
    }
    let name = rel.file_name()?.to_string_lossy();
    let hidden = std::iter::once(first)
        .chain(parts)
        .any(|p| p.starts_with('.'));
    // Editors' backup files (`main.rs~`) and vim's write probe (`4913`).
    let scratch = name.ends_with('~') || name.bytes().all(|b| b.is_ascii_digit());
    if hidden || scratch || IGNORED_FILES.contains(&name.as_ref()) {
        return None;
    }
    Some(rel.to_owned())
}

fn describe(paths: &[PathBuf]) -> String {
    let first = paths
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match paths.len() {
        0 | 1 => first,
        n => format!("{first} and {} more", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rebuild_and_outputs_do_not() {
        let root = Path::new("/p");
        for rebuilds in [
            "src/routes.rs",
            "manifest.json",
            "ui/app.js",
            "Cargo.toml",
            "package.json",
            "wit/alga-extension.wit",
            "src/nested/dist/x.rs",
        ] {
            assert!(relevant(root, &root.join(rebuilds)).is_some(), "{rebuilds}");
        }
        for ignored in [
            "target/release/x.wasm",
            "node_modules/esbuild/package.json",
            "dist/main.wasm",
            "build/stage/manifest.json",
            ".annex/pg/postmaster.pid",
            ".git/index",
            "src/.routes.rs.swp",
            "src/routes.rs~",
            "src/4913",
            "bundle.tar.zst",
            "Cargo.lock",
            "package-lock.json",
        ] {
            assert!(relevant(root, &root.join(ignored)).is_none(), "{ignored}");
        }
        assert!(relevant(root, Path::new("/elsewhere/src/lib.rs")).is_none());
        assert!(relevant(root, root).is_none());
    }

    #[tokio::test]
    async fn a_burst_of_changes_is_one_rebuild() {
        let root = PathBuf::from("/p");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let event =
            |kind: EventKind, path: &str| Ok(notify::Event::new(kind).add_path(root.join(path)));
        let modify = EventKind::Modify(notify::event::ModifyKind::Any);
        tx.send(event(modify, "target/debug/x")).expect("send");
        tx.send(event(modify, "src/routes.rs")).expect("send");
        tx.send(event(
            EventKind::Create(notify::event::CreateKind::File),
            "src/new.rs",
        ))
        .expect("send");
        tx.send(event(modify, "src/routes.rs")).expect("send");
        tx.send(event(
            EventKind::Access(notify::event::AccessKind::Any),
            "ui/app.js",
        ))
        .expect("send");
        let changed = next_change(&root, &mut rx).await.expect("a change");
        assert_eq!(
            changed,
            [PathBuf::from("src/routes.rs"), PathBuf::from("src/new.rs")]
        );
        drop(tx);
        assert_eq!(next_change(&root, &mut rx).await, None);
    }
}
