//! The start of every Annex binary's `main`, before it hands over to the
//! service's `run`: logging and span export, the process-wide crypto
//! provider, the TLS files read from disk, and the listeners bound, each
//! failure naming what it was doing. Only binaries call this: library code
//! binds nothing and reads no certificate files (see [`crate::serve`]).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::telemetry::{LogFormat, Telemetry};
use crate::tls::{TlsFiles, TlsMaterial};

/// Starts logging (and OTLP span export when configured) for `service` and
/// installs the crypto provider. Keep the guard in `main` until the
/// service has stopped.
pub fn start(format: LogFormat, service: &'static str) -> Telemetry {
    let telemetry = crate::telemetry::init(format, service);
    crate::tls::install_crypto_provider();
    telemetry
}

/// Reads the CA, certificate and key PEM files the process presents and
/// trusts. The material remembers the paths: each service's `run` watches
/// them and takes renewed files into use ([`crate::tls::Tls::watch`]).
pub fn load_tls(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<TlsMaterial> {
    TlsFiles {
        ca: ca.to_owned(),
        cert: cert.to_owned(),
        key: key.to_owned(),
    }
    .load()
    .context("loading TLS files")
}

/// Binds the listener `what` names (`gRPC`, `HTTP`, `admin`) on `addr`.
pub async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} on {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tls_file_names_the_step_and_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("ca.pem");
        let err = load_tls(&missing, &missing, &missing).expect_err("no files");
        let text = format!("{err:#}");
        assert!(text.starts_with("loading TLS files: "), "{text}");
        assert!(text.contains(&missing.display().to_string()), "{text}");
    }

    #[tokio::test]
    async fn a_taken_address_names_the_listener_and_the_address() {
        let taken = bind("admin", SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = bind("gRPC", addr).await.expect_err("in use");
        assert!(
            format!("{err:#}").starts_with(&format!("binding gRPC on {addr}: ")),
            "{err:#}"
        );
    }
}
