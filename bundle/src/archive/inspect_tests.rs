//! [`inspect`]: the streaming check publish runs over a spooled upload agrees with [`unpack`]
//! and [`read_manifest`], keeps only the manifest and the component's head, and enforces the
//! same limits.

use std::io::{BufReader, Cursor};

use tar::{EntryType, Header};

use super::*;

const MANIFEST: &str =
    r#"{"name":"com.acme.x","publisher":"Acme","version":"1.0.0","runtime":"wasm-js@1"}"#;
const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0rest of the component";

fn bundle(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = Header::new_gnu();
        h.set_path(path).expect("path");
        h.set_entry_type(EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append(&h, *data).expect("append");
    }
    zstd::encode_all(builder.into_inner().expect("tar").as_slice(), 1).expect("zstd")
}

fn inspect_bytes(bytes: &[u8], limits: &Limits) -> Result<Inspected, ArchiveError> {
    // A small buffer, so entries straddle many reads.
    inspect(
        BufReader::with_capacity(7, Cursor::new(bytes)),
        bytes.len() as u64,
        limits,
        8,
    )
}

#[test]
fn keeps_the_manifest_and_the_component_head() {
    let big = vec![7u8; 300_000];
    let bytes = bundle(&[
        ("manifest.json", MANIFEST.as_bytes()),
        ("dist/main.wasm", COMPONENT),
        ("ui/big.bin", &big),
    ]);
    let inspected = inspect_bytes(&bytes, &Limits::default()).expect("inspect");
    assert_eq!(
        inspected.manifest,
        read_manifest(&bytes, &Limits::default()).expect("read_manifest")
    );
    assert_eq!(inspected.component_head.as_deref(), Some(&COMPONENT[..8]));
}

#[test]
fn wrapped_bundles_and_missing_components_read_as_unpack_reads_them() {
    let wrapped = bundle(&[
        ("ext/manifest.json", MANIFEST.as_bytes()),
        ("ext/dist/main.wasm", b"\0asm"),
    ]);
    let inspected = inspect_bytes(&wrapped, &Limits::default()).expect("inspect");
    assert_eq!(inspected.manifest.name, "com.acme.x");
    assert_eq!(inspected.component_head.as_deref(), Some(&b"\0asm"[..]));

    let bare = bundle(&[("manifest.json", MANIFEST.as_bytes())]);
    let inspected = inspect_bytes(&bare, &Limits::default()).expect("inspect");
    assert_eq!(inspected.component_head, None);

    let none = bundle(&[("dist/main.wasm", COMPONENT)]);
    assert!(matches!(
        inspect_bytes(&none, &Limits::default()),
        Err(ArchiveError::MissingManifest)
    ));
}

#[test]
fn limits_and_entry_rules_hold_while_streaming() {
    let zeros = vec![0u8; 4 * 1024 * 1024];
    let bomb = bundle(&[
        ("manifest.json", MANIFEST.as_bytes()),
        ("ui/zeros.bin", &zeros),
    ]);
    assert!(matches!(
        inspect_bytes(&bomb, &Limits::default()),
        Err(ArchiveError::TooLarge {
            what: Limit::Ratio,
            ..
        })
    ));
    let small = Limits {
        max_archive_bytes: 10,
        ..Limits::default()
    };
    assert!(matches!(
        inspect_bytes(&bomb, &small),
        Err(ArchiveError::TooLarge {
            what: Limit::ArchiveBytes,
            ..
        })
    ));
    assert!(matches!(
        inspect_bytes(b"not zstd at all", &Limits::default()),
        Err(ArchiveError::Corrupt(_))
    ));
    let hidden = bundle(&[
        ("manifest.json", MANIFEST.as_bytes()),
        (".env", b"SECRET=1"),
    ]);
    assert!(matches!(
        inspect_bytes(&hidden, &Limits::default()),
        Err(ArchiveError::ForbiddenEntry { .. })
    ));
    // A truncated upload is corrupt, not silently short.
    let good = bundle(&[
        ("manifest.json", MANIFEST.as_bytes()),
        ("dist/main.wasm", COMPONENT),
    ]);
    let cut = &good[..good.len() - 3];
    assert!(inspect_bytes(cut, &Limits::default()).is_err());
}
