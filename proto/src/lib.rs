//! The Annex wire protocol: the generated `annex.v1` types and services, the
//! validated domain types that services convert to on receipt, and the one
//! error-code table mapping every domain error to a gRPC code and an HTTP status.
//!
//! This is the only crate that knows protobuf. It must not do I/O.

#![warn(unreachable_pub)]

pub mod domain;
pub mod error;

/// Generated `annex.v1` messages, clients and servers.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("annex.v1");
}

/// Encoded `FileDescriptorSet` of `annex.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("annex_descriptor");

pub use error::{AnnexError, ErrorCode};
