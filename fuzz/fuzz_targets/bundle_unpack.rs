//! Bundle unpacking (`annex_bundle::archive::unpack`) under small caps. An
//! input that starts with the zstd magic is unpacked as it is; anything
//! else is taken as a tar stream and compressed first, so the fuzzer works
//! on tar structure rather than on zstd framing. Whatever is accepted stays
//! within the caps and has only safe, normalised paths.
#![no_main]

use annex_bundle::archive::{self, Limits};
use libfuzzer_sys::fuzz_target;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn limits() -> Limits {
    Limits {
        max_archive_bytes: 1 << 20,
        max_unpacked_bytes: 4 << 20,
        max_files: 64,
        max_ratio: 200,
        max_file_bytes: 1 << 20,
    }
}

fuzz_target!(|data: &[u8]| {
    let compressed;
    let bytes = if data.starts_with(&ZSTD_MAGIC) {
        data
    } else {
        let Ok(c) = zstd::bulk::compress(data, 1) else {
            return;
        };
        compressed = c;
        &compressed
    };
    let limits = limits();
    let unpacked = archive::unpack(bytes, &limits);
    let manifest = archive::read_manifest(bytes, &limits);
    let Ok(bundle) = unpacked else {
        return;
    };
    assert!(bundle.files.len() <= limits.max_files);
    let mut total = 0u64;
    for (path, content) in &bundle.files {
        total += content.len() as u64;
        assert!(content.len() as u64 <= limits.max_file_bytes, "{path}");
        assert!(!path.is_empty() && !path.starts_with('/'), "{path:?}");
        assert!(
            !path.chars().any(|c| c == '\\' || c.is_control()),
            "{path:?}"
        );
        for segment in path.split('/') {
            assert!(!segment.is_empty() && !segment.starts_with('.'), "{path:?}");
        }
    }
    assert!(total <= limits.max_unpacked_bytes);
    // The manifest-only walk judges every entry the same way.
    if let (Ok(m), Ok(parsed)) = (bundle.manifest(), &manifest) {
        assert_eq!(&m, parsed);
    }
    if bundle.manifest().is_ok() {
        assert!(
            manifest.is_ok(),
            "unpack read a manifest that read_manifest refused"
        );
    }
    for (rel, _) in bundle.ui_files() {
        assert!(!rel.is_empty());
    }
});
