//! A throwaway certificate authority for `annex dev` and the tests: one CA and
//! a certificate per role, each carrying its role as a URI SAN and valid for
//! `localhost` and `127.0.0.1` as a server, usable as a client too.
//!
//! Production certificates come from the operator's PKI (cert-manager in
//! `deploy/`); they only need the same role SAN.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::tls::{ROLE_URI_PREFIX, Role, TlsFiles, TlsMaterial};

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An in-memory dev CA that can issue role certificates.
pub struct DevCa {
    params: CertificateParams,
    key: KeyPair,
    ca_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// What a leaf certificate holds, as a cert-manager `Certificate` asks
/// for it (the Kubernetes tests issue exactly what the manifests request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafSpec {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    /// URI SANs, e.g. `urn:annex:role:worker`.
    pub uris: Vec<String>,
    pub server_auth: bool,
    pub client_auth: bool,
}

impl DevCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<DevCa, DevCertError> {
        DevCa::generate_named("Annex dev CA")
    }

    /// A new CA with a fresh key and `common_name`.
    pub fn generate_named(common_name: &str) -> Result<DevCa, DevCertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let ca_pem = params.self_signed(&key)?.pem();
        Ok(DevCa {
            params,
            key,
            ca_pem,
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a certificate for `role` named `name`, valid as a server for
    /// `localhost`/`127.0.0.1`/`::1` and as a client.
    pub fn issue(&self, role: Role, name: &str) -> Result<TlsMaterial, DevCertError> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        params.subject_alt_names.push(SanType::URI(
            format!("{ROLE_URI_PREFIX}{}", role.as_str()).try_into()?,
        ));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(TlsMaterial::from_pem(
            self.ca_pem.as_bytes().to_vec(),
            cert.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        ))
    }
}

impl DevCa {
    /// Issues a certificate with exactly the names, URIs and extended key
    /// usages of `spec` (and the digital-signature key usage).
    pub fn issue_leaf(&self, spec: &LeafSpec) -> Result<TlsMaterial, DevCertError> {
        let mut params = CertificateParams::new(spec.dns_names.clone())?;
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.clone().try_into()?));
        }
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &spec.common_name {
            dn.push(DnType::CommonName, cn.as_str());
        }
        params.distinguished_name = dn;
        params.extended_key_usages = [
            (spec.server_auth, ExtendedKeyUsagePurpose::ServerAuth),
            (spec.client_auth, ExtendedKeyUsagePurpose::ClientAuth),
        ]
        .into_iter()
        .filter_map(|(on, usage)| on.then_some(usage))
        .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(TlsMaterial::from_pem(
            self.ca_pem.as_bytes().to_vec(),
            cert.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        ))
    }
}

/// File names of a role's certificate and key inside a PKI directory.
pub fn role_files(dir: &Path, role: Role) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{}.pem", role.as_str())),
        key: dir.join(format!("{}-key.pem", role.as_str())),
    }
}

/// Makes sure `dir` holds a CA and one certificate per role, generating all of
/// them when any is missing. Keys are written with mode 0600.
pub fn ensure_dir(dir: &Path) -> Result<(), DevCertError> {
    let complete = Role::ALL.iter().all(|&role| {
        let f = role_files(dir, role);
        f.ca.exists() && f.cert.exists() && f.key.exists()
    });
    if complete {
        return Ok(());
    }
    let write = |path: PathBuf, data: &[u8], secret: bool| -> Result<(), DevCertError> {
        let io = |source| DevCertError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::write(&path, data).map_err(io)?;
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        #[cfg(not(unix))]
        let _ = secret;
        Ok(())
    };
    let ca = DevCa::generate()?;
    write(dir.join("ca.pem"), ca.ca_pem().as_bytes(), false)?;
    for role in Role::ALL {
        let material = ca.issue(role, &format!("annex-dev-{}", role.as_str()))?;
        let files = role_files(dir, role);
        write(files.cert, &material.cert_pem, false)?;
        write(files.key, &material.key_pem, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_role() {
        let ca = DevCa::generate().expect("ca");
        for role in Role::ALL {
            let m = ca.issue(role, "n").expect("issue");
            let pem = String::from_utf8(m.cert_pem).expect("utf8");
            let der = rustls_pemfile::certs(&mut pem.as_bytes())
                .next()
                .expect("one cert")
                .expect("parse");
            let peer = crate::tls::peer_from_der(der.as_ref()).expect("role");
            assert_eq!(peer.role, role);
            assert_eq!(peer.name, "n");
        }
    }

    #[test]
    fn a_leaf_carries_exactly_what_its_spec_asks() {
        let ca = DevCa::generate_named("annex-ca").expect("ca");
        let m = ca
            .issue_leaf(&LeafSpec {
                common_name: Some("annex-worker".into()),
                dns_names: vec!["*.annex-worker.annex.svc".into()],
                uris: vec!["urn:annex:role:worker".into()],
                server_auth: true,
                client_auth: true,
            })
            .expect("issue");
        let pem = String::from_utf8(m.cert_pem).expect("utf8");
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .expect("one cert")
            .expect("parse");
        let peer = crate::tls::peer_from_der(der.as_ref()).expect("role");
        assert_eq!(
            (peer.role, peer.name.as_str()),
            (Role::Worker, "annex-worker")
        );
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
        let names: Vec<String> = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .value
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => format!("dns:{d}"),
                x509_parser::extensions::GeneralName::URI(u) => format!("uri:{u}"),
                other => format!("other:{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            ["dns:*.annex-worker.annex.svc", "uri:urn:annex:role:worker"]
        );
    }

    #[test]
    fn ensure_dir_writes_every_role_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_dir(dir.path()).expect("generate");
        let ca1 = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        ensure_dir(dir.path()).expect("reuse");
        let ca2 = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        assert_eq!(ca1, ca2, "an existing PKI is reused, not regenerated");
        for role in Role::ALL {
            role_files(dir.path(), role)
                .load()
                .expect("all files readable");
        }
    }
}
