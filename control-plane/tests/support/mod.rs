//! Test support for the control plane's component tests: the control plane
//! from the test kit on a throwaway Postgres database (the in-memory store
//! where Postgres cannot be had outside CI), and this crate's bundle
//! builders.

#![allow(dead_code)]

use std::io::Write as _;

use annex_bundle::hash::ContentHash;
use annex_bundle::signing::KeyPair;
use annex_control_plane::Limits;
use annex_testkit::{ControlPlane, ControlPlaneOptions, StoreChoice};

/// A control plane on Postgres whose platform egress allowlist names the
/// hosts the tests' installs ask for.
pub async fn start() -> ControlPlane {
    start_with(Limits {
        platform_egress_allowlist: vec!["*.example.com".into(), "api.partner.test".into()],
        ..Limits::default()
    })
    .await
}

/// A control plane on Postgres with `limits`.
pub async fn start_with(limits: Limits) -> ControlPlane {
    ControlPlane::start_with(ControlPlaneOptions {
        store: StoreChoice::Postgres,
        limits,
        ..ControlPlaneOptions::default()
    })
    .await
}

/// The smallest valid WebAssembly component: the preamble alone.
pub const EMPTY_COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

pub fn manifest(publisher: &str, name: &str, version: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": name,
        "publisher": publisher,
        "version": version,
        "runtime": "wasm-js@1",
        "capabilities": ["cap:storage.kv", " Cap:Http.Fetch "],
        "ui": {"type": "iframe", "entry": "ui/index.html", "hooks": {"appMenu": {"label": "Demo"}}},
        "api": {"endpoints": [
            {"method": "get", "path": "hello", "handler": "dist/main"},
            {"method": "POST", "path": "/echo", "handler": "dist/main"}
        ]}
    }))
    .expect("json")
}

/// A bundle.tar.zst of exactly these entries, in order (paths are written raw,
/// so forbidden ones can be built too).
pub fn tar_zst(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar);
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            let name = path.as_bytes();
            header.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        builder.finish().expect("finish");
    }
    zstd::encode_all(tar.as_slice(), 3).expect("zstd")
}

pub fn valid_bundle(publisher: &str, name: &str, version: &str) -> Vec<u8> {
    tar_zst(&[
        ("manifest.json", &manifest(publisher, name, version)),
        ("dist/main.wasm", EMPTY_COMPONENT),
        ("ui/index.html", b"<html>hi</html>"),
    ])
}

/// A bundle whose one UI file is `zeros` bytes of zeros: tiny compressed,
/// huge unpacked.
pub fn bomb_bundle(publisher: &str, name: &str, zeros: usize) -> Vec<u8> {
    let mut tar = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar);
        for (path, data) in [
            ("manifest.json", manifest(publisher, name, "1.0.0")),
            ("dist/main.wasm", EMPTY_COMPONENT.to_vec()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_path(path).expect("path");
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, data.as_slice()).expect("append");
        }
        let mut header = tar::Header::new_gnu();
        header.set_path("ui/zeros.bin").expect("path");
        header.set_size(zeros as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append(&header, std::io::repeat(0).take_n(zeros))
            .expect("append");
        builder.finish().expect("finish");
    }
    let mut enc = zstd::Encoder::new(Vec::new(), 3).expect("zstd");
    enc.write_all(&tar).expect("write");
    enc.finish().expect("finish")
}

trait TakeN: std::io::Read + Sized {
    fn take_n(self, n: usize) -> std::io::Take<Self> {
        std::io::Read::take(self, n as u64)
    }
}
impl<R: std::io::Read> TakeN for R {}

pub fn sign(key: &KeyPair, bytes: &[u8], publisher: &str, name: &str, version: &str) -> String {
    annex_bundle::signing::sign_bundle(key, &ContentHash::of(bytes), publisher, name, version)
}

/// The gRPC status's Annex error code.
pub fn code(status: &tonic::Status) -> annex_proto::ErrorCode {
    annex_proto::AnnexError::from_status(status).code
}
