//! The WASI clocks and random generators of captured and replayed
//! executions. Recording ones read the real clock or the system's
//! generator and write what they gave to the tape; playing ones give back
//! the tape's values in order. Resolutions are fixed (1 ns) so they never
//! differ between the two.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core_wasi::TryRng;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use super::{Player, Recorder};

pub(crate) fn recording(builder: &mut WasiCtxBuilder, recorder: &Arc<Recorder>) {
    let seed = recorder.insecure_seed();
    builder
        .wall_clock(Recorded(recorder.clone()))
        .monotonic_clock(Recorded(recorder.clone()))
        .secure_random(RecordedRng::new(recorder.clone(), true))
        .insecure_random(RecordedRng::new(recorder.clone(), false))
        .insecure_random_seed(seed);
}

pub(crate) fn playing(builder: &mut WasiCtxBuilder, player: &Arc<Player>) {
    let seed = player.insecure_seed();
    builder
        .wall_clock(Played(player.clone()))
        .monotonic_clock(Played(player.clone()))
        .secure_random(PlayedRng(player.clone(), true))
        .insecure_random(PlayedRng(player.clone(), false))
        .insecure_random_seed(seed);
}

const RESOLUTION_NS: u64 = 1;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The process's monotonic origin (monotonic readings are relative to it).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

struct Recorded(Arc<Recorder>);

impl HostWallClock for Recorded {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(RESOLUTION_NS)
    }

    fn now(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let ns = nanos(now);
        self.0.wall_clock(ns);
        Duration::from_nanos(ns)
    }
}

impl HostMonotonicClock for Recorded {
    fn resolution(&self) -> u64 {
        RESOLUTION_NS
    }

    fn now(&self) -> u64 {
        let ns = nanos(origin().elapsed());
        self.0.monotonic_clock(ns);
        ns
    }
}

struct Played(Arc<Player>);

impl HostWallClock for Played {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(RESOLUTION_NS)
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.wall_clock())
    }
}

impl HostMonotonicClock for Played {
    fn resolution(&self) -> u64 {
        RESOLUTION_NS
    }

    fn now(&self) -> u64 {
        self.0.monotonic_clock()
    }
}

/// The system's generator, read in blocks, with every byte handed out
/// also written to the tape.
struct RecordedRng {
    recorder: Arc<Recorder>,
    secure: bool,
    block: [u8; 256],
    at: usize,
}

impl RecordedRng {
    fn new(recorder: Arc<Recorder>, secure: bool) -> RecordedRng {
        RecordedRng {
            recorder,
            secure,
            block: [0; 256],
            at: 256,
        }
    }

    fn take(&mut self, out: &mut [u8]) {
        let mut filled = 0;
        while filled < out.len() {
            if self.at == self.block.len() {
                // The system generator failing is not something a guest can
                // cause; zeros would still be recorded and replayed alike.
                if getrandom::fill(&mut self.block).is_err() {
                    self.block.fill(0);
                }
                self.at = 0;
            }
            let n = (out.len() - filled).min(self.block.len() - self.at);
            out[filled..filled + n].copy_from_slice(&self.block[self.at..self.at + n]);
            self.at += n;
            filled += n;
        }
        self.recorder.random(self.secure, out);
    }
}

impl TryRng for RecordedRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.take(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.take(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.take(dst);
        Ok(())
    }
}

struct PlayedRng(Arc<Player>, bool);

impl TryRng for PlayedRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.0.random(self.1, &mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.0.random(self.1, &mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.random(self.1, dst);
        Ok(())
    }
}
