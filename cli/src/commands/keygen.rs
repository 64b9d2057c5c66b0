//! `annex keygen`: a fresh Ed25519 publisher key. The private key is written as PKCS#8 PEM
//! (the form OpenSSL reads) with mode 0600; the public key as SPKI PEM beside it, ready for
//! `annex trust add --key`.

use std::path::{Path, PathBuf};

use annex_bundle::signing::KeyPair;
use serde_json::json;

use crate::cli::KeygenArgs;
use crate::files;
use crate::output::{Report, fields};

pub fn run(args: KeygenArgs) -> anyhow::Result<Report> {
    let key = KeyPair::generate();
    let public = key.public_key();
    let public_path = public_path(&args.out);
    if !args.force && public_path.exists() {
        anyhow::bail!(
            "{} already exists (pass --force to overwrite it)",
            public_path.display()
        );
    }
    let private_pem = key
        .to_pkcs8_pem()
        .map_err(|e| anyhow::anyhow!("encoding the private key: {e}"))?;
    files::write_private(&args.out, private_pem.as_bytes(), args.force)?;
    files::write_atomic(&public_path, public.to_pem().as_bytes())?;

    let text = format!(
        "{}\n{}\ntrust it with:  annex trust add --publisher <publisher> --key {}\nsign with:      annex sign <bundle> --key {}\n",
        fields(&[
            ("key id", public.key_id()),
            (
                "private key",
                format!("{} (keep it secret)", args.out.display())
            ),
            ("public key", public_path.display().to_string()),
        ])
        .trim_end(),
        public.to_pem().trim_end(),
        public_path.display(),
        args.out.display(),
    );
    let json = json!({
        "key_id": public.key_id(),
        "private_key_path": args.out,
        "public_key_path": public_path,
        "public_key_pem": public.to_pem(),
        "public_key_base64": public.to_base64(),
    });
    Ok(Report::new(text, json))
}

/// `signing-key.pem` → `signing-key.pub.pem`; names without `.pem` get `.pub.pem` appended.
fn public_path(private: &Path) -> PathBuf {
    let name = private
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".pem").unwrap_or(&name);
    private.with_file_name(format!("{stem}.pub.pem"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_sits_beside_the_private_key() {
        assert_eq!(
            public_path(Path::new("keys/acme.pem")),
            Path::new("keys/acme.pub.pem")
        );
        assert_eq!(
            public_path(Path::new("acme.key")),
            Path::new("acme.key.pub.pem")
        );
    }
}
