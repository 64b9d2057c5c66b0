//! Dev certificates on disk for processes that read them from files (the
//! `annex` binary, a worker configured from its flags): the CA and one
//! certificate per role from a [`DevCa`], in the layout
//! [`annex_ops::devcerts::role_files`] names. In-process services take their
//! certificates from the CA directly; this only writes files.

use std::path::Path;

use annex_ops::Role;
use annex_ops::devcerts::{DevCa, role_files};

/// Writes `ca`'s certificate and a fresh certificate and key for every role
/// into `dir` (created if missing); keys are readable by the owner only.
pub fn write_dir(ca: &DevCa, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    write(&dir.join("ca.pem"), ca.ca_pem().as_bytes());
    for role in Role::ALL {
        let material = ca
            .issue(role, &format!("annex-test-{}", role.as_str()))
            .unwrap_or_else(|e| panic!("issuing a {role} certificate: {e}"));
        let files = role_files(dir, role);
        write(&files.cert, &material.cert_pem);
        write(&files.key, &material.key_pem);
        owner_only(&files.key);
    }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[cfg(unix)]
fn owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("restricting {}: {e}", path.display()));
}

#[cfg(not(unix))]
fn owner_only(_: &Path) {}
