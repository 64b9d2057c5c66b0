//! Blob stores for real: conformance of the filesystem and S3 stores (S3
//! against moto's server), bundles published through the real gRPC
//! `Publish` into S3 (a 150 MiB one by multipart upload; one whose upload
//! the object store cuts off midway), orphan collection, and
//! `annex-control-plane migrate-blobs` from Postgres to S3 and to a
//! directory.

#[path = "../support/mod.rs"]
mod support;

mod collect;
mod conformance;
mod migrate;
mod moto;
mod publish;

use std::sync::Arc;

use annex_bundle::hash::{ContentHash, ContentHasher};
use annex_bundle::signing::KeyPair;
use annex_control_plane::store::BlobStore;
use annex_ops::Role;
use annex_proto::pb;
use annex_testkit::ControlPlane;
use futures::StreamExt as _;
use rand::RngCore as _;

const PUB: &str = "acme";

/// A signed bundle of `name` 1.0.0 whose `padding` bytes of random data
/// (incompressible) sit in UI files of at most 64 MiB each.
pub fn padded_bundle(name: &str, padding: usize) -> Vec<u8> {
    const FILE: usize = 64 * 1024 * 1024;
    let manifest = support::manifest(PUB, name, "1.0.0");
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("manifest.json".into(), manifest),
        ("dist/main.wasm".into(), support::EMPTY_COMPONENT.to_vec()),
    ];
    let mut rng = rand::thread_rng();
    let mut left = padding;
    let mut n = 0;
    while left > 0 {
        let size = left.min(FILE);
        let mut data = vec![0u8; size];
        rng.fill_bytes(&mut data);
        files.push((format!("ui/padding-{n}.bin"), data));
        left -= size;
        n += 1;
    }
    let entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    support::tar_zst(&entries)
}

/// Publishes `bytes` signed by `key` as the operator, streaming 1 MiB chunks
/// made as they are sent.
pub async fn publish(
    server: &ControlPlane,
    key: &KeyPair,
    name: &str,
    bytes: Arc<Vec<u8>>,
) -> Result<pb::PublishResponse, tonic::Status> {
    let signature = support::sign(key, &bytes, PUB, name, "1.0.0");
    let header = pb::PublishRequest {
        part: Some(pb::publish_request::Part::Header(pb::PublishHeader {
            signature,
            ..Default::default()
        })),
    };
    const CHUNK: usize = 1024 * 1024;
    let chunks = (0..bytes.len().div_ceil(CHUNK)).map(move |i| pb::PublishRequest {
        part: Some(pb::publish_request::Part::Chunk(
            bytes[i * CHUNK..((i + 1) * CHUNK).min(bytes.len())].to_vec(),
        )),
    });
    server
        .registry(Role::Operator)
        .await
        .publish(futures::stream::iter(std::iter::once(header).chain(chunks)))
        .await
        .map(tonic::Response::into_inner)
}

/// Fetches a bundle through `FetchBundle` as a worker; returns its size and
/// the hash of the bytes received (never holding them whole).
pub async fn fetch(
    server: &ControlPlane,
    content_hash: &str,
) -> Result<(u64, ContentHash), tonic::Status> {
    let mut stream = server
        .registry(Role::Worker)
        .await
        .fetch_bundle(pb::FetchBundleRequest {
            content_hash: content_hash.into(),
        })
        .await?
        .into_inner();
    let mut hasher = ContentHasher::new();
    let (mut size, mut declared) = (0u64, None);
    while let Some(msg) = stream.next().await {
        match msg?.part {
            Some(pb::fetch_bundle_response::Part::Info(info)) => declared = Some(info.size_bytes),
            Some(pb::fetch_bundle_response::Part::Chunk(chunk)) => {
                size += chunk.len() as u64;
                hasher.update(&chunk);
            }
            None => {}
        }
    }
    assert_eq!(declared, Some(size), "the info message states the size");
    Ok((size, hasher.finish()))
}

/// Asserts the bundle is served whole and identical, by hash and size.
pub async fn assert_served(server: &ControlPlane, bytes: &[u8]) {
    let hash = ContentHash::of(bytes);
    let (size, got) = fetch(server, &hash.to_string())
        .await
        .unwrap_or_else(|e| panic!("fetching {hash}: {e}"));
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(got, hash, "fetched bytes differ from the published ones");
}

/// The whole blob, read through its stream.
pub async fn read_blob(store: &dyn BlobStore, hash: &str) -> Option<Vec<u8>> {
    let mut read = store.get_blob(hash).await.expect("get_blob")?;
    let mut out = Vec::new();
    while let Some(chunk) = read.chunks.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(out.len() as u64, read.size, "streamed size");
    Some(out)
}

/// Commits `bytes` under their hash from a spooled file; returns the hash.
pub async fn put_blob(store: &dyn BlobStore, bytes: &[u8]) -> String {
    let hash = ContentHash::of(bytes).to_string();
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), bytes).expect("write");
    store
        .put_blob_file(&hash, file.path())
        .await
        .expect("put_blob_file");
    hash
}

pub fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}
