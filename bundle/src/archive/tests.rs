use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use proptest::prelude::*;
use tar::{EntryType, Header};

use super::*;

const MANIFEST: &str = r#"{"name":"com.acme.x","publisher":"Acme","version":"1.0.0","runtime":"wasm-js@1",
  "ui":{"type":"iframe","entry":"ui/index.html"}}"#;

/// A header with `path` written verbatim (the `tar` crate's setters refuse `..` and `/abs`).
fn header(path: &str, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    let bytes = path.as_bytes();
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

fn file(path: &str, data: &[u8]) -> (Header, Vec<u8>) {
    (
        header(path, EntryType::Regular, data.len() as u64),
        data.to_vec(),
    )
}

fn dir(path: &str) -> (Header, Vec<u8>) {
    (header(path, EntryType::Directory, 0), Vec::new())
}

fn link(path: &str, kind: EntryType, target: &str) -> (Header, Vec<u8>) {
    let mut h = header(path, kind, 0);
    h.set_link_name(target).expect("link name");
    h.set_cksum();
    (h, Vec::new())
}

fn tar_of(entries: &[(Header, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (h, data) in entries {
        builder.append(h, data.as_slice()).expect("append");
    }
    builder.into_inner().expect("finish tar")
}

fn zst(tar: &[u8]) -> Vec<u8> {
    zstd::encode_all(tar, 1).expect("compress")
}

/// A minimal valid bundle plus `extra` entries, packed by hand.
fn bundle_with(extra: Vec<(Header, Vec<u8>)>) -> Vec<u8> {
    let mut entries = vec![
        file("manifest.json", MANIFEST.as_bytes()),
        file("dist/main.wasm", b"\0asm"),
    ];
    entries.extend(extra);
    zst(&tar_of(&entries))
}

fn check_forbidden(entries: Vec<(Header, Vec<u8>)>, want_path: &str, want: EntryProblem) {
    let bytes = bundle_with(entries);
    match unpack(&bytes, &Limits::default()) {
        Err(ArchiveError::ForbiddenEntry { path, reason }) => {
            assert_eq!((path.as_str(), reason), (want_path, want));
        }
        other => panic!("{want_path}: expected {want:?}, got {other:?}"),
    }
    // Publish refuses the same bundle.
    assert!(matches!(
        read_manifest(&bytes, &Limits::default()),
        Err(ArchiveError::ForbiddenEntry { .. })
    ));
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, data).expect("write");
}

fn sample_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    write(root, "manifest.json", MANIFEST.as_bytes());
    write(root, "dist/main.wasm", b"\0asm\x0d\0\x01\0");
    write(root, "ui/index.html", b"<!doctype html>");
    write(root, "ui/assets/app.js", b"console.log(1)");
    let deep = format!("ui/{}/x.css", "d".repeat(120));
    write(root, &deep, b"a{}");
    write(root, ".env", b"SECRET=1");
    write(root, ".git/config", b"[core]");
    write(root, "ui/.DS_Store", b"junk");
    write(root, "bundle.tar.zst", b"old output");
    fs::create_dir_all(root.join("wit/empty")).expect("mkdir");
    tmp
}

#[test]
fn pack_unpack_round_trip() {
    let tmp = sample_dir();
    let bytes = pack_dir(tmp.path()).expect("pack");
    let bundle = unpack(&bytes, &Limits::default()).expect("unpack");
    let deep = format!("ui/{}/x.css", "d".repeat(120));
    let paths: Vec<&str> = bundle.files.keys().map(String::as_str).collect();
    let mut want = vec![
        "dist/main.wasm",
        "manifest.json",
        "ui/assets/app.js",
        "ui/index.html",
        deep.as_str(),
    ];
    want.sort();
    assert_eq!(paths, want);
    assert_eq!(bundle.component(), Some(&b"\0asm\x0d\0\x01\0"[..]));
    assert_eq!(bundle.require_component().expect("component").len(), 8);
    assert_eq!(bundle.manifest().expect("manifest").name, "com.acme.x");
    let ui: Vec<&str> = bundle.ui_files().map(|(p, _)| p).collect();
    assert_eq!(ui, ["assets/app.js", &deep[3..], "index.html"]);
    assert_eq!(bundle.file("ui/index.html"), Some(&b"<!doctype html>"[..]));
    assert_eq!(
        read_manifest(&bytes, &Limits::default()).expect("read_manifest"),
        bundle.manifest().expect("manifest")
    );
}

#[test]
fn pack_is_deterministic() {
    let tmp = sample_dir();
    let first = pack_dir(tmp.path()).expect("pack");
    // Touching a file changes its mtime, not the bundle.
    let f = fs::File::options()
        .append(true)
        .open(tmp.path().join("ui/index.html"))
        .expect("open");
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
        .expect("set mtime");
    drop(f);
    assert_eq!(pack_dir(tmp.path()).expect("repack"), first);

    let tar = zstd::decode_all(first.as_slice()).expect("zstd");
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let h = entry.header();
        assert_eq!(h.mtime().expect("mtime"), 0);
        assert_eq!((h.uid().expect("uid"), h.gid().expect("gid")), (0, 0));
        let want_mode = if h.entry_type().is_dir() {
            0o755
        } else {
            0o644
        };
        assert_eq!(h.mode().expect("mode"), want_mode);
    }

    let slow = pack_dir_with(tmp.path(), &PackOptions { level: 19 }).expect("pack -19");
    let a = unpack(&first, &Limits::default()).expect("unpack");
    let b = unpack(&slow, &Limits::default()).expect("unpack");
    assert_eq!(a, b);
}

#[cfg(unix)]
#[test]
fn pack_refuses_what_unpack_would() {
    let tmp = sample_dir();
    std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("ui/passwd")).expect("symlink");
    match pack_dir(tmp.path()) {
        Err(ArchiveError::ForbiddenEntry { path, reason }) => {
            assert_eq!(
                (path.as_str(), reason),
                ("ui/passwd", EntryProblem::Symlink)
            );
        }
        other => panic!("expected symlink refusal, got {other:?}"),
    }

    let tmp = sample_dir();
    write(tmp.path(), "ui/a\\b.js", b"x");
    assert!(matches!(
        pack_dir(tmp.path()),
        Err(ArchiveError::ForbiddenEntry {
            reason: EntryProblem::BadCharacter,
            ..
        })
    ));

    let empty = tempfile::tempdir().expect("tempdir");
    write(empty.path(), "dist/main.wasm", b"x");
    assert!(matches!(
        pack_dir(empty.path()),
        Err(ArchiveError::MissingManifest)
    ));
    assert!(matches!(
        pack_dir(&empty.path().join("nope")),
        Err(ArchiveError::Io { .. })
    ));
}

#[test]
fn forbidden_paths() {
    let cases = [
        ("../x", EntryProblem::ParentSegment),
        ("ui/../../x", EntryProblem::ParentSegment),
        ("./../x", EntryProblem::ParentSegment),
        ("/abs", EntryProblem::Absolute),
        ("/etc/passwd", EntryProblem::Absolute),
        (".hidden/x", EntryProblem::HiddenSegment),
        ("ui/.env", EntryProblem::HiddenSegment),
        ("ui/./x", EntryProblem::HiddenSegment),
        ("a//b", EntryProblem::EmptySegment),
        ("ui/", EntryProblem::EmptySegment),
        ("./", EntryProblem::EmptySegment),
        ("a\\b", EntryProblem::BadCharacter),
        ("a\tb", EntryProblem::BadCharacter),
    ];
    for (path, want) in cases {
        check_forbidden(vec![file(path, b"x")], path, want);
    }
    check_forbidden(vec![dir("../d/")], "../d/", EntryProblem::ParentSegment);
    check_forbidden(vec![dir(".git/")], ".git/", EntryProblem::HiddenSegment);
    let mut not_utf8 = header("x", EntryType::Regular, 0);
    not_utf8.as_old_mut().name[..2].copy_from_slice(&[0xff, 0xfe]);
    not_utf8.set_cksum();
    check_forbidden(
        vec![(not_utf8, Vec::new())],
        "\u{fffd}\u{fffd}",
        EntryProblem::NotUtf8,
    );
}

#[test]
fn forbidden_entry_types() {
    let cases = [
        (
            link("ui/x", EntryType::Symlink, "/etc/passwd"),
            EntryProblem::Symlink,
        ),
        (
            link("ui/x", EntryType::Symlink, "ok.js"),
            EntryProblem::Symlink,
        ),
        (
            link("ui/x", EntryType::Link, "manifest.json"),
            EntryProblem::Hardlink,
        ),
        (
            (header("ui/x", EntryType::Char, 0), vec![]),
            EntryProblem::Device,
        ),
        (
            (header("ui/x", EntryType::Block, 0), vec![]),
            EntryProblem::Device,
        ),
        (
            (header("ui/x", EntryType::Fifo, 0), vec![]),
            EntryProblem::Fifo,
        ),
        (
            (header("ui/x", EntryType::Continuous, 0), vec![]),
            EntryProblem::UnsupportedType(b'7'),
        ),
    ];
    for (entry, want) in cases {
        check_forbidden(vec![entry], "ui/x", want);
    }
}

#[test]
fn duplicates_and_conflicts() {
    check_forbidden(
        vec![file("ui/a.js", b"1"), file("ui/a.js", b"2")],
        "ui/a.js",
        EntryProblem::Duplicate,
    );
    check_forbidden(
        vec![file("./manifest.json", b"{}")],
        "manifest.json",
        EntryProblem::Duplicate,
    );
    check_forbidden(
        vec![file("dist/main.wasm/x", b"1")],
        "dist/main.wasm/x",
        EntryProblem::FileDirConflict,
    );
    check_forbidden(
        vec![dir("dist/main.wasm/")],
        "dist/main.wasm",
        EntryProblem::FileDirConflict,
    );
    check_forbidden(
        vec![file("ui/a", b"1"), file("ui", b"2")],
        "ui",
        EntryProblem::FileDirConflict,
    );
}

#[test]
fn accepted_shapes() {
    // GNU tar's `tar -C stage -cf - .` layout, with directory entries and a pax global header.
    let mut global = header("pax_global_header", EntryType::XGlobalHeader, 0);
    global.set_cksum();
    let bytes = zst(&tar_of(&[
        (global, Vec::new()),
        dir("./"),
        dir("./ui/"),
        dir("ui/"),
        file("./manifest.json", MANIFEST.as_bytes()),
        file("./ui/index.html", b"<html>"),
        file("dist/main.wasm", b"\0asm"),
        file("ui/empty.js", b""),
    ]));
    let bundle = unpack(&bytes, &Limits::default()).expect("unpack");
    let paths: Vec<&str> = bundle.files.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "dist/main.wasm",
            "manifest.json",
            "ui/empty.js",
            "ui/index.html"
        ]
    );
}

#[test]
fn manifest_one_level_deep_is_lifted() {
    let bytes = zst(&tar_of(&[
        dir("ext/"),
        file("ext/manifest.json", MANIFEST.as_bytes()),
        file("ext/dist/main.wasm", b"\0asm"),
        file("ext/ui/index.html", b"<html>"),
    ]));
    let bundle = unpack(&bytes, &Limits::default()).expect("unpack");
    assert!(bundle.component().is_some());
    assert_eq!(bundle.ui_files().count(), 1);
    assert_eq!(bundle.manifest().expect("manifest").publisher, "Acme");
    assert_eq!(
        read_manifest(&bytes, &Limits::default())
            .expect("manifest")
            .name,
        "com.acme.x"
    );

    // Not lifted when files outside that directory exist, or the manifest is deeper.
    for entries in [
        vec![
            file("ext/manifest.json", MANIFEST.as_bytes()),
            file("README", b"x"),
        ],
        vec![file("a/b/manifest.json", MANIFEST.as_bytes())],
        vec![],
    ] {
        let bytes = zst(&tar_of(&entries));
        let bundle = unpack(&bytes, &Limits::default()).expect("unpack");
        assert!(matches!(
            bundle.manifest_bytes(),
            Err(ArchiveError::MissingManifest)
        ));
        assert!(matches!(
            read_manifest(&bytes, &Limits::default()),
            Err(ArchiveError::MissingManifest)
        ));
    }
}

#[test]
fn missing_component_and_bad_manifest() {
    let bytes = zst(&tar_of(&[file("manifest.json", b"{\"name\":1}")]));
    let bundle = unpack(&bytes, &Limits::default()).expect("unpack");
    assert!(matches!(
        bundle.require_component(),
        Err(ArchiveError::MissingComponent)
    ));
    match read_manifest(&bytes, &Limits::default()) {
        Err(ArchiveError::Manifest(e)) => assert!(e.issues().iter().any(|i| i.path == "name")),
        other => panic!("expected manifest error, got {other:?}"),
    }
}

#[test]
fn corrupt_archives() {
    let good = bundle_with(vec![]);
    let mut truncated_data = tar_of(&[file("manifest.json", MANIFEST.as_bytes())]);
    truncated_data.truncate(600);
    let mut bad_checksum = tar_of(&[file("manifest.json", MANIFEST.as_bytes())]);
    bad_checksum[0] ^= 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("not zstd", b"PK\x03\x04 zip".to_vec()),
        ("gzip", vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0]),
        ("zstd of text", zst(b"hello, world")),
        ("truncated zstd", good[..good.len() - 8].to_vec()),
        ("truncated tar entry", zst(&truncated_data)),
        ("bad tar checksum", zst(&bad_checksum)),
    ];
    for (what, bytes) in cases {
        match unpack(&bytes, &Limits::default()) {
            Err(ArchiveError::Corrupt(_)) => {}
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
    // Packed bundles carry a zstd checksum, verified even past the tar end-of-archive marker.
    let packed = pack_dir(sample_dir().path()).expect("pack");
    for at in [packed.len() / 3, packed.len() / 2, packed.len() - 5] {
        let mut flipped = packed.clone();
        flipped[at] ^= 0x55;
        assert!(
            unpack(&flipped, &Limits::default()).is_err(),
            "flip at {at}"
        );
    }
}

fn too_large(result: Result<Bundle, ArchiveError>) -> (Limit, u64) {
    match result {
        Err(ArchiveError::TooLarge { what, limit }) => (what, limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn count_and_size_caps() {
    let limits = Limits {
        max_files: 4,
        ..Limits::default()
    };
    let four = bundle_with(vec![file("a", b""), file("b", b"")]);
    assert!(unpack(&four, &limits).is_ok());
    let five = bundle_with(vec![file("a", b""), file("b", b""), dir("c/")]);
    assert_eq!(too_large(unpack(&five, &limits)), (Limit::Files, 4));

    let small_archive = Limits {
        max_archive_bytes: 10,
        ..Limits::default()
    };
    assert_eq!(
        too_large(unpack(&four, &small_archive)),
        (Limit::ArchiveBytes, 10)
    );

    let per_file = Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    };
    assert!(unpack(&bundle_with(vec![file("a", &[7; 1000])]), &per_file).is_ok());
    assert_eq!(
        too_large(unpack(&bundle_with(vec![file("a", &[7; 1001])]), &per_file)),
        (Limit::FileBytes, 1000)
    );

    let total = Limits {
        max_unpacked_bytes: 64 * 1024,
        ..Limits::default()
    };
    let many: Vec<_> = (0..20)
        .map(|i| file(&format!("f{i}"), &[i as u8; 4096]))
        .collect();
    assert_eq!(
        too_large(unpack(&bundle_with(many), &total)),
        (Limit::UnpackedBytes, 64 * 1024)
    );
}

/// Streams a tar whose single entry of `kind` claims `size` zero bytes through zstd, without
/// holding the uncompressed data in memory.
fn zero_bomb(kind: EntryType, name: &str, size: u64) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
    enc.write_all(header(name, kind, size).as_bytes())
        .expect("header");
    let chunk = vec![0u8; 1 << 20];
    let mut left = size.div_ceil(512) * 512 + 1024; // data, padding, end-of-archive blocks
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).expect("zeros");
        left -= n as u64;
    }
    enc.finish().expect("finish")
}

#[test]
fn decompression_bombs_are_cut_off() {
    const SIZE: u64 = 300 * 1024 * 1024;
    let limits = Limits::default();

    // A file that declares its size is refused before anything is allocated.
    let file_bomb = zero_bomb(EntryType::Regular, "dist/main.wasm", SIZE);
    assert!(
        file_bomb.len() < 64 * 1024,
        "compresses to {}",
        file_bomb.len()
    );
    assert_eq!(
        too_large(unpack(&file_bomb, &limits)),
        (Limit::FileBytes, 128 * MIB)
    );
    let roomy = Limits {
        max_file_bytes: 1 << 40,
        ..limits
    };
    assert_eq!(too_large(unpack(&file_bomb, &roomy)), (Limit::Ratio, 200));

    // Entries whose data tar consumes on its own (a GNU long name read fully into memory, a
    // directory's skipped data) are cut off by the streaming counter.
    for (kind, name) in [
        (EntryType::GNULongName, "././@LongLink"),
        (EntryType::Directory, "ui/"),
    ] {
        let bomb = zero_bomb(kind, name, SIZE);
        assert_eq!(
            too_large(unpack(&bomb, &limits)),
            (Limit::Ratio, 200),
            "{kind:?}"
        );
        assert!(matches!(
            read_manifest(&bomb, &limits),
            Err(ArchiveError::TooLarge {
                what: Limit::Ratio,
                ..
            })
        ));
    }
}

#[test]
fn ratio_grace_admits_tiny_bundles() {
    // 1 MiB of zeros compresses to a few bytes: far above 200×, but under the grace.
    let bytes = bundle_with(vec![file("ui/blank.bin", &vec![0; 900 * 1024])]);
    assert!(bytes.len() * 200 < 900 * 1024);
    assert!(unpack(&bytes, &Limits::default()).is_ok());
}

#[test]
fn capped_reader_stops_exactly() {
    let data = [1u8; 100];
    let count = std::cell::Cell::new(0);
    let mut r = unpack::tests_support::capped(&data[..], &count, 100);
    let mut out = Vec::new();
    assert_eq!(r.read_to_end(&mut out).expect("exactly the cap"), 100);
    let count = std::cell::Cell::new(0);
    let mut r = unpack::tests_support::capped(&data[..], &count, 99);
    assert!(r.read_to_end(&mut Vec::new()).is_err());
    assert_eq!(count.get(), 100);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn unpack_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = unpack(&bytes, &Limits::default());
    }

    #[test]
    fn unpack_never_panics_on_compressed_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = unpack(&zst(&bytes), &Limits::default());
    }

    #[test]
    fn unpack_never_panics_on_mutated_tar(
        flips in prop::collection::vec((0usize..4096, any::<u8>()), 1..8)
    ) {
        let mut tar = tar_of(&[
            file("manifest.json", MANIFEST.as_bytes()),
            dir("ui/"),
            file("ui/index.html", b"<html>"),
        ]);
        for (at, value) in flips {
            let len = tar.len();
            tar[at % len] = value;
        }
        let _ = unpack(&zst(&tar), &Limits::default());
    }
}
