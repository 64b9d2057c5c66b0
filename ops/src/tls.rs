//! mTLS for every gRPC connection: one CA, a certificate per role, and the
//! role read back from the peer's certificate on each request.
//!
//! A certificate names its role with a URI subject-alternative name
//! `urn:annex:role:<role>` (see [`devcerts`](crate::devcerts)). Servers require
//! a client certificate signed by the CA (a client without one cannot finish
//! the handshake); services then admit only the roles they list.

use std::path::{Path, PathBuf};
use std::sync::Once;

use annex_proto::{AnnexError, ErrorCode};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// URI SAN prefix that carries the role.
pub(crate) const ROLE_URI_PREFIX: &str = "urn:annex:role:";

/// Who is calling, by certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The `annex` CLI and operators' tools.
    Operator,
    Edge,
    Worker,
    ControlPlane,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Operator, Role::Edge, Role::Worker, Role::ControlPlane];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Edge => "edge",
            Role::Worker => "worker",
            Role::ControlPlane => "control-plane",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated peer of a request, inserted into request extensions by
/// [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub role: Role,
    /// The certificate's common name, for logs.
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Paths of the PEM files a process presents and trusts.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Loaded PEM material.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl TlsFiles {
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        Ok(TlsMaterial {
            ca_pem: read(&self.ca)?,
            cert_pem: read(&self.cert)?,
            key_pem: read(&self.key)?,
        })
    }
}

/// Installs ring as rustls' process-wide crypto provider, once.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl TlsMaterial {
    /// Server side: present our certificate, require a client certificate
    /// signed by the CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        install_crypto_provider();
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// Client side: trust only the CA, present our certificate. `server_name`
    /// is checked against the server certificate's SANs.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        install_crypto_provider();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(server_name.to_owned())
    }
}

/// Reads the role and name from a DER certificate.
pub(crate) fn peer_from_der(der: &[u8]) -> Option<Peer> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|gn| match gn {
        x509_parser::extensions::GeneralName::URI(uri) => uri
            .strip_prefix(ROLE_URI_PREFIX)
            .and_then(Role::parse)
            .map(|role| Peer {
                role,
                name: name.clone(),
            }),
        _ => None,
    })
}

/// A tonic interceptor that admits only peers whose certificate carries one of
/// `allowed` roles, and records the [`Peer`] in the request extensions.
pub fn authenticate(
    allowed: &'static [Role],
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut req: tonic::Request<()>| {
        let peer = req
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| peer_from_der(c.as_ref())))
            .ok_or_else(|| {
                tonic::Status::from(AnnexError::new(
                    ErrorCode::Unauthenticated,
                    "a client certificate with an Annex role is required",
                ))
            })?;
        if !allowed.contains(&peer.role) {
            return Err(AnnexError::new(
                ErrorCode::PermissionDenied,
                format!("role {} may not call this service", peer.role),
            )
            .into());
        }
        req.extensions_mut().insert(peer);
        Ok(req)
    }
}

/// The peer recorded by [`authenticate`]; services use it for per-method checks.
pub fn peer<T>(req: &tonic::Request<T>) -> Option<&Peer> {
    req.extensions().get::<Peer>()
}

/// Fails unless the request's peer has one of `roles`.
#[allow(clippy::result_large_err)]
pub fn require<T>(req: &tonic::Request<T>, roles: &[Role]) -> Result<Peer, tonic::Status> {
    match peer(req) {
        Some(p) if roles.contains(&p.role) => Ok(p.clone()),
        Some(p) => Err(AnnexError::new(
            ErrorCode::PermissionDenied,
            format!("role {} may not call this method", p.role),
        )
        .into()),
        None => Err(AnnexError::new(ErrorCode::Unauthenticated, "no authenticated peer").into()),
    }
}
