//! The production fleet started on loopback the way a cluster runs it. Each
//! pod is a process of its Deployment's container with its own loopback
//! address (`127.R.S.n`, a block chosen per run, so every pod keeps the
//! manifest's ports), its Secret volumes laid out by the kubelet's rules
//! (the TLS Secrets from [`ClusterPki`]), and readiness polled as the
//! kubelet polls it. The cluster's DNS for headless Services (ready pods
//! only, unless the Service publishes not-ready ones) and for pods with a
//! `subdomain` is a hosts file every process reads (`ANNEX_HOSTS_FILE`),
//! rewritten as pods come and go. Pods stop as the kubelet stops them
//! (endpoints first, then `preStop`, SIGTERM, SIGKILL after the grace
//! period) and Deployments roll as their strategy says (a new pod ready
//! before an old one stops). Nothing here reaches a real cluster.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::Child;

use super::pki::ClusterPki;
use super::volume::SecretVolume;
use super::{KubeError, Manifests, MountSource, PodInputs, Probe, Process, at, string_map, text};

/// How long a pod may take to pass its startup and readiness probes (a
/// debug build, migrations, a first compile on a loaded machine).
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// A running pod.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub deployment: String,
    pub ip: Ipv4Addr,
    pub process: Process,
    child: Child,
    log: PathBuf,
    ready: bool,
    terminating: bool,
    /// TLS Secret volumes: (Secret name, volume).
    tls: Vec<(String, SecretVolume)>,
}

impl Pod {
    /// This pod's address for the container port named `port`.
    pub fn addr(&self, port: &str) -> Option<SocketAddr> {
        let p = self.process.ports.get(port)?;
        Some(SocketAddr::from((self.ip, *p)))
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(6000);
    text.get(start..).unwrap_or_default().to_owned()
}

/// How a pod ended.
#[derive(Debug)]
pub struct Stopped {
    pub pod: String,
    pub status: ExitStatus,
    /// The grace period ran out and the kubelet killed it.
    pub killed_after_grace: bool,
    /// From the start of termination (preStop included) to exit.
    pub took: Duration,
}

/// A pod's volumes: mount point → local directory, and its TLS Secret
/// volumes (Secret name, volume).
type Mounted = (BTreeMap<PathBuf, PathBuf>, Vec<(String, SecretVolume)>);

/// A headless Service's DNS, as the cluster serves it.
#[derive(Debug)]
struct Headless {
    name: String,
    selector: BTreeMap<String, String>,
    publish_not_ready: bool,
}

/// The fleet.
pub struct Cluster {
    manifests: Manifests,
    dir: PathBuf,
    hosts: PathBuf,
    net: [u8; 2],
    next_host: u8,
    namespace: String,
    secrets: BTreeMap<(String, String), String>,
    pki: ClusterPki,
    /// `ca.crt` of every TLS Secret: the CA, or a rotation's bundle.
    ca_bundle: String,
    revision: BTreeMap<String, u32>,
    services: Vec<Headless>,
    pods: Vec<Pod>,
    /// Logs of pods that are gone, for failure messages.
    gone: Vec<(String, PathBuf)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("net", &self.net)
            .field(
                "pods",
                &self.pods.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn pod_error(pod: &str, what: impl Into<String>) -> KubeError {
    KubeError::Unsupported {
        deployment: pod.to_owned(),
        what: what.into(),
    }
}

/// Fresh values for names and the address block, without a random crate.
fn entropy() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl Cluster {
    /// A cluster for `manifests` in `dir`, `secrets` standing in for the
    /// Secrets the operator creates; certificates are issued now.
    pub fn new(
        manifests: Manifests,
        dir: &Path,
        namespace: &str,
        secrets: BTreeMap<(String, String), String>,
    ) -> Result<Cluster, KubeError> {
        let pki = ClusterPki::issue(&manifests)?;
        let services = manifests
            .of_kind("Service")
            .filter(|s| text(s, &["spec", "clusterIP"]).as_deref() == Some("None"))
            .filter_map(|s| {
                Some(Headless {
                    name: text(s, &["metadata", "name"])?,
                    selector: string_map(s, &["spec", "selector"]),
                    publish_not_ready: at(s, &["spec", "publishNotReadyAddresses"])
                        .and_then(serde_yaml::Value::as_bool)
                        == Some(true),
                })
            })
            .collect();
        let e = entropy();
        let net = [1 + (e % 254) as u8, 1 + ((e >> 8) % 254) as u8];
        std::fs::create_dir_all(dir).map_err(KubeError::Compose)?;
        let cluster = Cluster {
            ca_bundle: pki.ca_pem().to_owned(),
            manifests,
            hosts: dir.join("hosts"),
            dir: dir.to_owned(),
            net,
            next_host: 1,
            namespace: namespace.to_owned(),
            secrets,
            pki,
            revision: BTreeMap::new(),
            services,
            pods: Vec::new(),
            gone: Vec::new(),
        };
        cluster.publish_dns()?;
        Ok(cluster)
    }

    /// The certificates in use.
    pub fn pki(&self) -> &ClusterPki {
        &self.pki
    }

    /// Running pods of `deployment` that are not terminating.
    pub fn pods_of(&self, deployment: &str) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|p| p.deployment == deployment && !p.terminating)
            .collect()
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// Every pod's log tail, gone ones included.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, log) in &self.gone {
            out.push_str(&format!("--- {name} (gone) ---\n{}\n", tail(log)));
        }
        for p in &self.pods {
            out.push_str(&format!("--- {} ---\n{}\n", p.name, p.log_tail()));
        }
        out
    }

    /// The cluster DNS stand-in: every headless Service name with its
    /// published pods, and every published pod's subdomain name.
    fn publish_dns(&self) -> Result<(), KubeError> {
        let mut lines =
            String::from("# cluster DNS stand-in (headless Services, pod subdomains)\n");
        let ns = &self.namespace;
        for svc in &self.services {
            let published = self.pods.iter().filter(|p| {
                svc.selector
                    .iter()
                    .all(|(k, v)| p.process.labels.get(k) == Some(v))
                    && (svc.publish_not_ready || (p.ready && !p.terminating))
            });
            for p in published {
                lines.push_str(&format!(
                    "{} {n}.{ns}.svc {n}.{ns}.svc.cluster.local\n",
                    p.ip,
                    n = svc.name
                ));
                if p.process.subdomain.as_deref() == Some(svc.name.as_str()) {
                    lines.push_str(&format!(
                        "{} {pod}.{n}.{ns}.svc {pod}.{n}.{ns}.svc.cluster.local\n",
                        p.ip,
                        pod = p.name,
                        n = svc.name
                    ));
                }
            }
        }
        let staged = self.dir.join("hosts.tmp");
        std::fs::write(&staged, lines).map_err(KubeError::Compose)?;
        std::fs::rename(&staged, &self.hosts).map_err(KubeError::Compose)
    }

    /// Starts a pod of `deployment` (not waiting for it to be ready).
    pub fn start(&mut self, deployment: &str) -> Result<String, KubeError> {
        let revision = self.revision.get(deployment).copied().unwrap_or(0);
        let e = entropy();
        let suffix: String = (0..5)
            .map(|i| char::from(b"bcdfghjklmnpqrstvwxz2456789"[((e >> (i * 5)) % 27) as usize]))
            .collect();
        let name = format!(
            "{deployment}-{:x}c9b{revision}-{suffix}",
            0x5d8f7 + revision
        );
        let ip = Ipv4Addr::new(127, self.net[0], self.net[1], self.next_host);
        self.next_host = self
            .next_host
            .checked_add(1)
            .ok_or_else(|| pod_error(&name, "out of addresses"))?;
        let inputs = PodInputs {
            secrets: self.secrets.clone(),
            pod_name: name.clone(),
            namespace: self.namespace.clone(),
            pod_ip: ip.to_string(),
        };
        let mut process = self.manifests.process(deployment, &inputs)?;
        let root = self.dir.join("pods").join(&name);
        let (moves, tls) = self.mount(&process, &root, &inputs)?;
        process.remap_mounts(&moves);
        process.rebind(|port| format!("{ip}:{port}"));
        let unresolved = process.unresolved();
        if !unresolved.is_empty() {
            return Err(pod_error(
                &name,
                format!("unresolved references: {unresolved:?}"),
            ));
        }
        let binary = process
            .binary()
            .ok_or_else(|| pod_error(&name, "no command"))?;
        let log = root.join("process.log");
        let out = std::fs::File::create(&log).map_err(KubeError::Compose)?;
        let err = out.try_clone().map_err(KubeError::Compose)?;
        let child = tokio::process::Command::new(crate::stack::bin(binary))
            .args(&process.argv[1..])
            .env_clear()
            .envs(&process.env)
            .env(annex_ops::resolve::HOSTS_FILE_ENV, &self.hosts)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| pod_error(&name, format!("starting {binary}: {e}")))?;
        self.pods.push(Pod {
            name: name.clone(),
            deployment: deployment.to_owned(),
            ip,
            process,
            child,
            log,
            ready: false,
            terminating: false,
            tls,
        });
        self.publish_dns()?;
        Ok(name)
    }

    /// Lays out the pod's volumes under `root`: Secret volumes as the
    /// kubelet writes them, emptyDirs as directories. Returns mount point →
    /// local directory, and the TLS Secret volumes.
    fn mount(&self, p: &Process, root: &Path, inputs: &PodInputs) -> Result<Mounted, KubeError> {
        let mut moves = BTreeMap::new();
        let mut tls = Vec::new();
        for (i, (mount, source)) in p.mounts.iter().enumerate() {
            let local = root.join(format!("volume-{i}"));
            match source {
                MountSource::Secret { name, items } => {
                    let files = match self.pki.secret_files(name, &self.ca_bundle) {
                        Some(files) => files,
                        None => secret_files(name, items, inputs)
                            .map_err(|what| pod_error(&p.deployment, what))?,
                    };
                    let volume =
                        SecretVolume::create(&local, &files).map_err(KubeError::Compose)?;
                    if self.pki.material(name).is_some() {
                        tls.push((name.clone(), volume));
                    }
                }
                MountSource::ConfigMap { name } => {
                    return Err(pod_error(
                        &p.deployment,
                        format!("ConfigMap volume {name} is not supported"),
                    ));
                }
                MountSource::EmptyDir => {
                    std::fs::create_dir_all(&local).map_err(KubeError::Compose)?
                }
            }
            moves.insert(mount.clone(), local);
        }
        Ok((moves, tls))
    }

    /// Waits until pod `name` passes its startup probe, then its readiness
    /// probe, as the kubelet checks them; it then joins its Services.
    pub async fn wait_ready(&mut self, name: &str) -> Result<(), KubeError> {
        let deadline = Instant::now() + READY_DEADLINE;
        let i = self.index(name)?;
        let probes: Vec<Probe> = [
            &self.pods[i].process.startup,
            &self.pods[i].process.readiness,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        for probe in probes {
            let addr = SocketAddr::from((self.pods[i].ip, probe.port));
            loop {
                if let Ok(Some(status)) = self.pods[i].child.try_wait() {
                    return Err(pod_error(
                        name,
                        format!(
                            "exited ({status}) before it was ready:\n{}",
                            self.pods[i].log_tail()
                        ),
                    ));
                }
                if crate::http::try_send(addr, "GET", &probe.path, &[], b"")
                    .await
                    .is_ok_and(|r| r.status == 200)
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(pod_error(
                        name,
                        format!("never passed {}:\n{}", probe.path, self.pods[i].log_tail()),
                    ));
                }
                // Faster than the manifest's period, so the test waits less;
                // the condition is the kubelet's (one success).
                tokio::time::sleep(probe.period.min(Duration::from_millis(100))).await;
            }
        }
        self.pods[i].ready = true;
        self.publish_dns()
    }

    /// [`Cluster::start`], then [`Cluster::wait_ready`].
    pub async fn start_ready(&mut self, deployment: &str) -> Result<String, KubeError> {
        let name = self.start(deployment)?;
        self.wait_ready(&name).await?;
        Ok(name)
    }

    fn index(&self, name: &str) -> Result<usize, KubeError> {
        self.pods
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| pod_error(name, "no such pod"))
    }

    fn remove(&mut self, i: usize) -> Result<(), KubeError> {
        let pod = self.pods.remove(i);
        self.gone.push((pod.name, pod.log));
        self.publish_dns()
    }

    /// Terminates pod `name` as the kubelet does: out of its Services' ready
    /// endpoints, the `preStop` sleep, SIGTERM, and SIGKILL once the grace
    /// period (counted from the start) runs out.
    pub async fn stop(&mut self, name: &str) -> Result<Stopped, KubeError> {
        let i = self.index(name)?;
        self.pods[i].terminating = true;
        self.publish_dns()?;
        let began = Instant::now();
        let grace = self.pods[i].process.termination_grace;
        if let Some(sleep) = self.pods[i].process.pre_stop_sleep {
            tokio::time::sleep(sleep.min(grace)).await;
        }
        let pid = self.pods[i].child.id().ok_or_else(|| {
            pod_error(
                name,
                format!("exited before SIGTERM:\n{}", self.pods[i].log_tail()),
            )
        })?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|e| pod_error(name, format!("kill -TERM: {e}")))?;
        if !sent.success() {
            return Err(pod_error(name, "kill -TERM failed"));
        }
        let child = &mut self.pods[i].child;
        let remaining = grace.saturating_sub(began.elapsed());
        let (status, killed_after_grace) = match tokio::time::timeout(remaining, child.wait()).await
        {
            Ok(status) => (status.map_err(|e| pod_error(name, e.to_string()))?, false),
            Err(_) => {
                let _ = child.start_kill();
                (
                    child
                        .wait()
                        .await
                        .map_err(|e| pod_error(name, e.to_string()))?,
                    true,
                )
            }
        };
        self.remove(i)?;
        Ok(Stopped {
            pod: name.to_owned(),
            status,
            killed_after_grace,
            took: began.elapsed(),
        })
    }

    /// Kills pod `name` at once (a node failure); its endpoints go after.
    pub async fn kill(&mut self, name: &str) -> Result<(), KubeError> {
        let i = self.index(name)?;
        let _ = self.pods[i].child.start_kill();
        let _ = self.pods[i].child.wait().await;
        self.remove(i)
    }

    /// A rolling update of `deployment` as its strategy (`maxSurge: 1`,
    /// `maxUnavailable: 0`) runs it: for each old pod, a new one is started
    /// and ready before the old one is terminated.
    pub async fn roll(&mut self, deployment: &str) -> Result<Vec<Stopped>, KubeError> {
        let d = self.manifests.get("Deployment", deployment)?;
        let strategy =
            |k: &str| at(d, &["spec", "strategy", "rollingUpdate", k]).and_then(super::scalar);
        if strategy("maxSurge").as_deref() != Some("1")
            || strategy("maxUnavailable").as_deref() != Some("0")
        {
            return Err(pod_error(
                deployment,
                "only maxSurge 1, maxUnavailable 0 rollouts are modelled",
            ));
        }
        *self.revision.entry(deployment.to_owned()).or_default() += 1;
        let old: Vec<String> = self
            .pods_of(deployment)
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let mut stopped = Vec::new();
        for name in old {
            self.start_ready(deployment).await?;
            stopped.push(self.stop(&name).await?);
        }
        Ok(stopped)
    }

    /// Writes `ca_bundle` as `ca.crt` into every TLS Secret volume (and for
    /// pods started later), leaving the leaf certificates as they are.
    pub fn set_ca_bundle(&mut self, ca_bundle: &str) -> Result<(), KubeError> {
        self.ca_bundle = ca_bundle.to_owned();
        self.rewrite_tls()
    }

    /// Replaces every TLS Secret's certificate and key with `pki`'s (the CA
    /// bundle stays what [`Cluster::set_ca_bundle`] set).
    pub fn set_pki(&mut self, pki: ClusterPki) -> Result<(), KubeError> {
        self.pki = pki;
        self.rewrite_tls()
    }

    fn rewrite_tls(&mut self) -> Result<(), KubeError> {
        for pod in &mut self.pods {
            for (secret, volume) in &mut pod.tls {
                let files = self
                    .pki
                    .secret_files(secret, &self.ca_bundle)
                    .ok_or_else(|| pod_error(&pod.name, format!("no certificate for {secret}")))?;
                volume.update(&files).map_err(KubeError::Compose)?;
            }
        }
        Ok(())
    }

    /// `annex_tls_reloads_total` of pod `name`, from its admin listener.
    pub async fn tls_reloads(&self, name: &str) -> Option<u64> {
        let addr = self.pod(name)?.addr("admin")?;
        let r = crate::http::try_send(addr, "GET", "/metrics", &[], b"")
            .await
            .ok()?;
        r.text()
            .lines()
            .find_map(|l| l.strip_prefix("annex_tls_reloads_total "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Names of every running pod.
    pub fn pod_names(&self) -> Vec<String> {
        self.pods.iter().map(|p| p.name.clone()).collect()
    }
}

/// A non-TLS Secret's files from the test's stand-in values: `items` maps
/// keys to file names; without items every key is a file.
fn secret_files(
    name: &str,
    items: &[(String, String)],
    inputs: &PodInputs,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    if items.is_empty() {
        return Ok(inputs
            .secrets
            .iter()
            .filter(|((s, _), _)| s == name)
            .map(|((_, key), v)| (key.clone(), v.clone().into_bytes()))
            .collect());
    }
    items
        .iter()
        .map(|(key, path)| {
            inputs
                .secrets
                .get(&(name.to_owned(), key.clone()))
                .map(|v| (path.clone(), v.clone().into_bytes()))
                .ok_or_else(|| format!("no test value for Secret {name}/{key}"))
        })
        .collect()
}
