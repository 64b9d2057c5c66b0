//! Capture and replay of executions (docs/design/replay.md). A captured
//! execution records everything its guest saw on a [`Tape`]: the request,
//! every host call with its answer, the clock readings and the random
//! bytes. A replay runs a component against a tape instead of the world:
//! the same answers in the same order, and the first place where the guest
//! asks for something else is its [`Divergence`].
//!
//! [`Taping`] is what one execution's host state carries: nothing, a
//! [`Recorder`] or a [`Player`]. The WASI clocks and generators
//! ([`source`]), the host services ([`backend`]) and `http.fetch` read
//! and write through it. [`ship`] sends finished tapes to the control
//! plane; [`replay`] is the in-process entry point the CLI uses. This
//! module decides nothing about who may capture: the install's policy
//! arrives with each request.

pub(crate) mod backend;
mod play;
mod record;
pub mod replay;
pub(crate) mod ship;
pub(crate) mod source;
pub mod tape;

use std::sync::Arc;

pub(crate) use play::Player;
pub use play::{Divergence, SEALED};
pub(crate) use record::{Reason, Recorder, recorder_for};
pub use tape::Tape;

/// What one execution does with what its guest sees.
#[derive(Clone, Default)]
pub(crate) enum Taping {
    #[default]
    Off,
    Record(Arc<Recorder>),
    Play(Arc<Player>),
}

impl Taping {
    /// Puts the clocks and generators of this mode on a WASI context.
    pub(crate) fn configure(&self, builder: &mut wasmtime_wasi::WasiCtxBuilder) {
        match self {
            Taping::Off => {}
            Taping::Record(r) => source::recording(builder, r),
            Taping::Play(p) => source::playing(builder, p),
        }
    }
}
