//! rustls configurations from PEM material: the server side requires a
//! client certificate signed by the CA, the client side trusts only the CA
//! and presents the process's certificate; both speak HTTP/2 (ALPN `h2`),
//! as gRPC needs. Building fails on anything unusable (an empty CA file, a
//! key that does not belong to the certificate), so a half-written renewal
//! is refused here and the previous configuration stays in use.
//! Nothing here reads files or opens connections.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{TlsError, TlsMaterial};

/// ALPN: gRPC runs over HTTP/2 only.
const H2: &[u8] = b"h2";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// Every certificate in the CA PEM (a bundle may hold several: old and new
/// CA while the CA rotates).
fn roots(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            what: "CA",
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::Pem {
            what: "CA",
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            what: "CA",
            reason: "no certificate".into(),
        });
    }
    Ok(Arc::new(roots))
}

/// The certificate chain and its private key.
fn identity(
    m: &TlsMaterial,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_slice_iter(&m.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
            reason: "no certificate".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&m.key_pem).map_err(|e| TlsError::Pem {
        what: "key",
        reason: e.to_string(),
    })?;
    Ok((chain, key))
}

/// Server side: present our certificate, require a client certificate
/// signed by the CA.
pub(super) fn server(m: &TlsMaterial) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&m.ca_pem)?, provider.clone())
        .build()
        .map_err(config_error)?;
    let (chain, key) = identity(m)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(config)
}

/// Client side: trust only the CA, present our certificate. The server's
/// name is given per connection (see `connect`).
pub(super) fn client(m: &TlsMaterial) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(&m.ca_pem)?, provider.clone())
        .build()
        .map_err(config_error)?;
    let (chain, key) = identity(m)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(config)
}

/// When the first certificate of the chain stops being valid, in seconds
/// since the Unix epoch.
pub(super) fn not_after(m: &TlsMaterial) -> Option<i64> {
    let first = CertificateDer::pem_slice_iter(&m.cert_pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;
    use crate::devcerts::DevCa;

    #[test]
    fn material_from_one_ca_builds_both_sides() {
        let ca = DevCa::generate().expect("ca");
        let m = ca.issue(Role::Worker, "w").expect("issue");
        let server = server(&m).expect("server config");
        assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);
        client(&m).expect("client config");
        assert!(not_after(&m).is_some_and(|t| t > 0));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let ca = DevCa::generate().expect("ca");
        let a = ca.issue(Role::Worker, "a").expect("issue");
        let b = ca.issue(Role::Worker, "b").expect("issue");
        let mixed = TlsMaterial::from_pem(a.ca_pem.clone(), a.cert_pem.clone(), b.key_pem);
        assert!(matches!(server(&mixed), Err(TlsError::Config(_))));
        assert!(matches!(client(&mixed), Err(TlsError::Config(_))));
    }

    #[test]
    fn an_empty_ca_or_certificate_is_refused() {
        let ca = DevCa::generate().expect("ca");
        let m = ca.issue(Role::Edge, "e").expect("issue");
        let no_ca = TlsMaterial::from_pem(Vec::new(), m.cert_pem.clone(), m.key_pem.clone());
        assert!(matches!(
            client(&no_ca),
            Err(TlsError::Pem { what: "CA", .. })
        ));
        let no_cert = TlsMaterial::from_pem(m.ca_pem.clone(), b"junk".to_vec(), m.key_pem);
        assert!(matches!(
            server(&no_cert),
            Err(TlsError::Pem {
                what: "certificate",
                ..
            })
        ));
    }
}
