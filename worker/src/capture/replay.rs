//! Replaying a capture in this process: an executor of its own (no
//! control plane, no network, no disk but an optional compile cache) runs
//! the captured request against a bundle, with its host services, clocks
//! and generators answered from the tape ([`super::Player`]). The `annex`
//! CLI's `replay` command is the caller.
//!
//! The bundle is checked against its content hash only: the operator
//! brings it (the captured version fetched from the registry, or a build
//! of their own to check a fix), and nothing it does leaves this process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use annex_bundle::{ContentHash, TrustBundle};
use annex_proto::pb;
use anyhow::Context as _;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use prost::Message as _;
use serde::Serialize;

use super::backend::PlayingBackend;
use super::{Divergence, Player, Tape, Taping};
use crate::backend::NoHostBackend;
use crate::bundles::{BundleError, BundleSource, FetchedBundle, SignatureRecord, StaticTrust};
use crate::cache::Tiering;
use crate::execute::Prepared;
use crate::loader::LoadPlan;
use crate::metrics::Metrics;
use crate::server::{self, Sources};
use crate::settings::ExecutorSettings;

/// What a replay runs.
pub struct ReplayInput {
    pub tape: Tape,
    /// Secret values for the tape's secrets answer (revealed by an
    /// operator); keys without one read as `(sealed)`.
    pub secrets: BTreeMap<String, String>,
    /// The `bundle.tar.zst` to run.
    pub bundle: Vec<u8>,
    /// A directory for compiled components (`None`: compile every time).
    pub cache_dir: Option<PathBuf>,
}

/// What a replay produced.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// The bundle that ran.
    pub content_hash: String,
    /// The recorded and the replayed answers, as the worker gives them
    /// (without usage figures or worker id).
    #[serde(skip)]
    pub recorded: pb::ExecuteResponse,
    #[serde(skip)]
    pub response: pb::ExecuteResponse,
    /// The replayed answer equals the recorded one, byte for byte.
    pub same_response: bool,
    /// The first place the guest left the tape.
    pub divergence: Option<Divergence>,
}

/// The captured request as it will be replayed against `hash`.
pub fn captured_request(tape: &Tape) -> anyhow::Result<pb::ExecuteRequest> {
    let bytes = B64
        .decode(&tape.request)
        .context("decoding the captured request")?;
    pb::ExecuteRequest::decode(bytes.as_slice()).context("decoding the captured request")
}

/// The recorded answer of `tape`.
pub fn recorded_response(tape: &Tape) -> anyhow::Result<pb::ExecuteResponse> {
    let bytes = B64
        .decode(&tape.response)
        .context("decoding the captured response")?;
    pb::ExecuteResponse::decode(bytes.as_slice()).context("decoding the captured response")
}

/// Runs `input` and reports the answer and the first divergence.
pub async fn replay(input: ReplayInput) -> anyhow::Result<Replayed> {
    let ReplayInput {
        tape,
        secrets,
        bundle,
        cache_dir,
    } = input;
    let recorded = recorded_response(&tape)?;
    let mut request = captured_request(&tape)?;
    let hash = ContentHash::of(&bundle);
    let context = request.context.get_or_insert_default();
    context.content_hash = hash.to_string();
    request.idempotency_key.clear();
    request.capture = None;

    let source: Arc<dyn BundleSource> = Arc::new(OneBundle {
        hash: hash.clone(),
        bytes: bundle,
    });
    let executor = server::build(
        &settings(cache_dir),
        Sources {
            backend: Arc::new(NoHostBackend),
            bundles: source.clone(),
            trust: Arc::new(StaticTrust(Arc::new(TrustBundle::default()))),
        },
        Metrics::unregistered(),
    )
    .context("building the replay engine")?;
    let player = Arc::new(Player::new(tape, secrets));
    let prepared = Prepared {
        request,
        plan: LoadPlan {
            bundles: source,
            trust: None,
        },
        backend: Arc::new(PlayingBackend {
            player: player.clone(),
        }),
        refusal: None,
        taping: Taping::Play(player.clone()),
    };
    let mut response = executor
        .execute_prepared(prepared)
        .await
        .map_err(|e| anyhow::anyhow!("the replay did not start: {e}"))?;
    response.usage = None;
    response.worker_id.clear();
    let mut divergence = player.divergence();
    if divergence.is_none() {
        divergence = player.unasked_divergence();
    }
    Ok(Replayed {
        content_hash: hash.to_string(),
        same_response: response.encode_to_vec() == recorded.encode_to_vec(),
        recorded,
        response,
        divergence,
    })
}

/// One engine for one replay: on-demand allocation (no pool to reserve),
/// Cranelift only, and a compile that may take as long as it takes.
fn settings(cache_dir: Option<PathBuf>) -> ExecutorSettings {
    let mut settings = ExecutorSettings {
        worker_id: "replay".to_string(),
        cache_dir,
        ..ExecutorSettings::default()
    };
    settings.engine.pool.enabled = false;
    settings.compile.tiering = Tiering::Cranelift;
    settings.compile.wait = Duration::from_secs(600);
    settings
}

/// The one bundle a replay runs, by its hash.
struct OneBundle {
    hash: ContentHash,
    bytes: Vec<u8>,
}

#[async_trait]
impl BundleSource for OneBundle {
    async fn fetch(&self, hash: &ContentHash) -> Result<FetchedBundle, BundleError> {
        if *hash != self.hash {
            return Err(BundleError::NotFound(hash.to_string()));
        }
        Ok(FetchedBundle {
            bytes: self.bytes.clone(),
            signature: SignatureRecord {
                publisher: String::new(),
                name: String::new(),
                version: String::new(),
                signature: String::new(),
                key_id: String::new(),
            },
        })
    }
}
