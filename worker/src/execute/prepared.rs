//! Executions whose caller brings what the `Worker` service takes from the
//! worker itself: the bundle source and trust keys (a [`LoadPlan`]) and the
//! host services its interfaces reach. The runner API uses it for Alga's
//! `/v1/execute` (docs/design/alga-compatibility.md, "Runner API"), whose
//! bundles come from Alga's bundle store and whose host calls go to Alga's
//! host application.
//!
//! The steps are the executor's own (decode, admit, load, run, answer),
//! with the checks in the order Alga's runner makes them: unknown
//! capabilities only after the bundle loaded, then the caller's
//! [`Refusal`] (a secret envelope that does not open, a body that is not
//! base64). Nothing here decodes Alga's JSON or talks to Alga.

use std::sync::Arc;
use std::time::Instant;

use annex_bundle::ContentHash;
use annex_proto::pb;
use tracing::Instrument as _;

use super::guest::Job;
use super::request::Request;
use super::response::Failure;
use super::{ExecuteError, Executor, NotStarted, load_failure};
use crate::backend::HostBackend;
use crate::cache::{CacheError, Compiled, LoadSource};
use crate::capabilities::Capabilities;
use crate::capture::Taping;
use crate::host::Services;
use crate::loader::LoadPlan;

/// A refusal the caller found while decoding, reported after the component
/// loaded and the capabilities passed (outcome `rejected`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u32,
    pub(crate) error: String,
}

/// One execution with the caller's sources.
pub(crate) struct Prepared {
    pub(crate) request: pb::ExecuteRequest,
    pub(crate) plan: LoadPlan,
    /// The host services this execution's interfaces reach (egress stays
    /// the worker's own).
    pub(crate) backend: Arc<dyn HostBackend>,
    pub(crate) refusal: Option<Refusal>,
    /// A replay's tape (docs/design/replay.md), or `Off`.
    pub(crate) taping: Taping,
}

impl Executor {
    /// Runs a prepared execution. `Err` only when the guest was not started
    /// (draining, overloaded).
    pub(crate) async fn execute_prepared(
        self: &Arc<Self>,
        prepared: Prepared,
    ) -> Result<pb::ExecuteResponse, NotStarted> {
        let started = Instant::now();
        if self.drain.is_draining() {
            return Err(NotStarted::Draining);
        }
        let result = self.attempt_prepared(prepared, started).await;
        self.answer(result, started)
    }

    /// Fetches, verifies and compiles `hash` as `plan` says, ahead of traffic.
    pub(crate) async fn prewarm_with(
        &self,
        hash: &ContentHash,
        plan: &LoadPlan,
    ) -> Result<LoadSource, Arc<CacheError>> {
        let (_, source) = self.loader.load_with(hash, plan).await?;
        self.metrics.component_loaded(source.as_str());
        Ok(source)
    }

    async fn attempt_prepared(
        self: &Arc<Self>,
        prepared: Prepared,
        started: Instant,
    ) -> Result<pb::ExecuteResponse, ExecuteError> {
        let Prepared {
            request,
            plan,
            backend,
            refusal,
            taping,
        } = prepared;
        let request = Request::try_from(request)?;
        let budget = self.limits.budget(&request.limits);
        let permit = self
            .admission
            .acquire(&request.call.tenant_id, self.limits.queue_wait(&budget))
            .await
            .map_err(NotStarted::Overloaded)?;
        let _in_flight = self.metrics.in_flight();
        let compiled = self.component_with(&request.hash, &plan).await?;
        let caps = Capabilities::from_providers(&request.providers)
            .map_err(|unknown| Failure::rejected(400, unknown.to_string()))?;
        if let Some(r) = refusal {
            return Err(Failure::rejected(r.status, r.error).into());
        }
        let services = Arc::new(Services {
            backend,
            egress: self.services.egress.clone(),
            log_rates: self.services.log_rates.clone(),
        });
        let job = Job {
            request,
            caps,
            budget,
            started,
            services,
            ship_logs: false,
            taping,
        };
        let result = self.run_on_guest_runtime(compiled, job).await;
        drop(permit);
        result
    }

    /// The component from `plan`, or Alga's error string for the failure.
    async fn component_with(
        &self,
        hash: &ContentHash,
        plan: &LoadPlan,
    ) -> Result<Arc<Compiled>, Failure> {
        let span = annex_ops::span!(
            "worker.compile",
            hash = %hash,
            source = tracing::field::Empty
        );
        match self
            .loader
            .load_with(hash, plan)
            .instrument(span.clone())
            .await
        {
            Ok((compiled, source)) => {
                self.metrics.component_loaded(source.as_str());
                span.record("source", source.as_str());
                Ok(compiled)
            }
            Err(e) => Err(load_failure(hash, &e)),
        }
    }
}
