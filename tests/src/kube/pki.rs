//! What cert-manager would issue for the rendered manifests: the CA from the
//! `isCA` Certificate, then every Certificate signed by the CA Issuer with
//! exactly its common name, DNS names, URIs and usages, and each Secret's
//! files as cert-manager writes them (`ca.crt`, `tls.crt`, `tls.key`).
//! [`ClusterPki::rotated`] is the next generation (a new CA, new leaves),
//! for rotation tests. Issuing only: writing the files is the caller's.

use std::collections::BTreeMap;

use annex_ops::devcerts::{DevCa, LeafSpec};
use annex_ops::tls::TlsMaterial;

use super::{CertificateSpec, KubeError, Manifests};

/// One generation of the cluster's certificates.
pub struct ClusterPki {
    ca: DevCa,
    /// The CA Certificate's spec, to issue a next generation alike.
    ca_spec: CertificateSpec,
    leaves: Vec<CertificateSpec>,
    /// Secret name → material.
    issued: BTreeMap<String, TlsMaterial>,
}

impl std::fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPki")
            .field("secrets", &self.issued.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn missing(what: String) -> KubeError {
    KubeError::Missing {
        kind: "Certificate",
        name: what,
    }
}

impl ClusterPki {
    /// Issues the manifests' certificates: one self-signed CA (the `isCA`
    /// Certificate) and every Certificate whose Issuer is that CA's.
    pub fn issue(m: &Manifests) -> Result<ClusterPki, KubeError> {
        let certs = m.certificates();
        let ca_spec = certs
            .iter()
            .find(|c| c.is_ca)
            .cloned()
            .ok_or_else(|| missing("with isCA".into()))?;
        // The Issuer whose `ca.secretName` is the CA Certificate's Secret.
        let ca_issuer = m
            .of_kind("Issuer")
            .find(|i| {
                i.get("spec")
                    .and_then(|s| s.get("ca"))
                    .and_then(|c| c.get("secretName"))
                    .and_then(serde_yaml::Value::as_str)
                    == Some(ca_spec.secret_name.as_str())
            })
            .and_then(|i| i.get("metadata")?.get("name")?.as_str().map(str::to_owned))
            .ok_or_else(|| missing(format!("Issuer for {}", ca_spec.secret_name)))?;
        let leaves: Vec<CertificateSpec> = certs
            .into_iter()
            .filter(|c| !c.is_ca && c.issuer == ca_issuer)
            .collect();
        ClusterPki::generation(ca_spec, leaves)
    }

    fn generation(
        ca_spec: CertificateSpec,
        leaves: Vec<CertificateSpec>,
    ) -> Result<ClusterPki, KubeError> {
        let cn = ca_spec
            .common_name
            .clone()
            .unwrap_or_else(|| ca_spec.name.clone());
        let issue_error = |e: annex_ops::devcerts::DevCertError| KubeError::Unsupported {
            deployment: "certificates".into(),
            what: e.to_string(),
        };
        let ca = DevCa::generate_named(&cn).map_err(issue_error)?;
        let mut issued = BTreeMap::new();
        for c in &leaves {
            let usage = |u: &str| c.usages.iter().any(|x| x == u);
            let material = ca
                .issue_leaf(&LeafSpec {
                    common_name: c.common_name.clone(),
                    dns_names: c.dns_names.clone(),
                    uris: c.uris.clone(),
                    server_auth: usage("server auth"),
                    client_auth: usage("client auth"),
                })
                .map_err(issue_error)?;
            issued.insert(c.secret_name.clone(), material);
        }
        Ok(ClusterPki {
            ca,
            ca_spec,
            leaves,
            issued,
        })
    }

    /// The next generation: a new CA and every leaf issued again from it.
    pub fn rotated(&self) -> Result<ClusterPki, KubeError> {
        ClusterPki::generation(self.ca_spec.clone(), self.leaves.clone())
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        self.ca.ca_pem()
    }

    /// The Secret names issued (one per leaf Certificate).
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.issued.keys().map(String::as_str)
    }

    /// The material of Secret `name`.
    pub fn material(&self, secret: &str) -> Option<&TlsMaterial> {
        self.issued.get(secret)
    }

    /// Secret `name`'s files, with `ca_bundle` as `ca.crt` (cert-manager
    /// writes the issuing CA; a rotation writes a bundle of old and new).
    pub fn secret_files(&self, secret: &str, ca_bundle: &str) -> Option<Vec<(String, Vec<u8>)>> {
        let m = self.issued.get(secret)?;
        Some(vec![
            ("ca.crt".into(), ca_bundle.as_bytes().to_vec()),
            ("tls.crt".into(), m.cert_pem.clone()),
            ("tls.key".into(), m.key_pem.clone()),
        ])
    }
}
