//! Annex's Kubernetes manifests (`deploy/kubernetes/`) as the tests see
//! them: rendered with `kubectl kustomize`, parsed, and each Deployment's
//! container turned into the process a kubelet would start, with its
//! command, arguments, environment (ConfigMaps from the rendered output,
//! Secrets, pod fields and `$(VAR)` references resolved as the kubelet
//! resolves them), ports, probes, mounts and grace period, plus the
//! Certificates cert-manager would issue.
//!
//! This module only reads manifests and describes processes. Its
//! submodules act on them: `cluster` starts them as pods on loopback (with
//! the cluster's DNS and Secret volumes stood in for), `pki` issues what
//! cert-manager would, `volume` writes Secret volumes as the kubelet does,
//! `load` drives traffic through the edge. None of it reaches a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize as _;
use serde_yaml::Value;

/// What can go wrong between the manifests and a process description.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("running kubectl: {0}")]
    Kubectl(std::io::Error),
    #[error("kubectl kustomize {dir} failed: {stderr}")]
    Render { dir: PathBuf, stderr: String },
    #[error("parsing the rendered manifests: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("writing the composed kustomization: {0}")]
    Compose(std::io::Error),
    #[error("no {kind} named {name} in the rendered manifests")]
    Missing { kind: &'static str, name: String },
    #[error("{deployment}: {what}")]
    Unsupported { deployment: String, what: String },
}

/// The repository's `deploy/kubernetes` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// `kubectl` on PATH. Missing: `None` with a notice, except under `CI=true`
/// where a missing prerequisite fails the test instead of skipping it.
pub fn kubectl_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "kubectl is required for the Kubernetes tests (CI=true never skips them)"
        );
        eprintln!("SKIPPED: kubectl is not on PATH, so the manifests cannot be rendered");
    }
    found
}

/// `kubectl kustomize <dir>`.
pub fn render(kubectl: &Path, dir: &Path) -> Result<String, KubeError> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(KubeError::Kubectl)?;
    if !out.status.success() {
        return Err(KubeError::Render {
            dir: dir.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Renders `overlay` (relative to [`deploy_dir`]) with `components` added,
/// as an operator would by listing them in the overlay, through a
/// kustomization in `scratch` (kustomize refuses absolute paths, so the
/// references are relative to it).
pub fn render_with(
    kubectl: &Path,
    scratch: &Path,
    overlay: &str,
    components: &[&str],
) -> Result<String, KubeError> {
    let deploy = deploy_dir().canonicalize().map_err(KubeError::Compose)?;
    let scratch = scratch.canonicalize().map_err(KubeError::Compose)?;
    let up = "../".repeat(scratch.components().count().saturating_sub(1));
    let rel = |p: &str| {
        let abs = deploy.join(p);
        format!("{up}{}", abs.strip_prefix("/").unwrap_or(&abs).display())
    };
    let mut text = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    text.push_str(&format!("  - {}\n", rel(overlay)));
    if !components.is_empty() {
        text.push_str("components:\n");
        for c in components {
            text.push_str(&format!("  - {}\n", rel(c)));
        }
    }
    std::fs::write(scratch.join("kustomization.yaml"), text).map_err(KubeError::Compose)?;
    render(kubectl, &scratch)
}

/// Rendered manifests: every document of a `kubectl kustomize` output.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub docs: Vec<Value>,
}

/// Stand-ins for the values a cluster would supply: Secret contents (by
/// Secret name and key) and the pod's own fields.
#[derive(Debug, Clone, Default)]
pub struct PodInputs {
    pub secrets: BTreeMap<(String, String), String>,
    pub pod_name: String,
    pub namespace: String,
    pub pod_ip: String,
}

/// An HTTP probe: path and container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub path: String,
    pub port: u16,
    pub period: Duration,
    pub failure_threshold: u32,
}

/// What is mounted at a path in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A Secret; `items` maps keys to file names (empty: every key by name).
    Secret {
        name: String,
        items: Vec<(String, String)>,
    },
    ConfigMap {
        name: String,
    },
    EmptyDir,
}

/// One Deployment's container as the process a kubelet would start.
#[derive(Debug, Clone)]
pub struct Process {
    pub deployment: String,
    pub replicas: Option<u64>,
    /// `command` followed by `args`.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Named container ports.
    pub ports: BTreeMap<String, u16>,
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
    pub mounts: BTreeMap<PathBuf, MountSource>,
    pub termination_grace: Duration,
    /// The kubelet's `preStop` sleep, run before SIGTERM (within the grace
    /// period).
    pub pre_stop_sleep: Option<Duration>,
    /// The pod template's labels (what Services select).
    pub labels: BTreeMap<String, String>,
    /// The pod's `subdomain`: with a headless Service of that name, the pod
    /// has the DNS name `<pod>.<subdomain>.<namespace>.svc`.
    pub subdomain: Option<String>,
}

/// A cert-manager Certificate: what the issued certificate must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub name: String,
    pub secret_name: String,
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub usages: Vec<String>,
    pub is_ca: bool,
    pub issuer: String,
    pub duration: Option<String>,
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    at(v, path).and_then(Value::as_str).map(str::to_owned)
}

fn strings(v: &Value, path: &[&str]) -> Vec<String> {
    at(v, path)
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A mapping of strings (labels, selectors).
fn string_map(v: &Value, path: &[&str]) -> BTreeMap<String, String> {
    at(v, path)
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A scalar as the string the API server would store (`"1"` and `1` alike).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Kubelet's `$(VAR)` expansion: defined names are replaced, `$$` is a
/// literal `$`, anything else is left as written.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        if let Some(after) = tail.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(name_end) = tail.strip_prefix('(').and_then(|t| t.find(')')) {
            let name = &tail[1..=name_end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &tail[name_end + 2..];
        } else {
            out.push('$');
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

impl Manifests {
    pub fn parse(rendered: &str) -> Result<Manifests, KubeError> {
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(rendered) {
            let v = Value::deserialize(doc)?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        Ok(Manifests { docs })
    }

    /// How many resources of each kind.
    pub fn kinds(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for d in &self.docs {
            let kind = text(d, &["kind"]).unwrap_or_default();
            *out.entry(kind).or_insert(0) += 1;
        }
        out
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs
            .iter()
            .filter(move |d| d.get("kind").and_then(Value::as_str) == Some(kind))
    }

    pub fn get(&self, kind: &'static str, name: &str) -> Result<&Value, KubeError> {
        self.of_kind(kind)
            .find(|d| text(d, &["metadata", "name"]).as_deref() == Some(name))
            .ok_or_else(|| KubeError::Missing {
                kind,
                name: name.to_owned(),
            })
    }

    pub fn deployment_names(&self) -> Vec<String> {
        self.of_kind("Deployment")
            .filter_map(|d| text(d, &["metadata", "name"]))
            .collect()
    }

    fn config_map(&self, name: &str) -> Result<BTreeMap<String, String>, KubeError> {
        let cm = self.get("ConfigMap", name)?;
        Ok(at(cm, &["data"])
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v)?)))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn certificates(&self) -> Vec<CertificateSpec> {
        self.of_kind("Certificate")
            .map(|c| CertificateSpec {
                name: text(c, &["metadata", "name"]).unwrap_or_default(),
                secret_name: text(c, &["spec", "secretName"]).unwrap_or_default(),
                common_name: text(c, &["spec", "commonName"]),
                dns_names: strings(c, &["spec", "dnsNames"]),
                uris: strings(c, &["spec", "uris"]),
                usages: strings(c, &["spec", "usages"]),
                is_ca: at(c, &["spec", "isCA"]).and_then(Value::as_bool) == Some(true),
                issuer: text(c, &["spec", "issuerRef", "name"]).unwrap_or_default(),
                duration: text(c, &["spec", "duration"]),
            })
            .collect()
    }

    /// The first container of Deployment `name`, resolved with `inputs`.
    pub fn process(&self, name: &str, inputs: &PodInputs) -> Result<Process, KubeError> {
        let deployment = self.get("Deployment", name)?;
        let pod = at(deployment, &["spec", "template", "spec"]).ok_or_else(|| {
            KubeError::Unsupported {
                deployment: name.to_owned(),
                what: "no pod template".into(),
            }
        })?;
        let container =
            seq(pod, &["containers"])
                .first()
                .ok_or_else(|| KubeError::Unsupported {
                    deployment: name.to_owned(),
                    what: "no container".into(),
                })?;
        let unsupported = |what: String| KubeError::Unsupported {
            deployment: name.to_owned(),
            what,
        };
        let env = self.environment(container, inputs).map_err(unsupported)?;
        let mut argv = strings(container, &["command"]);
        argv.extend(
            strings(container, &["args"])
                .iter()
                .map(|a| expand(a, &env)),
        );
        let ports: BTreeMap<String, u16> = seq(container, &["ports"])
            .iter()
            .filter_map(|p| {
                let port = at(p, &["containerPort"])?.as_u64()?;
                Some((text(p, &["name"])?, u16::try_from(port).ok()?))
            })
            .collect();
        let probe = |key: &str| -> Result<Option<Probe>, KubeError> {
            let Some(p) = container.get(key) else {
                return Ok(None);
            };
            let port = match at(p, &["httpGet", "port"]) {
                Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Some(Value::String(s)) => ports.get(s).copied(),
                _ => None,
            }
            .ok_or_else(|| unsupported(format!("{key} is not an httpGet on a known port")))?;
            let num =
                |k: &str, default: u64| at(p, &[k]).and_then(Value::as_u64).unwrap_or(default);
            Ok(Some(Probe {
                path: text(p, &["httpGet", "path"]).unwrap_or_else(|| "/".into()),
                port,
                period: Duration::from_secs(num("periodSeconds", 10)),
                failure_threshold: u32::try_from(num("failureThreshold", 3)).unwrap_or(u32::MAX),
            }))
        };
        Ok(Process {
            deployment: name.to_owned(),
            replicas: at(deployment, &["spec", "replicas"]).and_then(Value::as_u64),
            argv,
            startup: probe("startupProbe")?,
            liveness: probe("livenessProbe")?,
            readiness: probe("readinessProbe")?,
            mounts: mounts(pod, container),
            termination_grace: Duration::from_secs(
                at(pod, &["terminationGracePeriodSeconds"])
                    .and_then(Value::as_u64)
                    .unwrap_or(30),
            ),
            pre_stop_sleep: at(container, &["lifecycle", "preStop", "sleep", "seconds"])
                .and_then(Value::as_u64)
                .map(Duration::from_secs),
            labels: string_map(deployment, &["spec", "template", "metadata", "labels"]),
            subdomain: text(pod, &["subdomain"]),
            env,
            ports,
        })
    }

    /// `envFrom` first (later sources win), then `env` in order, each value
    /// expanded against what is defined before it: the kubelet's order.
    fn environment(
        &self,
        container: &Value,
        inputs: &PodInputs,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut env = BTreeMap::new();
        for from in seq(container, &["envFrom"]) {
            let prefix = text(from, &["prefix"]).unwrap_or_default();
            if let Some(cm) = text(from, &["configMapRef", "name"]) {
                let data = self.config_map(&cm).map_err(|e| e.to_string())?;
                env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
            } else if let Some(secret) = text(from, &["secretRef", "name"]) {
                for ((s, k), v) in &inputs.secrets {
                    if *s == secret {
                        env.insert(format!("{prefix}{k}"), v.clone());
                    }
                }
            } else {
                return Err("envFrom without a configMapRef or secretRef".into());
            }
        }
        for var in seq(container, &["env"]) {
            let name = text(var, &["name"]).ok_or("env entry without a name")?;
            let value =
                if let Some(v) = var.get("value") {
                    expand(&scalar(v).unwrap_or_default(), &env)
                } else if let Some(field) = text(var, &["valueFrom", "fieldRef", "fieldPath"]) {
                    match field.as_str() {
                        "metadata.name" => inputs.pod_name.clone(),
                        "metadata.namespace" => inputs.namespace.clone(),
                        "status.podIP" => inputs.pod_ip.clone(),
                        other => return Err(format!("{name}: field {other} is not supported")),
                    }
                } else if let Some(r) = at(var, &["valueFrom", "configMapKeyRef"]) {
                    let (cm, key) = (text(r, &["name"]), text(r, &["key"]));
                    let data = self
                        .config_map(&cm.unwrap_or_default())
                        .map_err(|e| e.to_string())?;
                    let key = key.unwrap_or_default();
                    data.get(&key)
                        .cloned()
                        .ok_or_else(|| format!("{name}: ConfigMap has no key {key}"))?
                } else if let Some(r) = at(var, &["valueFrom", "secretKeyRef"]) {
                    let id = (
                        text(r, &["name"]).unwrap_or_default(),
                        text(r, &["key"]).unwrap_or_default(),
                    );
                    inputs.secrets.get(&id).cloned().ok_or_else(|| {
                        format!("{name}: no test value for Secret {}/{}", id.0, id.1)
                    })?
                } else {
                    return Err(format!("{name}: unsupported valueFrom"));
                };
            env.insert(name, value);
        }
        Ok(env)
    }
}

fn mounts(pod: &Value, container: &Value) -> BTreeMap<PathBuf, MountSource> {
    let volumes: BTreeMap<String, MountSource> = seq(pod, &["volumes"])
        .iter()
        .filter_map(|v| {
            let source = if let Some(s) = v.get("secret") {
                MountSource::Secret {
                    name: text(s, &["secretName"])?,
                    items: seq(s, &["items"])
                        .iter()
                        .filter_map(|i| Some((text(i, &["key"])?, text(i, &["path"])?)))
                        .collect(),
                }
            } else if let Some(c) = v.get("configMap") {
                MountSource::ConfigMap {
                    name: text(c, &["name"])?,
                }
            } else if v.get("emptyDir").is_some() {
                MountSource::EmptyDir
            } else {
                return None;
            };
            Some((text(v, &["name"])?, source))
        })
        .collect();
    seq(container, &["volumeMounts"])
        .iter()
        .filter_map(|m| {
            let source = volumes.get(&text(m, &["name"])?)?.clone();
            Some((PathBuf::from(text(m, &["mountPath"])?), source))
        })
        .collect()
}

impl Process {
    /// The binary's file name (`annex-worker` for `/usr/local/bin/annex-worker`).
    pub fn binary(&self) -> Option<&str> {
        self.argv
            .first()
            .and_then(|p| Path::new(p).file_name())
            .and_then(|n| n.to_str())
    }

    /// `$(NAME)` references nothing resolved (the kubelet would pass them on
    /// verbatim, which is never what a manifest means).
    pub fn unresolved(&self) -> Vec<String> {
        self.env
            .iter()
            .filter(|(_, v)| v.contains("$("))
            .map(|(k, v)| format!("{k}={v}"))
            .chain(self.argv.iter().filter(|a| a.contains("$(")).cloned())
            .collect()
    }

    /// Moves every environment value and argument that names a file under a
    /// mount point to the same file under that mount's new place (`moves`:
    /// mount point → local directory). Each value moves once, by the longest
    /// mount point it lies under, so a new place under another mount point
    /// (say, a temporary directory while `/tmp` is mounted) is left alone.
    pub fn remap_mounts(&mut self, moves: &BTreeMap<PathBuf, PathBuf>) {
        let swap = |s: &mut String| {
            let path = Path::new(s.as_str());
            let best = moves
                .iter()
                .filter(|(from, _)| path.starts_with(from))
                .max_by_key(|(from, _)| from.components().count());
            if let Some((from, to)) = best
                && let Ok(rest) = path.strip_prefix(from)
            {
                let moved = if rest.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(rest)
                };
                *s = moved.display().to_string();
            }
        };
        self.env.values_mut().for_each(swap);
        self.argv.iter_mut().skip(1).for_each(swap);
    }

    /// Replaces every `<ip>:<port>` listen value whose port is a container
    /// port by `addr(port)`; returns container port → new address.
    pub fn rebind<F>(&mut self, mut addr: F) -> BTreeMap<u16, String>
    where
        F: FnMut(u16) -> String,
    {
        let ports: Vec<u16> = self.ports.values().copied().collect();
        let mut moved = BTreeMap::new();
        for value in self.env.values_mut() {
            let Some((host, port)) = value.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            if ports.contains(&port) && host.parse::<std::net::IpAddr>().is_ok() {
                let new = moved.entry(port).or_insert_with(|| addr(port)).clone();
                *value = new;
            }
        }
        moved
    }
}

pub mod cluster;
pub mod load;
pub mod pki;
pub mod volume;

#[cfg(test)]
mod tests;
