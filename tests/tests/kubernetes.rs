//! The Kubernetes manifests (`deploy/kubernetes/`): every overlay renders
//! and validates strictly against the Kubernetes API schemas and the
//! vendored CRD schemas; the production Deployments describe complete
//! processes whose probes, ports, mounts and certificates agree; each
//! production process starts from exactly what its Deployment says (files
//! standing in for the mounted Secrets, listeners moved to loopback), while
//! a setting the binary rejects is caught; and the whole production fleet,
//! started from the rendered manifests as a cluster would run it
//! (`annex_e2e::kube::cluster`), serves an extension through a rolling
//! update of its workers, a rotation of every certificate and the loss of
//! its control planes without a failed call.
//!
//! Rendering needs `kubectl` and validation `kubernetes-validate` (PyPI);
//! scripts/test.sh installs the latter. Without them these tests say so and
//! pass, except under `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use annex_devpg::{LocalPostgres, LocalPostgresOptions};
use annex_e2e::kube::cluster::Cluster;
use annex_e2e::kube::load::Load;
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
    let urls = [
        &edge.env["ANNEX_EDGE_CONTROL_PLANE"],
        &worker.env["ANNEX_WORKER_CONTROL_PLANE_URL"],
    ];
    for url in urls.iter().flat_map(|list| list.split(',')) {
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

/// The fleet the proof runs: two control planes, two workers, one edge.
const FLEET: [(&str, usize); 3] = [
    ("annex-control-plane", 2),
    ("annex-worker", 2),
    ("annex-edge", 1),
];

/// The name clients check the control plane's certificate against when they
/// come through a port-forward (docs/operators.md), as the operator does.
const CONTROL_PLANE_NAME: &str = "annex-control-plane.annex.svc";

/// The operator's connection to a control-plane pod, with the operator
/// certificate cert-manager issued.
async fn operator(cluster: &Cluster) -> tonic::transport::Channel {
    let cp = cluster.pods_of("annex-control-plane")[0]
        .addr("grpc")
        .unwrap_or_else(|| panic!("no gRPC port"));
    let material = cluster
        .pki()
        .material("annex-operator-tls")
        .unwrap_or_else(|| panic!("no operator certificate"));
    tonic::transport::Endpoint::from_shared(format!("https://{cp}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .tls_config(material.client_config(CONTROL_PLANE_NAME))
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to the control plane as the operator: {e}"))
}

/// Publishes the `hello` guest signed and installs it for the test tenant;
/// returns its registry id.
async fn publish_hello(cluster: &Cluster, dir: &Path) -> String {
    let component = std::fs::read(annex_worker::testing::guest("hello"))
        .unwrap_or_else(|e| panic!("hello guest: {e}"));
    let manifest = serde_json::json!({
        "name": "com.annex.k8s.hello", "publisher": annex_e2e::stack::PUBLISHER,
        "version": "1.0.0", "runtime": "wasm-rust@1", "capabilities": [],
        "api": {"endpoints": [{"method": "GET", "path": "/hello", "handler": "dist/main"}]}
    });
    let root = dir.join("bundle");
    std::fs::create_dir_all(root.join("dist")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.join("manifest.json"), manifest.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.join("dist/main.wasm"), component).unwrap_or_else(|e| panic!("{e}"));
    let bundle = annex_bundle::archive::pack_dir(&root).unwrap_or_else(|e| panic!("pack: {e}"));
    let channel = operator(cluster).await;
    let key = annex_bundle::signing::KeyPair::generate();
    annex_proto::pb::trust_client::TrustClient::new(channel.clone())
        .add_key(annex_proto::pb::AddKeyRequest {
            publisher: annex_e2e::stack::PUBLISHER.into(),
            public_key: key.public_key().to_pem(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("trusting the publisher key: {e}"));
    annex_e2e::stack::publish_and_install(&channel, &key, &manifest, &bundle)
        .await
        .registry_id
}

/// A session for `tenant`, signed with the `annex-jwt` test Secret.
fn bearer(tenant: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let claims = serde_json::json!({
        "sub": "user-k8s", "tenant": tenant, "email": "k8s@example.test",
        "user_type": "internal", "permissions": ["extension:read", "extension:write"],
        "aud": "annex", "iat": now, "exp": now + 3600,
    });
    let secret = secrets("")[&("annex-jwt".to_owned(), "hs256-secret".to_owned())].clone();
    let token = annex_edge::jwt::SigningKey::hs256(secret.as_bytes())
        .and_then(|k| k.sign(&claims))
        .unwrap_or_else(|e| panic!("signing a session: {e}"));
    format!("Bearer {token}")
}

/// Waits until every pod named in `before` has reloaded its TLS files
/// (its `annex_tls_reloads_total` went up).
async fn reloaded(cluster: &Cluster, before: &BTreeMap<String, u64>, step: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (pod, count) in before {
        loop {
            if cluster.tls_reloads(pod).await.is_some_and(|n| n > *count) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pod} never reloaded its certificates ({step}):\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn reload_counts(cluster: &Cluster) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for pod in cluster.pod_names() {
        let n = cluster
            .tls_reloads(&pod)
            .await
            .unwrap_or_else(|| panic!("{pod} exports no annex_tls_reloads_total"));
        out.insert(pod, n);
    }
    out
}

/// Every gRPC server (control planes, workers) presents its new certificate
/// on a new connection: a client that trusts only the new CA completes the
/// handshake and is shown exactly the certificate issued for the pod.
async fn servers_present(cluster: &Cluster) {
    let pki = cluster.pki();
    let probe = pki
        .material("annex-operator-tls")
        .unwrap_or_else(|| panic!("no operator certificate"));
    let only_new = annex_ops::tls::Tls::new(annex_ops::tls::TlsMaterial::from_pem(
        pki.ca_pem().as_bytes().to_vec(),
        probe.cert_pem.clone(),
        probe.key_pem.clone(),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    for (deployment, secret) in [
        ("annex-control-plane", "annex-control-plane-tls"),
        ("annex-worker", "annex-worker-tls"),
    ] {
        let issued = pki
            .material(secret)
            .map(|m| rustls_pki_first_der(&m.cert_pem))
            .unwrap_or_default();
        for pod in cluster.pods_of(deployment) {
            let name = match deployment {
                "annex-worker" => format!("{}.annex-worker.annex.svc", pod.name),
                _ => "annex-control-plane-headless.annex.svc".to_owned(),
            };
            let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let addr = pod.addr("grpc").unwrap_or_else(|| panic!("no gRPC port"));
            let stream =
                annex_ops::tls::dial(&only_new, addr, &server_name, Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{}: handshake trusting only the new CA: {e}", pod.name)
                    });
            let shown = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec())
                .unwrap_or_default();
            assert_eq!(shown, issued, "{} presents its new certificate", pod.name);
        }
    }
}

fn rustls_pki_first_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default()
}

/// The proof: the fleet from the rendered production manifests (2 control
/// planes, 2 workers, 1 edge on loopback, certificates with exactly the
/// SANs the Certificates ask for, the control plane found through its
/// headless Service), an extension published, installed and called
/// through the edge, then under steady load: a rolling update of the
/// workers, a rotation of every certificate (CA bundle, new leaves, old CA
/// dropped) and the loss of each original control plane in turn (a
/// replacement trusting only the new CA takes over). Zero failed calls in
/// each; the figures are printed.
/// Tenants calling the extension during the proof, each with its own
/// install and so its own rate-limit bucket.
const LOAD_TENANTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_production_fleet_serves_through_a_rollout_a_rotation_and_control_plane_loss() {
    let Some(kubectl) = kube::kubectl_or_skip() else {
        return;
    };
    let m = production(&kubectl);
    // The guest is built before any process starts (slow the first time).
    annex_worker::testing::guest("hello");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let pg = LocalPostgres::start(&dir.path().join("pg"), LocalPostgresOptions::default())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required: {e}"));
    let mut cluster = Cluster::new(m, &dir.path().join("cluster"), "annex", secrets(&pg.url()))
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    for (deployment, replicas) in FLEET {
        for _ in 0..replicas {
            if let Err(e) = cluster.start_ready(deployment).await {
                panic!("{deployment} from the production manifest: {e}");
            }
        }
    }
    eprintln!(
        "fleet ready in {:.1} s: {:?}",
        started.elapsed().as_secs_f64(),
        cluster.pod_names()
    );

    let registry_id = publish_hello(&cluster, dir.path()).await;
    let edge = cluster.pods_of("annex-edge")[0]
        .addr("http")
        .unwrap_or_else(|| panic!("no edge HTTP port"));
    let path = format!("/api/ext/{registry_id}/hello");
    let auth = bearer(annex_e2e::stack::TENANT);
    annex_testkit::assert_eventually!(
        Duration::from_secs(120),
        async || {
            annex_e2e::http::try_send(edge, "GET", &path, &[("authorization", &auth)], b"")
                .await
                .is_ok_and(|r| r.status == 200)
        },
        "the edge serving the extension:\n{}",
        cluster.logs()
    );

    // Steady load within the rate limit the manifest sets, which is per
    // install (a 429 would count as a failure): the extension installed for
    // LOAD_TENANTS more tenants, one caller each at 80 % of the refill rate.
    let mut callers = vec![vec![("authorization".to_owned(), auth.clone())]];
    let installs = annex_proto::pb::installs_client::InstallsClient::new(operator(&cluster).await);
    for i in 1..LOAD_TENANTS {
        let tenant = format!("tenant-k8s-{i}");
        installs
            .clone()
            .install(annex_proto::pb::InstallRequest {
                tenant_id: tenant.clone(),
                extension: registry_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("installing for {tenant}: {e}"));
        let auth = bearer(&tenant);
        annex_testkit::assert_eventually!(
            Duration::from_secs(30),
            async || {
                annex_e2e::http::try_send(edge, "GET", &path, &[("authorization", &auth)], b"")
                    .await
                    .is_ok_and(|r| r.status == 200)
            },
            "the edge serving {tenant}'s install:\n{}",
            cluster.logs()
        );
        callers.push(vec![("authorization".to_owned(), auth)]);
    }
    let refill: f64 = cluster.pods_of("annex-edge")[0]
        .process
        .env
        .get("ANNEX_EDGE_RATE_REFILL_PER_SEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let load = Load::start(
        edge,
        path,
        callers,
        Duration::from_secs_f64(1.0 / (refill * 0.8)),
    );
    let mut report = Vec::new();

    // 1. A rolling update of the workers.
    let began = Instant::now();
    let stopped = cluster
        .roll("annex-worker")
        .await
        .unwrap_or_else(|e| panic!("rolling the workers: {e}\n{}", cluster.logs()));
    let figures = load.window();
    for s in &stopped {
        assert!(
            s.status.success() && !s.killed_after_grace,
            "{} did not drain within its grace period: {s:?}\n{}",
            s.pod,
            cluster.logs()
        );
    }
    let drains: Vec<String> = stopped
        .iter()
        .map(|s| format!("{:.1} s", s.took.as_secs_f64()))
        .collect();
    report.push(format!(
        "rolling update of {} workers in {:.1} s (each drained in {}): {figures}",
        stopped.len(),
        began.elapsed().as_secs_f64(),
        drains.join(", ")
    ));
    assert_eq!(
        figures.failures, 0,
        "failed calls during the rollout: {:?}",
        figures.failed
    );

    // 2. Every certificate rotated under the running processes.
    let began = Instant::now();
    let next = cluster.pki().rotated().unwrap_or_else(|e| panic!("{e}"));
    let (old_ca, new_ca) = (cluster.pki().ca_pem().to_owned(), next.ca_pem().to_owned());
    let before = reload_counts(&cluster).await;
    cluster
        .set_ca_bundle(&format!("{old_ca}{new_ca}"))
        .unwrap_or_else(|e| panic!("{e}"));
    reloaded(&cluster, &before, "CA bundle").await;
    let before = reload_counts(&cluster).await;
    cluster.set_pki(next).unwrap_or_else(|e| panic!("{e}"));
    reloaded(&cluster, &before, "new leaf certificates").await;
    let before = reload_counts(&cluster).await;
    cluster
        .set_ca_bundle(&new_ca)
        .unwrap_or_else(|e| panic!("{e}"));
    reloaded(&cluster, &before, "old CA dropped").await;
    servers_present(&cluster).await;
    let figures = load.window();
    report.push(format!(
        "rotation of every certificate ({} processes, 3 steps) in {:.1} s: {figures}",
        before.len(),
        began.elapsed().as_secs_f64()
    ));
    assert_eq!(
        figures.failures, 0,
        "failed calls during the rotation: {:?}",
        figures.failed
    );

    // 3. Each original control plane lost in turn (kill -9); a replacement,
    // which trusts only the new CA, takes over: edges and workers must
    // reach it with their new certificates.
    let began = Instant::now();
    let originals: Vec<String> = cluster
        .pods_of("annex-control-plane")
        .iter()
        .map(|p| p.name.clone())
        .collect();
    cluster
        .kill(&originals[0])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cluster
        .start_ready("annex-control-plane")
        .await
        .unwrap_or_else(|e| panic!("replacement control plane: {e}\n{}", cluster.logs()));
    cluster
        .kill(&originals[1])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let alone = chrono::Utc::now() + chrono::Duration::seconds(1);
    let store =
        annex_control_plane::store::PgStore::connect(annex_control_plane::store::PgStoreConfig {
            url: pg.url(),
            max_connections: 1,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let workers: Vec<String> = cluster
        .pods_of("annex-worker")
        .iter()
        .map(|p| p.name.clone())
        .collect();
    annex_testkit::assert_eventually!(
        Duration::from_secs(30),
        async || {
            use annex_control_plane::store::{FleetStore as _, QuotaStore as _};
            let seen = store.list_workers(alone).await.unwrap_or_default();
            let heartbeats = workers.iter().all(|w| seen.iter().any(|r| &r.id == w));
            // The replica itself and the edge's routes stream.
            let watchers = store.count_route_watchers(alone).await.unwrap_or_default();
            heartbeats && watchers >= 2
        },
        "workers and the edge reaching the replacement control plane:\n{}",
        cluster.logs()
    );
    let figures = load.stop().await;
    report.push(format!(
        "control-plane loss (2 killed, 1 replacement) in {:.1} s: {figures}",
        began.elapsed().as_secs_f64()
    ));
    for line in &report {
        println!("{line}");
    }
    assert_eq!(
        figures.failures, 0,
        "failed calls while control planes were lost: {:?}",
        figures.failed
    );
}
