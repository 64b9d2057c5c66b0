//! The Kubernetes manifests (`deploy/kubernetes/`): every overlay renders
//! and validates strictly against the Kubernetes API schemas and the
//! vendored CRD schemas; the production Deployments describe complete
//! processes whose probes, ports, mounts and certificates agree; and each
//! production process starts from exactly what its Deployment says (files
//! standing in for the mounted Secrets, listeners moved to loopback), while
//! a setting the binary rejects is caught.
//!
//! Rendering needs `kubectl` and validation `kubernetes-validate` (PyPI);
//! scripts/test.sh installs the latter. Without them these tests say so and
//! pass, except under `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use annex_devpg::{LocalPostgres, LocalPostgresOptions};
use annex_e2e::kube::{self, Manifests, MountSource, PodInputs, Process};
use annex_ops::Role;

/// Each overlay, with the optional components an operator may add.
const RENDERINGS: [(&str, &[&str]); 4] = [
    ("overlays/dev", &[]),
    ("overlays/dev", &["components/monitoring"]),
    ("overlays/production", &[]),
    (
        "overlays/production",
        &["components/cloudnative-pg", "components/monitoring"],
    ),
];

/// The oldest Kubernetes the manifests support (the kubelet's preStop
/// `sleep`) and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30", "1.37"];

const BINARIES: [&str; 3] = ["annex-control-plane", "annex-worker", "annex-edge"];

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn render(kubectl: &Path, scratch: &Path, overlay: &str, components: &[&str]) -> String {
    let dir = scratch.join(format!(
        "{}-{}",
        overlay.replace('/', "-"),
        components.len()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
    kube::render_with(kubectl, &dir, overlay, components)
        .unwrap_or_else(|e| panic!("rendering {overlay} with {components:?}: {e}"))
}

fn production(kubectl: &Path) -> Manifests {
    let text = kube::render(kubectl, &kube::deploy_dir().join("overlays/production"))
        .unwrap_or_else(|e| panic!("{e}"));
    Manifests::parse(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// `python3 -c "import kubernetes_validate"` works, or the reason it does not.
fn validator_available() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import kubernetes_validate, jsonschema, yaml"])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_overlay_renders_and_validates_strictly() {
    let Some(kubectl) = kube::kubectl_or_skip() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut files = Vec::new();
    for (overlay, components) in RENDERINGS {
        let text = render(&kubectl, scratch.path(), overlay, components);
        let m = Manifests::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let kinds = m.kinds();
        eprintln!("{overlay} + {components:?}: {kinds:?}");
        for kind in [
            "Namespace",
            "Deployment",
            "Service",
            "ConfigMap",
            "Certificate",
            "Issuer",
            "NetworkPolicy",
        ] {
            assert!(kinds.contains_key(kind), "{overlay}: no {kind}");
        }
        if overlay.ends_with("production") {
            assert_eq!(kinds.get("HorizontalPodAutoscaler"), Some(&2));
            assert_eq!(kinds.get("PodDisruptionBudget"), Some(&3));
            assert_eq!(kinds.get("Ingress"), Some(&1));
        } else {
            assert_eq!(kinds.get("StatefulSet"), Some(&1), "dev runs its Postgres");
        }
        for c in components {
            let kind = if c.ends_with("cloudnative-pg") {
                "Cluster"
            } else {
                "PodMonitor"
            };
            assert_eq!(kinds.get(kind), Some(&1), "{c} adds a {kind}");
        }
        let file = scratch.path().join(format!(
            "{}-{}.yaml",
            overlay.replace('/', "-"),
            components.len()
        ));
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("write: {e}"));
        files.push(file);
    }

    if let Err(why) = validator_available() {
        assert!(
            !ci(),
            "kubernetes-validate is required (pip install kubernetes-validate): {why}"
        );
        eprintln!("SKIPPED validation: kubernetes-validate is not installed ({why})");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kube-validate.py");
    for version in KUBERNETES_VERSIONS {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args(["--kubernetes-version", version])
            .args(&files)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let report = String::from_utf8_lossy(&out.stdout);
        eprintln!("{report}");
        assert!(
            out.status.success(),
            "validation against Kubernetes {version} failed:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Test values for every Secret the production Deployments read.
fn secrets(database_url: &str) -> BTreeMap<(String, String), String> {
    [
        ("annex-kek", "kek", hex::encode([7u8; 32])),
        ("annex-database-url", "url", database_url.to_owned()),
        (
            "annex-jwt",
            "hs256-secret",
            "k8s-test-secret-k8s-test-secret-k8s".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(s, k, v)| ((s.to_owned(), k.to_owned()), v))
    .collect()
}

fn inputs(deployment: &str, database_url: &str) -> PodInputs {
    PodInputs {
        secrets: secrets(database_url),
        pod_name: format!("{deployment}-7d9f8b6c5-x2x4z"),
        namespace: "annex".into(),
        pod_ip: "127.0.0.1".into(),
    }
}

#[test]
fn production_deployments_describe_complete_processes() {
    let Some(kubectl) = kube::kubectl_or_skip() else {
        return;
    };
    let m = production(&kubectl);
    let mut names = m.deployment_names();
    names.sort();
    assert_eq!(names, ["annex-control-plane", "annex-edge", "annex-worker"]);
    for name in &names {
        let p = m
            .process(name, &inputs(name, "postgres://test"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.binary(), Some(name.as_str()));
        assert!(p.unresolved().is_empty(), "{name}: {:?}", p.unresolved());
        let admin = p.ports.get("admin").copied();
        for probe in [&p.liveness, &p.readiness] {
            let probe = probe
                .as_ref()
                .unwrap_or_else(|| panic!("{name} lacks a probe"));
            assert_eq!(Some(probe.port), admin, "{name} probes its admin listener");
        }
        let listen = p
            .env
            .iter()
            .find(|(k, _)| k.ends_with("_ADMIN_LISTEN"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(
            listen.ends_with(&format!(":{}", admin.unwrap_or(0))),
            "{name}: {listen}"
        );
        // Every file a setting names is inside something mounted.
        for (k, v) in p.env.iter().filter(|(_, v)| v.starts_with('/')) {
            assert!(
                p.mounts.keys().any(|m| Path::new(v).starts_with(m)),
                "{name}: {k}={v} is not under a mount"
            );
        }
    }

    let cp = m
        .process("annex-control-plane", &inputs("cp", "x"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cp.replicas.unwrap_or(1) >= 2,
        "the control plane is replicated"
    );
    let worker = m
        .process("annex-worker", &inputs("w", "x"))
        .unwrap_or_else(|e| panic!("{e}"));
    let env_secs = |k: &str, per_sec: u64| {
        worker
            .env
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / per_sec
    };
    let drain = env_secs("ANNEX_WORKER_DRAIN_PROPAGATION_MS", 1000)
        + env_secs("ANNEX_WORKER_SHUTDOWN_GRACE_SECS", 1);
    assert!(
        worker.termination_grace.as_secs() > drain,
        "the pod outlives the worker's drain ({drain} s)"
    );

    // Certificates: one per role with its URI SAN, the control plane's names
    // covering the URL edges and workers dial, the workers' the address they
    // register.
    let certs = m.certificates();
    for role in Role::ALL {
        let uri = format!("urn:annex:role:{}", role.as_str());
        assert_eq!(
            certs.iter().filter(|c| c.uris.contains(&uri)).count(),
            1,
            "one certificate for {uri}"
        );
    }
    let cp_cert = certs
        .iter()
        .find(|c| c.secret_name == "annex-control-plane-tls")
        .unwrap_or_else(|| panic!("no control-plane certificate"));
    let edge = m
        .process("annex-edge", &inputs("e", "x"))
        .unwrap_or_else(|e| panic!("{e}"));
    for url in [
        &edge.env["ANNEX_EDGE_CONTROL_PLANE"],
        &worker.env["ANNEX_WORKER_CONTROL_PLANE_URL"],
    ] {
        let host = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
            .unwrap_or_default();
        assert!(
            cp_cert.dns_names.contains(&host),
            "{host} is not in {:?}",
            cp_cert.dns_names
        );
    }
    assert!(
        cp_cert
            .dns_names
            .contains(&worker.env["ANNEX_WORKER_CONTROL_PLANE_NAME"])
    );
    let worker_cert = certs
        .iter()
        .find(|c| c.secret_name == "annex-worker-tls")
        .unwrap_or_else(|| panic!("no worker certificate"));
    let advertised = &worker.env["ANNEX_WORKER_ADVERTISE_ADDRESS"];
    let host = advertised
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or_default();
    let parent = host.split_once('.').map(|(_, p)| p).unwrap_or_default();
    assert!(
        worker_cert.dns_names.contains(&format!("*.{parent}")),
        "{host} is not covered by {:?}",
        worker_cert.dns_names
    );
}

/// A Deployment's process started on loopback: Secrets written as files,
/// emptyDirs as directories, listeners on free ports.
struct Started {
    child: tokio::process::Child,
    live: SocketAddr,
    live_path: String,
    log: PathBuf,
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"))
        .to_string()
}

fn role(deployment: &str) -> Role {
    match deployment {
        "annex-control-plane" => Role::ControlPlane,
        "annex-worker" => Role::Worker,
        _ => Role::Edge,
    }
}

/// Lays out the files a kubelet would mount, moves them and the listeners
/// to this machine, and starts the binary with exactly the resulting argv
/// and environment.
fn start(mut p: Process, dir: &Path, pki: &Path, inputs: &PodInputs) -> Started {
    let root = dir.join(&p.deployment);
    let mut moves = BTreeMap::new();
    for (i, (mount, source)) in p.mounts.clone().into_iter().enumerate() {
        let local = root.join(format!("mount-{i}"));
        std::fs::create_dir_all(&local).unwrap_or_else(|e| panic!("mkdir: {e}"));
        if let MountSource::Secret { name, items } = &source {
            let files: Vec<(String, Vec<u8>)> = if name.ends_with("-tls") {
                let f = annex_ops::devcerts::role_files(pki, role(&p.deployment));
                [("ca.crt", f.ca), ("tls.crt", f.cert), ("tls.key", f.key)]
                    .into_iter()
                    .map(|(n, src)| {
                        let data = std::fs::read(&src).unwrap_or_else(|e| panic!("{e}"));
                        (n.to_owned(), data)
                    })
                    .collect()
            } else if items.is_empty() {
                // No items: every key of the Secret, each as a file.
                inputs
                    .secrets
                    .iter()
                    .filter(|((secret, _), _)| secret == name)
                    .map(|((_, key), value)| (key.clone(), value.clone().into_bytes()))
                    .collect()
            } else {
                items
                    .iter()
                    .map(|(key, path)| {
                        let value = inputs
                            .secrets
                            .get(&(name.clone(), key.clone()))
                            .unwrap_or_else(|| panic!("no test value for {name}/{key}"));
                        (path.clone(), value.clone().into_bytes())
                    })
                    .collect()
            };
            for (file, data) in files {
                std::fs::write(local.join(file), data).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        moves.insert(mount, local);
    }
    p.remap_mounts(&moves);
    let moved = p.rebind(|_| free_addr());
    let probe = p
        .liveness
        .clone()
        .unwrap_or_else(|| panic!("{} has no liveness probe", p.deployment));
    let live: SocketAddr = moved
        .get(&probe.port)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{}: no listener on the probe's port", p.deployment));
    let binary = p.binary().unwrap_or_else(|| panic!("no command"));
    let log = root.join("process.log");
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let child = tokio::process::Command::new(annex_e2e::stack::bin(binary))
        .args(&p.argv[1..])
        .env_clear()
        .envs(&p.env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    Started {
        child,
        live,
        live_path: probe.path,
        log,
    }
}

/// Polls the liveness probe as the kubelet would. `Err` with the exit status
/// and log when the process ends first.
async fn live(s: &mut Started) -> Result<(), String> {
    let answered = annex_testkit::eventually(Duration::from_secs(90), async || {
        if let Ok(Some(status)) = s.child.try_wait() {
            return Some(Err(status));
        }
        annex_e2e::http::try_send(s.live, "GET", &s.live_path, &[], b"")
            .await
            .is_ok_and(|r| r.status == 200)
            .then_some(Ok(()))
    })
    .await;
    let log = || std::fs::read_to_string(&s.log).unwrap_or_default();
    match answered {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(format!("exited ({status}):\n{}", log())),
        Err(timed_out) => Err(format!(
            "never answered its liveness probe ({timed_out}):\n{}",
            log()
        )),
    }
}

#[tokio::test]
async fn production_processes_start_as_their_deployments_say() {
    let Some(kubectl) = kube::kubectl_or_skip() else {
        return;
    };
    let m = production(&kubectl);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let pki = dir.path().join("pki");
    annex_ops::devcerts::ensure_dir(&pki).unwrap_or_else(|e| panic!("dev PKI: {e}"));
    let pg = LocalPostgres::start(&dir.path().join("pg"), LocalPostgresOptions::default())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required: {e}"));

    let mut running = Vec::new();
    for name in BINARIES {
        let inputs = inputs(name, &pg.url());
        let p = m.process(name, &inputs).unwrap_or_else(|e| panic!("{e}"));
        let mut s = start(p, dir.path(), &pki, &inputs);
        live(&mut s)
            .await
            .unwrap_or_else(|why| panic!("{name} from the production manifest: {why}"));
        running.push(s);
    }

    // A setting the binary rejects (here a ConfigMap value that is not a
    // number) stops the process before it ever answers a probe.
    let inputs = inputs("annex-worker", &pg.url());
    let mut p = m
        .process("annex-worker", &inputs)
        .unwrap_or_else(|e| panic!("{e}"));
    p.deployment = "annex-worker-rejected".into();
    p.env
        .insert("ANNEX_WORKER_CAPACITY".into(), "sixty-four".into());
    let mut s = start(p, dir.path(), &pki, &inputs);
    let why = live(&mut s)
        .await
        .expect_err("a rejected setting is caught");
    assert!(
        why.contains("ANNEX_WORKER_CAPACITY") || why.contains("capacity"),
        "{why}"
    );
}
