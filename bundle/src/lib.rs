//! Annex bundles: everything about an extension's `bundle.tar.zst` that does not need a network,
//! a database or a clock.
//!
//! This crate owns the manifest v2 rules ([`manifest`]), the capability names ([`capability`]),
//! the content hash ([`hash`]), deterministic packing and safe unpacking ([`archive`]), Ed25519
//! bundle signatures ([`signing`]) and the trust-bundle verdict ([`trust`]). The CLI, the control
//! plane and the worker all use it, so a bundle is judged the same way at `annex pack`, at
//! publish, at install and before compilation. It must stay pure logic: no async runtime, no
//! logging, no I/O beyond [`archive::pack_dir`] reading the directory it is given.

#![warn(unreachable_pub)]

pub mod archive;
pub mod capability;
pub mod hash;
pub mod manifest;
pub mod signing;
pub mod trust;

pub use archive::{ArchiveError, Bundle, Limits};
pub use hash::{ContentHash, ContentHasher};
pub use manifest::{Endpoint, Manifest, ManifestError, UiSpec, VersionSpec, World};
pub use signing::{KeyPair, PublicKey, SignatureError};
pub use trust::{TrustBundle, TrustError, TrustedKey};
