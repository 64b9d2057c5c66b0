//! A process's live TLS identity: the rustls configurations built from its
//! certificate, key and CA, rebuilt when those files change.
//!
//! cert-manager renews a certificate by rewriting its Secret, and the
//! kubelet swaps the Secret volume's files atomically (a symlink to a new
//! directory), so the files are read again every [`POLL`] and compared with
//! what is in use. A complete, consistent new set (the key matches the
//! certificate, the CA parses) replaces the configurations for every new
//! handshake; connections already established keep the material they were
//! made with. A set that does not build (a reader caught the files half
//! written) is retried at the next poll, and reported when it persists.
//! This module never binds or dials; `accept` and `connect` read
//! [`Tls::server_config`] and [`Tls::client_config`] per connection.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rustls::{ClientConfig, ServerConfig};

use super::{TlsError, TlsFiles, TlsMaterial, config};
use crate::admin::AdminState;

/// How often the files are compared with the material in use: a renewal
/// reaches new handshakes within this (plus the kubelet's own delay in
/// updating the Secret volume). Reading three small files is negligible.
pub(super) const POLL: Duration = Duration::from_secs(2);

/// The configurations built from one set of material.
struct Current {
    material: TlsMaterial,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Current {
    fn build(material: TlsMaterial) -> Result<Current, TlsError> {
        Ok(Current {
            server: Arc::new(config::server(&material)?),
            client: Arc::new(config::client(&material)?),
            material,
        })
    }
}

#[derive(Default)]
struct Metrics {
    reloads: Counter,
    failures: Counter,
    expiry: Gauge,
}

struct Inner {
    current: RwLock<Arc<Current>>,
    files: Option<TlsFiles>,
    metrics: Metrics,
    /// Material that failed to build at the last check, so a persistent
    /// failure is reported once, and a passing half-written state not at all.
    failed: Mutex<Option<(TlsMaterial, bool)>>,
    watching: Mutex<bool>,
}

/// The TLS identity a process presents and the CA it trusts, current as of
/// the last reload. Cheap to clone; every clone sees reloads.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Builds the configurations from `material`; fails when it is unusable.
    /// Material read from files (see [`TlsFiles::load`]) can be reloaded
    /// with [`Tls::watch`]; material held in memory stays as it is.
    pub fn new(material: TlsMaterial) -> Result<Tls, TlsError> {
        let files = material.files().cloned();
        let current = Current::build(material)?;
        let metrics = Metrics::default();
        metrics
            .expiry
            .set(config::not_after(&current.material).unwrap_or_default());
        Ok(Tls {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(current)),
                files,
                metrics,
                failed: Mutex::new(None),
                watching: Mutex::new(false),
            }),
        })
    }

    /// The server configuration for the next handshake.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.current.read().server.clone()
    }

    /// The client configuration for the next handshake.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.inner.current.read().client.clone()
    }

    /// The PEM material in use.
    pub fn material(&self) -> TlsMaterial {
        self.inner.current.read().material.clone()
    }

    /// Registers `annex_tls_*` on `admin` and, when the material came from
    /// files, polls them every [`POLL`] for as long as any clone of this
    /// handle lives. Call once per process, from its service's `run`
    /// (later calls do nothing).
    pub fn watch(&self, admin: &AdminState) {
        {
            let mut watching = self.inner.watching.lock();
            if *watching {
                return;
            }
            *watching = true;
        }
        admin.with_registry(|r| {
            let m = &self.inner.metrics;
            r.register(
                "annex_tls_reloads",
                "Certificate, key or CA changes taken into use",
                m.reloads.clone(),
            );
            r.register(
                "annex_tls_reload_failures",
                "Changed TLS files that could not be used (the previous material stays)",
                m.failures.clone(),
            );
            r.register(
                "annex_tls_certificate_expiry_timestamp_seconds",
                "When the certificate in use expires (Unix time)",
                m.expiry.clone(),
            );
        });
        if self.inner.files.is_some() {
            tokio::spawn(poll(Arc::downgrade(&self.inner)));
        }
    }

    /// Compares the files with the material in use now and takes a changed,
    /// usable set into use. `Ok(true)` when it did.
    pub async fn reload_now(&self) -> Result<bool, TlsError> {
        self.inner.check().await
    }
}

async fn poll(inner: Weak<Inner>) {
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // Failures are counted and logged by `check`.
        let _ = inner.check().await;
    }
}

impl Inner {
    async fn check(&self) -> Result<bool, TlsError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let read = |path: std::path::PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| TlsError::Read { path, source })
        };
        let fresh = TlsMaterial {
            ca_pem: read(files.ca.clone()).await?,
            cert_pem: read(files.cert.clone()).await?,
            key_pem: read(files.key.clone()).await?,
            files: Some(files.clone()),
        };
        if self.current.read().material.same_pem(&fresh) {
            *self.failed.lock() = None;
            return Ok(false);
        }
        match Current::build(fresh.clone()) {
            Ok(current) => {
                let expiry = config::not_after(&current.material).unwrap_or_default();
                *self.current.write() = Arc::new(current);
                *self.failed.lock() = None;
                self.metrics.reloads.inc();
                self.metrics.expiry.set(expiry);
                tracing::info!(
                    cert = %files.cert.display(),
                    ca = %files.ca.display(),
                    expires_at = expiry,
                    "TLS certificate, key or CA reloaded; new connections use them"
                );
                Ok(true)
            }
            Err(error) => {
                let mut failed = self.failed.lock();
                match failed.as_mut() {
                    // The same unusable files at two checks in a row: not a
                    // write in progress. Report once.
                    Some((seen, reported)) if seen.same_pem(&fresh) => {
                        if !*reported {
                            *reported = true;
                            self.metrics.failures.inc();
                            tracing::warn!(
                                %error,
                                cert = %files.cert.display(),
                                "changed TLS files are unusable; keeping the previous ones"
                            );
                        }
                    }
                    _ => *failed = Some((fresh, false)),
                }
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;
    use crate::devcerts::DevCa;

    fn write(dir: &std::path::Path, m: &TlsMaterial) -> TlsFiles {
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.ca, &m.ca_pem).expect("ca");
        std::fs::write(&files.cert, &m.cert_pem).expect("cert");
        std::fs::write(&files.key, &m.key_pem).expect("key");
        files
    }

    #[tokio::test]
    async fn changed_files_replace_the_configuration_and_bad_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::generate().expect("ca");
        let first = ca.issue(Role::Edge, "first").expect("issue");
        let files = write(dir.path(), &first);
        let tls = Tls::new(files.load().expect("load")).expect("tls");
        assert!(!tls.reload_now().await.expect("unchanged"));

        let second = ca.issue(Role::Edge, "second").expect("issue");
        write(dir.path(), &second);
        assert!(tls.reload_now().await.expect("reloaded"));
        assert_eq!(tls.material().cert_pem, second.cert_pem);

        // A certificate without its key (half a renewal) is refused and the
        // configuration in use stays.
        let third = ca.issue(Role::Edge, "third").expect("issue");
        std::fs::write(&files.cert, &third.cert_pem).expect("cert");
        assert!(tls.reload_now().await.is_err());
        assert_eq!(tls.material().cert_pem, second.cert_pem);
        std::fs::write(&files.key, &third.key_pem).expect("key");
        assert!(tls.reload_now().await.expect("completed"));
        assert_eq!(tls.material().cert_pem, third.cert_pem);
    }

    #[tokio::test]
    async fn material_in_memory_is_never_reloaded() {
        let ca = DevCa::generate().expect("ca");
        let tls = Tls::new(ca.issue(Role::Worker, "w").expect("issue")).expect("tls");
        assert!(!tls.reload_now().await.expect("nothing to read"));
    }
}
