//! The execution log: guest `logging.*` calls, captured stdout/stderr and
//! the worker's own notes on an execution (`system`), as `LogEvent`s for
//! the control plane's debug stream and as `tracing` events on target `ext`.
//!
//! Everything here is bounded, and checked before a line is written
//! anywhere: a message is cut at [`MAX_EVENT_BYTES`] (on a character
//! boundary; Alga's runner panics there); an execution keeps at most
//! [`MAX_GUEST_EVENTS`] guest lines and [`MAX_EXECUTION_BYTES`] of them;
//! each install's lines also draw on its per-worker rate (`rate`); stdout
//! and stderr each keep at most [`MAX_CAPTURE_BYTES`]. What is refused is
//! neither logged nor published, only counted, and one `system` notice per
//! execution says how much ("log truncated"). The worker's own notes (a
//! failure, a capture overflow, that notice) are always kept. Publishing is
//! `shipper`'s.

mod rate;
mod shipper;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use annex_proto::pb;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

pub(crate) use rate::{LogRates, RateLimits};
pub(crate) use shipper::LogShipper;

/// Alga's `RUNNER_DEBUG_MAX_EVENT_BYTES`.
pub(crate) const MAX_EVENT_BYTES: usize = 8192;
/// Events an execution's log holds at most: its guest lines plus the
/// worker's few notes.
pub(crate) const MAX_EVENTS: usize = 256;
/// Guest lines (`logging.*`, stdout, stderr) kept per execution; the rest
/// of [`MAX_EVENTS`] is room for the worker's notes.
pub(crate) const MAX_GUEST_EVENTS: usize = MAX_EVENTS - 6;
/// Message bytes of guest lines kept per execution.
pub(crate) const MAX_EXECUTION_BYTES: usize = 256 * 1024;
/// Bytes of stdout and of stderr kept per execution.
pub(crate) const MAX_CAPTURE_BYTES: usize = 64 * 1024;

/// The identifiers every event of one execution carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogScope {
    pub tenant_id: String,
    pub extension_id: String,
    pub install_id: String,
    pub request_id: String,
    pub version_id: String,
    pub content_hash: String,
}

/// Log levels as the debug stream spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Guest lines refused, by the bound that refused them.
#[derive(Debug, Default, Clone, Copy)]
struct Dropped {
    lines: usize,
    bytes: usize,
    rate: usize,
}

impl Dropped {
    fn total(&self) -> usize {
        self.lines + self.bytes + self.rate
    }
}

/// Collects one execution's events.
#[derive(Debug)]
pub(crate) struct LogSink {
    scope: LogScope,
    rates: Arc<LogRates>,
    guest_events: usize,
    guest_bytes: usize,
    events: Vec<pb::LogEvent>,
    dropped: Dropped,
}

impl LogSink {
    pub(crate) fn new(scope: LogScope, rates: Arc<LogRates>) -> LogSink {
        LogSink {
            scope,
            rates,
            guest_events: 0,
            guest_bytes: 0,
            events: Vec::new(),
            dropped: Dropped::default(),
        }
    }

    /// This sink's events and counts, leaving an empty one behind.
    pub(crate) fn take(&mut self) -> LogSink {
        let empty = LogSink::new(self.scope.clone(), self.rates.clone());
        std::mem::replace(self, empty)
    }

    /// The key of this execution's install in the per-install rates.
    fn rate_key(&self) -> String {
        let s = &self.scope;
        if s.install_id.is_empty() {
            format!("{}/{}", s.tenant_id, s.extension_id)
        } else {
            s.install_id.clone()
        }
    }

    /// Records one guest line; `stream` is `log`, `stdout` or `stderr`.
    /// Past a bound it is dropped, neither written nor published.
    pub(crate) fn push(&mut self, level: Level, stream: &str, message: &str) {
        let (text, truncated) = truncate(message, MAX_EVENT_BYTES);
        if self.guest_events >= MAX_GUEST_EVENTS {
            self.dropped.lines += 1;
            return;
        }
        if self.guest_bytes + text.len() > MAX_EXECUTION_BYTES {
            self.dropped.bytes += 1;
            return;
        }
        if !self.rates.allow(&self.rate_key(), text.len()) {
            self.dropped.rate += 1;
            return;
        }
        self.guest_events += 1;
        self.guest_bytes += text.len();
        self.record(level, stream, text, truncated);
    }

    /// Records a note of the worker's own about this execution (stream
    /// `system`); never dropped.
    pub(crate) fn note(&mut self, level: Level, message: &str) {
        let (text, truncated) = truncate(message, MAX_EVENT_BYTES);
        self.record(level, "system", text, truncated);
    }

    fn record(&mut self, level: Level, stream: &str, text: &str, truncated: bool) {
        let s = &self.scope;
        match level {
            Level::Info => {
                tracing::info!(target: "ext", tenant = %s.tenant_id, extension = %s.extension_id, install = %s.install_id, request = %s.request_id, stream, message = %text)
            }
            Level::Warn => {
                tracing::warn!(target: "ext", tenant = %s.tenant_id, extension = %s.extension_id, install = %s.install_id, request = %s.request_id, stream, message = %text)
            }
            Level::Error => {
                tracing::error!(target: "ext", tenant = %s.tenant_id, extension = %s.extension_id, install = %s.install_id, request = %s.request_id, stream, message = %text)
            }
        }
        if self.events.len() >= MAX_EVENTS {
            return;
        }
        self.events.push(pb::LogEvent {
            ts_ms: now_ms(),
            level: level.as_str().to_string(),
            stream: stream.to_string(),
            tenant_id: s.tenant_id.clone(),
            extension_id: s.extension_id.clone(),
            install_id: s.install_id.clone(),
            request_id: s.request_id.clone(),
            version_id: s.version_id.clone(),
            content_hash: s.content_hash.clone(),
            message: text.to_string(),
            truncated,
            // The control plane numbers events as it stores them.
            id: String::new(),
        });
    }

    /// Adds the captured output as one guest line per line.
    pub(crate) fn push_output(&mut self, stream: &str, level: Level, captured: &CapturedOutput) {
        let (bytes, overflowed) = captured.contents();
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.push(level, stream, line);
        }
        if overflowed {
            self.note(
                Level::Warn,
                &format!("{stream} exceeded {MAX_CAPTURE_BYTES} bytes; the rest was dropped"),
            );
        }
    }

    /// The events, with one "log truncated" notice if guest lines were
    /// dropped.
    pub(crate) fn finish(mut self) -> Vec<pb::LogEvent> {
        let d = self.dropped;
        if d.total() > 0 {
            self.note(
                Level::Warn,
                &format!(
                    "log truncated: {} guest log lines dropped ({} over {MAX_GUEST_EVENTS} lines \
                     per execution, {} over {MAX_EXECUTION_BYTES} bytes per execution, {} over \
                     the install's rate)",
                    d.total(),
                    d.lines,
                    d.bytes,
                    d.rate
                ),
            );
        }
        self.events
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A guest's stdout or stderr: kept in memory up to [`MAX_CAPTURE_BYTES`],
/// the rest silently discarded (a full buffer must not make the guest's
/// `println!` fail and panic).
#[derive(Debug, Clone, Default)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Capture>>,
}

#[derive(Debug, Default)]
struct Capture {
    buf: Vec<u8>,
    overflowed: bool,
}

impl CapturedOutput {
    pub(crate) fn new() -> CapturedOutput {
        CapturedOutput::default()
    }

    /// What was captured and whether anything was dropped.
    pub(crate) fn contents(&self) -> (Vec<u8>, bool) {
        let c = self.inner.lock();
        (c.buf.clone(), c.overflowed)
    }

    fn append(&self, bytes: &[u8]) {
        let mut c = self.inner.lock();
        let room = MAX_CAPTURE_BYTES.saturating_sub(c.buf.len());
        if bytes.len() > room {
            c.overflowed = true;
        }
        let take = bytes.len().min(room);
        c.buf.extend_from_slice(&bytes[..take]);
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: excess is dropped, never refused.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "aé".repeat(10);
        let (t, cut) = truncate(&s, 4);
        assert!(cut);
        assert_eq!(t, "aéa");
        assert_eq!(truncate("short", 10), ("short", false));
    }

    #[test]
    fn capture_is_bounded_and_reports_overflow() {
        let out = CapturedOutput::new();
        out.append(&vec![b'x'; MAX_CAPTURE_BYTES - 1]);
        out.append(b"yz");
        let (bytes, overflowed) = out.contents();
        assert_eq!(bytes.len(), MAX_CAPTURE_BYTES);
        assert!(overflowed);
    }

    fn sink() -> LogSink {
        LogSink::new(LogScope::default(), Arc::new(LogRates::default()))
    }

    #[test]
    fn sink_keeps_a_bounded_number_of_events_and_says_so_once() {
        let mut sink = sink();
        for i in 0..(MAX_EVENTS + 10) {
            sink.push(Level::Info, "log", &format!("event {i}"));
        }
        sink.note(Level::Error, "execute failed: trap");
        let events = sink.finish();
        assert_eq!(events.len(), MAX_GUEST_EVENTS + 2);
        let notices: Vec<_> = events
            .iter()
            .filter(|e| {
                e.message
                    .starts_with("log truncated: 16 guest log lines dropped")
            })
            .collect();
        assert_eq!(notices.len(), 1, "{:?}", events.last());
        assert!(events.iter().any(|e| e.message == "execute failed: trap"));
    }

    #[test]
    fn sink_keeps_a_bounded_number_of_bytes() {
        let mut sink = sink();
        let line = "x".repeat(MAX_EVENT_BYTES);
        for _ in 0..100 {
            sink.push(Level::Info, "log", &line);
        }
        let events = sink.finish();
        let kept: usize = events
            .iter()
            .filter(|e| e.stream == "log")
            .map(|e| e.message.len())
            .sum();
        assert_eq!(kept, MAX_EXECUTION_BYTES);
        assert!(
            events
                .last()
                .is_some_and(|e| e.message.starts_with("log truncated"))
        );
    }

    #[test]
    fn an_install_over_its_rate_is_cut_across_executions() {
        let rates = Arc::new(LogRates::new(RateLimits {
            lines_per_sec: 0.0,
            line_burst: 300.0,
            bytes_per_sec: 0.0,
            byte_burst: 1e9,
        }));
        let scope = LogScope {
            install_id: "i-1".into(),
            ..LogScope::default()
        };
        let mut kept = 0;
        for _ in 0..3 {
            let mut sink = LogSink::new(scope.clone(), rates.clone());
            for _ in 0..200 {
                sink.push(Level::Info, "log", "line");
            }
            kept += sink.finish().iter().filter(|e| e.stream == "log").count();
        }
        assert_eq!(kept, 300);
    }
}
