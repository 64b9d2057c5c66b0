//! mTLS for every gRPC connection: one CA, a certificate per role, and the
//! role read back from the peer's certificate on each request.
//!
//! A certificate names its role with a URI subject-alternative name
//! `urn:annex:role:<role>` (see [`devcerts`](crate::devcerts)). Servers require
//! a client certificate signed by the CA (a client without one cannot finish
//! the handshake); services then admit only the roles they list.
//!
//! [`Tls`] is a process's live identity: rustls configurations rebuilt
//! whenever the certificate, key or CA files change (`reload`), so renewed
//! certificates reach new handshakes without a restart while established
//! connections keep theirs. Servers accept through [`incoming`] and clients
//! dial through [`dial`] or [`TlsConnector`], both of which read the current
//! configuration per connection. [`TlsMaterial::server_config`] and
//! [`TlsMaterial::client_config`] remain for tools that hold one fixed
//! identity (the CLI, tests). This module decides nothing about who may call
//! what beyond the role check.

mod accept;
mod config;
mod connect;
mod reload;

pub use accept::{TlsIncoming, incoming};
pub(crate) use connect::server_name;
pub use connect::{DialError, TlsConnector, dial};
pub use reload::Tls;

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
    /// A PEM file holds nothing usable (`what`: the CA, certificate or key).
    #[error("the {what} PEM is invalid: {reason}")]
    Pem { what: &'static str, reason: String },
    /// rustls refused the material (e.g. a key that does not match the
    /// certificate).
    #[error("building the TLS configuration: {0}")]
    Config(String),
    /// The name a server's certificate is checked against is not a DNS name
    /// or IP address.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// Paths of the PEM files a process presents and trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Loaded PEM material, and the files it was read from when it came from
/// disk (then [`Tls`] reloads it when they change).
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    files: Option<TlsFiles>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl TlsFiles {
    /// Reads the three files; the material remembers them for reloading.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        Ok(TlsMaterial {
            ca_pem: read(&self.ca)?,
            cert_pem: read(&self.cert)?,
            key_pem: read(&self.key)?,
            files: Some(self.clone()),
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
    /// Material held in memory only (never reloaded).
    pub fn from_pem(ca_pem: Vec<u8>, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> TlsMaterial {
        TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            files: None,
        }
    }

    /// The files this material was read from, if any.
    pub fn files(&self) -> Option<&TlsFiles> {
        self.files.as_ref()
    }

    /// Whether `other` holds the same certificate, key and CA bytes.
    pub(crate) fn same_pem(&self, other: &TlsMaterial) -> bool {
        self.ca_pem == other.ca_pem
            && self.cert_pem == other.cert_pem
            && self.key_pem == other.key_pem
    }

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
        // A call handed over in-process (`crate::in_process`) carries the
        // peer its caller's code set; nothing from a network can set it.
        let peer = req
            .extensions()
            .get::<Peer>()
            .cloned()
            .or_else(|| {
                req.peer_certs()
                    .and_then(|certs| certs.first().and_then(|c| peer_from_der(c.as_ref())))
            })
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
