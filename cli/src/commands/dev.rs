//! `annex dev`: the control plane, one worker and the edge in this process on
//! loopback, with a dev CA, key-encryption key and JWT secret under `.annex/`,
//! a private PostgreSQL cluster under `.annex/pg` when the system has the
//! binaries (data survives restarts), and the `hello` sample built, signed
//! with a dev publisher key, published and installed for tenant `dev`.
//!
//! It writes `.annex/dev.env` (edge URL, tenant, a read+write token, the
//! sample's slug) and runs until Ctrl-C, then stops every service cleanly.
//! `.annex` is readable by its owner only (0700), and so are the files in
//! it that hold a secret (0600: `dev.env`, the publisher key, the JWT
//! secret, the key-encryption key, the certificates' keys); an existing
//! directory or file from an earlier run is tightened the same way.
//! With `--watch DIR` the author's project takes the sample's place and is
//! rebuilt and reinstalled on every change ([`watch_loop`]).

mod release;
mod ui_host;
mod watch_loop;
mod welcome;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use annex_bundle::hash::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_control_plane::store::{MemoryStore, PgStore, PgStoreConfig, Store};
use annex_control_plane::{HostAppConfig, Limits, Sealer, Settings};
use annex_devpg::{ClusterMode, LocalPostgres, LocalPostgresOptions};
use annex_ops::Role;
use annex_ops::admin::AdminState;
use annex_ops::devcerts;
use annex_ops::serve::Io;
use annex_proto::{ErrorCode, pb};
use anyhow::Context as _;
use clap::Parser as _;
use serde_json::json;
use tokio::sync::watch;

use super::token::{self, Claims};
use crate::cli::DevArgs;
use crate::client::{self, PUBLISH_CHUNK, Target, remote};
use crate::output::Report;
use crate::progress;

/// The tenant the sample is installed for.
pub const DEV_TENANT: &str = "dev";
/// Publisher of the sample (its slug is `annex.hello`).
const SAMPLE_PUBLISHER: &str = "annex";
const SAMPLE_NAME: &str = "hello";

pub async fn run(args: DevArgs) -> anyhow::Result<Report> {
    let _telemetry = annex_ops::telemetry::init(annex_ops::telemetry::LogFormat::Text, "annex");
    annex_ops::tls::install_crypto_provider();
    let watched = args
        .watch
        .as_deref()
        .map(watch_loop::Project::open)
        .transpose()?;
    let dir = absolute(&args.dir)?;
    private_dir(&dir)?;
    let pki = dir.join("pki");
    devcerts::ensure_dir(&pki).context("writing the dev certificates")?;
    let tls = |role| devcerts::role_files(&pki, role).load();
    let sealer =
        Sealer::load_or_create(&dir.join("kek")).context("loading the dev key-encryption key")?;
    let jwt_secret_file = dir.join("dev-jwt.secret");
    let jwt_secret = token::load_or_create_secret(&jwt_secret_file)?;

    let (store, _postgres) = open_store(&dir, args.memory_store).await?;
    // The three parts reach each other in this process through their
    // services (the edge the worker, the worker the control plane), not
    // through TCP, TLS and HTTP/2 to themselves; the mTLS listeners still
    // serve every other caller and the long-lived streams.
    let in_process = annex_ops::in_process::Endpoints::default();
    let cp_settings = Settings {
        // Bundle bytes in the database, as by default in production.
        blobs: store.clone(),
        store,
        sealer,
        limits: Limits {
            // Local work may reach any host an install is allowed.
            platform_egress_allowlist: vec!["*".into()],
            ..Limits::default()
        },
        host_app: HostAppConfig {
            base_url: args.host_app_url.clone(),
            token: Some(args.host_app_token.clone()),
            ui_proxy_base_url: args.ui_proxy_url.clone(),
            ..HostAppConfig::new()
        },
        in_process: Some(in_process.clone()),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr} (is another `annex dev` running?)"))
    };

    let mut tasks = Vec::new();
    let cp_addr = local(args.control_plane_port);
    let cp_io = Io {
        tls: tls(Role::ControlPlane)?,
        listeners: annex_control_plane::Listeners {
            grpc: bind(cp_addr).await?,
            admin: bind(local(0)).await?,
        },
        admin: AdminState::new(),
    };
    tasks.push(tokio::spawn(annex_control_plane::run(
        cp_settings,
        cp_io,
        stopped(),
    )));
    let cp_url = format!("https://{cp_addr}");

    let worker_files = devcerts::role_files(&pki, Role::Worker);
    let worker_addr = local(args.worker_port);
    let mut worker_settings = annex_worker::config::Config::try_parse_from([
        "annex-worker".into(),
        format!("--grpc-listen={worker_addr}"),
        "--worker-id=dev-worker".into(),
        format!("--control-plane-url={cp_url}"),
        "--control-plane-name=localhost".into(),
        format!("--tls-ca={}", worker_files.ca.display()),
        format!("--tls-cert={}", worker_files.cert.display()),
        format!("--tls-key={}", worker_files.key.display()),
        format!("--cache-dir={}", dir.join("worker-cache").display()),
        // One worker and one edge in this process: nothing to propagate.
        "--drain-propagation-ms=0".into(),
    ])
    .context("configuring the worker")?
    .settings()
    .context("configuring the worker")?;
    worker_settings.serve_in_process(in_process.clone());
    let worker_io = annex_ops::serve::Io {
        listeners: annex_worker::server::Listeners {
            grpc: bind(worker_addr).await?,
            admin: bind(local(0)).await?,
            runner_api: None,
        },
        tls: tls(Role::Worker)?,
        admin: AdminState::new(),
    };
    tasks.push(tokio::spawn(annex_worker::server::run(
        worker_settings,
        worker_io,
        stopped(),
    )));

    let edge_files = devcerts::role_files(&pki, Role::Edge);
    let edge_addr = local(args.edge_port);
    let edge_config = annex_edge::Config::try_parse_from([
        "annex-edge".into(),
        format!("--http-listen={edge_addr}"),
        format!("--control-plane={cp_url}"),
        format!("--tls-ca={}", edge_files.ca.display()),
        format!("--tls-cert={}", edge_files.cert.display()),
        format!("--tls-key={}", edge_files.key.display()),
        format!("--jwt-hs256-secret-file={}", jwt_secret_file.display()),
        // The sample must not be throttled by a local benchmark.
        "--rate-capacity=1000000000".into(),
        "--rate-refill-per-sec=1000000000".into(),
        format!("--ui-cache-dir={}", dir.join("ui-cache").display()),
    ])
    .context("configuring the edge")?;
    let mut edge_settings = edge_config.settings().context("configuring the edge")?;
    edge_settings.in_process = in_process;
    tasks.push(tokio::spawn(annex_edge::run(
        edge_settings,
        annex_ops::serve::Io {
            tls: tls(Role::Edge)?,
            listeners: annex_edge::Listeners {
                http: bind(edge_addr).await?,
                admin: bind(local(0)).await?,
            },
            admin: AdminState::new(),
        },
        stopped(),
    )));

    let sample = if let Some(project) = &watched {
        Some(project.slug.clone())
    } else if args.no_sample {
        None
    } else {
        let target = Target::new(&cp_url, &pki, [None, None, None], Some("localhost".into()));
        let cp = client::ControlPlane::connect(&target).await?;
        Some(install_sample(&cp, &dir, &args.examples).await?)
    };

    let mut claims = Claims::dev(DEV_TENANT);
    claims.exp = claims.iat + 24 * 3600;
    let token = token::mint(&jwt_secret, &claims)?;
    let edge_url = format!("http://{edge_addr}");
    let env = format!(
        "ANNEX_EDGE_URL={edge_url}\nANNEX_TENANT={DEV_TENANT}\nANNEX_TOKEN={token}\nANNEX_SAMPLE={}\n\
         ANNEX_CONTROL_PLANE_URL={cp_url}\nANNEX_TLS_DIR={}\nANNEX_JWT_SECRET_FILE={}\n",
        sample.as_deref().unwrap_or(""),
        pki.display(),
        jwt_secret_file.display()
    );
    let env_file = dir.join("dev.env");
    crate::files::write_private(&env_file, env.as_bytes(), true)?;
    welcome::print(&welcome::Welcome {
        edge_url: &edge_url,
        control_plane_url: &cp_url,
        pki: &pki,
        env_file: &env_file,
        sample: sample.as_deref(),
    });
    if let Some(project) = watched {
        let setup = watch_loop::Setup {
            project,
            dev_dir: dir.clone(),
            control_plane: crate::client::Target::new(&cp_url, &pki, [None, None, None], None),
            edge_url: edge_url.clone(),
            ui_listener: bind(local(args.ui_port)).await?,
            jwt_secret: jwt_secret.clone(),
        };
        tasks.push(tokio::spawn(watch_loop::run(setup, stopped())));
    }

    tokio::select! {
        () = annex_ops::shutdown::signal() => {}
        failed = first_failure(&mut tasks) => {
            let _ = stop_tx.send(true);
            return Err(failed.context("a service of `annex dev` stopped"));
        }
    }
    eprintln!("annex dev: stopping");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), task).await;
    }
    Ok(Report::new(String::new(), json!({"stopped": true})))
}

/// Resolves when any service task ends (they only end on shutdown).
async fn first_failure(tasks: &mut [tokio::task::JoinHandle<anyhow::Result<()>>]) -> anyhow::Error {
    let (result, _, _) = futures::future::select_all(tasks.iter_mut()).await;
    match result {
        Ok(Ok(())) => anyhow::anyhow!("a service exited"),
        Ok(Err(e)) => e,
        Err(e) => anyhow::anyhow!("a service panicked: {e}"),
    }
}

/// Creates `dir` (and its parents) and makes it its owner's only (0700).
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

/// Makes an existing file its owner's only (0600): files an earlier run
/// wrote world-readable.
fn private_file(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(path))
    }
}

/// Postgres under `.annex/pg` when the binaries exist, else the in-memory store.
async fn open_store(
    dir: &Path,
    memory: bool,
) -> anyhow::Result<(Arc<dyn Store>, Option<LocalPostgres>)> {
    if !memory && annex_devpg::binaries_available() {
        let cluster = {
            let _progress = progress::spinner(
                "annex dev: starting PostgreSQL under .annex/pg (the first start creates the cluster)",
            );
            LocalPostgres::start(
                &dir.join("pg"),
                LocalPostgresOptions {
                    mode: ClusterMode::Persistent,
                },
            )
            .await
        }
        .context("starting the dev PostgreSQL cluster under .annex/pg")?;
        let store = PgStore::connect(PgStoreConfig {
            url: cluster.url(),
            max_connections: 8,
        })
        .await
        .context("connecting to the dev PostgreSQL cluster")?;
        eprintln!(
            "annex dev: PostgreSQL at {} (data in {})",
            cluster.url(),
            dir.join("pg").display()
        );
        return Ok((Arc::new(store), Some(cluster)));
    }
    eprintln!(
        "\n{0}\nannex dev: WARNING: no PostgreSQL binaries found (install postgresql-15 or set ANNEX_PG_BIN);\n\
         using the IN-MEMORY store: everything is lost when annex dev stops.\n{0}\n",
        "!".repeat(78)
    );
    Ok((Arc::new(MemoryStore::new()), None))
}

/// Builds, signs, publishes (if these bytes are new) and installs the hello
/// sample for the dev tenant through the control plane's gRPC API, as the
/// operator; returns its slug.
async fn install_sample(
    cp: &client::ControlPlane,
    dir: &Path,
    examples: &Path,
) -> anyhow::Result<String> {
    let wasm = build_sample(examples).await?;
    // Stage with a wildcard version so changed code publishes the next patch.
    let manifest_path = examples.join(SAMPLE_NAME).join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .context("parsing the sample manifest")?;
    manifest["version"] = json!("0.1.*");
    let stage = dir.join("sample");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("dist")).context("staging the sample")?;
    std::fs::write(
        stage.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    std::fs::copy(&wasm, stage.join("dist/main.wasm")).context("staging the sample component")?;
    let bytes = annex_bundle::archive::pack_dir(&stage).context("packing the sample")?;
    let hash = ContentHash::of(&bytes);

    let key_file = dir.join("dev-publisher.pem");
    let key = match std::fs::read_to_string(&key_file) {
        Ok(pem) => {
            private_file(&key_file)?;
            KeyPair::from_pkcs8_pem(&pem).context("reading the dev publisher key")?
        }
        Err(_) => {
            let key = KeyPair::generate();
            crate::files::write_private(&key_file, key.to_pkcs8_pem()?.as_bytes(), true)
                .context("writing the dev publisher key")?;
            key
        }
    };
    let keys = cp
        .trust()
        .list_keys(pb::ListKeysRequest {
            publisher: SAMPLE_PUBLISHER.into(),
        })
        .await
        .map_err(remote)?
        .into_inner()
        .keys;
    if !keys.iter().any(|k| k.key_id == key.public_key().key_id()) {
        cp.trust()
            .add_key(pb::AddKeyRequest {
                publisher: SAMPLE_PUBLISHER.into(),
                public_key: key.public_key().to_pem(),
                ..Default::default()
            })
            .await
            .map_err(remote)?;
    }
    let slug = format!("{SAMPLE_PUBLISHER}.{SAMPLE_NAME}");
    let version = match published_version(cp, &slug, &hash).await? {
        Some(version) => version,
        None => {
            let signature = annex_bundle::signing::sign_bundle(
                &key,
                &hash,
                SAMPLE_PUBLISHER,
                SAMPLE_NAME,
                "0.1.*",
            );
            publish(cp, signature, bytes).await?
        }
    };
    cp.installs()
        .install(pb::InstallRequest {
            tenant_id: DEV_TENANT.into(),
            extension: slug.clone(),
            version: version.clone(),
            config: [("greeting".to_string(), "hello from annex dev".to_string())].into(),
            egress_allowlist: Vec::new(),
        })
        .await
        .map_err(remote)?;
    eprintln!("annex dev: {slug} {version} ({hash}) installed for tenant {DEV_TENANT}");
    Ok(slug)
}

/// The version of `slug` whose bundle is `hash`, if one was published.
async fn published_version(
    cp: &client::ControlPlane,
    slug: &str,
    hash: &ContentHash,
) -> anyhow::Result<Option<String>> {
    let listed = cp
        .registry()
        .list_versions(pb::ListVersionsRequest {
            extension: slug.into(),
        })
        .await;
    let versions = match listed {
        Ok(resp) => resp.into_inner().versions,
        Err(status)
            if annex_proto::AnnexError::from_status(&status).code
                == ErrorCode::ExtensionNotFound =>
        {
            Vec::new()
        }
        Err(status) => return Err(remote(status)),
    };
    let hash = hash.to_string();
    Ok(versions
        .into_iter()
        .find(|v| v.content_hash == hash)
        .map(|v| v.version))
}

/// Publishes the sample's bundle; returns the version it became.
async fn publish(
    cp: &client::ControlPlane,
    signature: String,
    bytes: Vec<u8>,
) -> anyhow::Result<String> {
    let header = pb::PublishRequest {
        part: Some(pb::publish_request::Part::Header(pb::PublishHeader {
            signature,
            ..Default::default()
        })),
    };
    let chunks = bytes.chunks(PUBLISH_CHUNK).map(|c| pb::PublishRequest {
        part: Some(pb::publish_request::Part::Chunk(c.to_vec())),
    });
    let parts: Vec<pb::PublishRequest> = std::iter::once(header).chain(chunks).collect();
    let published = cp
        .registry()
        .publish(futures::stream::iter(parts))
        .await
        .map_err(remote)?
        .into_inner();
    published
        .version
        .map(|v| v.version)
        .context("the control plane answered a publish without its version")
}

/// Builds the hello guest for wasm32-wasip2 (adding the target if needed).
async fn build_sample(examples: &Path) -> anyhow::Result<PathBuf> {
    let examples = absolute(examples)?;
    let manifest = examples.join("Cargo.toml");
    anyhow::ensure!(
        manifest.exists(),
        "the sample's sources are not at {} (run annex dev from the repository, or pass --examples)",
        examples.display()
    );
    let has_target = tokio::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
        .unwrap_or(false);
    if !has_target {
        eprintln!("annex dev: adding the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
        let status = tokio::process::Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status()
            .await
            .context("running rustup (the Rust toolchain is needed to build the sample)")?;
        anyhow::ensure!(status.success(), "rustup target add wasm32-wasip2 failed");
    }
    let _progress = progress::spinner(
        "annex dev: building the sample guest (the first build compiles its dependencies)",
    );
    let status = tokio::process::Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            SAMPLE_NAME,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", examples.join("target"))
        .status()
        .await
        .context("running cargo to build the sample")?;
    anyhow::ensure!(status.success(), "building the sample guest failed");
    Ok(examples
        .join("target/wasm32-wasip2/release")
        .join(format!("{SAMPLE_NAME}.wasm")))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn the_dev_directory_and_its_secrets_are_the_owners_only() {
        let root = tempfile::tempdir().expect("tempdir");
        // What an earlier run left: a world-readable directory, token file
        // and publisher key.
        let dir = root.path().join(".annex");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let key = dir.join("dev-publisher.pem");
        std::fs::write(&key, "key").expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let env = dir.join("dev.env");
        std::fs::write(&env, "ANNEX_TOKEN=old").expect("write");
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        private_dir(&dir).expect("private dir");
        private_file(&key).expect("private key");
        crate::files::write_private(&env, b"ANNEX_TOKEN=new", true).expect("env");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&env), 0o600);
        assert_eq!(
            std::fs::read_to_string(&env).expect("read"),
            "ANNEX_TOKEN=new"
        );

        // A fresh directory is private from the start.
        let fresh = root.path().join("fresh/.annex");
        private_dir(&fresh).expect("fresh dir");
        assert_eq!(mode(&fresh), 0o700);
    }
}
