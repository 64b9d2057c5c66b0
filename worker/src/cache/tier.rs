//! Compile tiering: a large component missing from every cache is compiled
//! first with Winch (about four times faster than Cranelift for an 11.8 MB
//! JavaScript component) and served from that, while Cranelift compiles it
//! again in the background through the same queue. The Cranelift component
//! is written to disk and replaces the Winch one in memory; calls already
//! running on Winch code finish on it (each holds its `Prepared`).
//!
//! Invariants: a Winch component is never written to disk (the disk cache
//! only ever holds the final tier, named by the Cranelift engine's
//! compatibility hash); at most one background Cranelift compile per
//! component digest runs at a time; a Winch entry never replaces a Cranelift
//! one in memory; a component is prepared with the linker of the engine that
//! compiled it.

use std::sync::Arc;

use annex_bundle::ContentHash;
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::queue::Urgency;
use super::{CacheError, Core, Prepared};
use crate::bindings::RunnerV2Pre;
use crate::engine::Tier;

impl Core {
    /// Compiles `bytes` with Winch and prepares it. Nothing is stored.
    pub(super) async fn winch(
        &self,
        digest: &ContentHash,
        bytes: Arc<Vec<u8>>,
    ) -> Result<Arc<Prepared>, CacheError> {
        let component = self
            .queue
            .compile(&self.engine, Tier::Winch, Urgency::Call, digest, bytes)
            .await?;
        self.prepare(Tier::Winch, digest, &component)
    }

    /// Compiles `bytes` with Cranelift, stores the artifact on disk (and
    /// uses the memory-mapped copy) and prepares it.
    pub(super) async fn cranelift(
        &self,
        digest: &ContentHash,
        bytes: Arc<Vec<u8>>,
        urgency: Urgency,
    ) -> Result<Arc<Prepared>, CacheError> {
        let compiled = self
            .queue
            .compile(&self.engine, Tier::Cranelift, urgency, digest, bytes)
            .await?;
        let component = match &self.disk {
            Some(disk) => disk
                .store(digest, compiled.clone())
                .await
                .unwrap_or(compiled),
            None => compiled,
        };
        self.prepare(Tier::Cranelift, digest, &component)
    }

    /// Starts the background Cranelift compile of `digest` unless one is
    /// already under way; when it is done its component replaces the Winch
    /// one in memory.
    pub(super) fn upgrade_in_background(
        self: &Arc<Self>,
        digest: &ContentHash,
        bytes: Arc<Vec<u8>>,
    ) {
        if !self.upgrading.lock().insert(digest.clone()) {
            return;
        }
        let core = self.clone();
        let digest = digest.clone();
        tokio::spawn(async move {
            match core.cranelift(&digest, bytes, Urgency::Background).await {
                Ok(prepared) => {
                    core.components.lock().put(digest.clone(), prepared);
                    tracing::info!(component = %digest, "Cranelift code replaced Winch code");
                }
                Err(error) => tracing::warn!(
                    component = %digest,
                    %error,
                    "the background Cranelift compile failed; Winch code keeps serving until the component is compiled again"
                ),
            }
            core.upgrading.lock().remove(&digest);
        });
    }

    /// Keeps `prepared` in memory, unless it is Winch code and Cranelift
    /// code for the same component is there already.
    pub(super) fn keep(&self, prepared: Arc<Prepared>) {
        let mut components = self.components.lock();
        let better_there = prepared.tier == Tier::Winch
            && components
                .peek(&prepared.digest)
                .is_some_and(|p| p.tier == Tier::Cranelift);
        if !better_there {
            components.put(prepared.digest.clone(), prepared);
        }
    }

    /// Pre-instantiates `component` (compiled by `tier`'s engine) with that
    /// engine's linker and finds its entry points.
    pub(super) fn prepare(
        &self,
        tier: Tier,
        digest: &ContentHash,
        component: &Component,
    ) -> Result<Arc<Prepared>, CacheError> {
        let linker = match tier {
            Tier::Cranelift => Some(&self.linker),
            Tier::Winch => self.winch_linker.as_ref(),
        };
        let (Some(linker), Some(engine)) = (linker, self.engine.engine_for(tier)) else {
            return Err(CacheError::Compile(format!(
                "no {} engine: compile tiering is off",
                tier.as_str()
            )));
        };
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| CacheError::Compile(format!("{e:#}")))?;
        let runner = RunnerV2Pre::new(pre.clone()).ok();
        let proxy = ProxyPre::new(pre).ok();
        if runner.is_none() && proxy.is_none() {
            return Err(CacheError::Compile(format!(
                "component {digest} exports neither alga:extension's handler nor wasi:http/incoming-handler"
            )));
        }
        Ok(Arc::new(Prepared {
            digest: digest.clone(),
            tier,
            engine: engine.clone(),
            runner,
            proxy,
        }))
    }
}
