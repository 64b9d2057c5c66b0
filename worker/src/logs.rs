//! The execution log: guest `logging.*` calls, captured stdout/stderr and
//! execution failures, as `LogEvent`s for the control plane's debug stream
//! and as `tracing` events on target `ext`.
//!
//! Everything here is bounded: a message is cut at [`MAX_EVENT_BYTES`] (on a
//! character boundary; Alga's runner panics there), an execution keeps at
//! most [`MAX_EVENTS`] events, and stdout/stderr each keep at most
//! [`MAX_CAPTURE_BYTES`]; the rest is dropped and the last event says so.

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

/// Alga's `RUNNER_DEBUG_MAX_EVENT_BYTES`.
pub(crate) const MAX_EVENT_BYTES: usize = 8192;
/// Events kept per execution.
pub(crate) const MAX_EVENTS: usize = 256;
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

/// Collects one execution's events.
#[derive(Debug)]
pub(crate) struct LogSink {
    scope: LogScope,
    events: Vec<pb::LogEvent>,
    dropped: usize,
}

impl LogSink {
    pub(crate) fn new(scope: LogScope) -> LogSink {
        LogSink {
            scope,
            events: Vec::new(),
            dropped: 0,
        }
    }

    /// Records one event; `stream` is `log`, `stdout`, `stderr` or `system`.
    pub(crate) fn push(&mut self, level: Level, stream: &str, message: &str) {
        let (text, truncated) = truncate(message, MAX_EVENT_BYTES);
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
            self.dropped += 1;
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
        });
    }

    /// Adds the captured output as one event per line.
    pub(crate) fn push_output(&mut self, stream: &str, level: Level, captured: &CapturedOutput) {
        let (bytes, overflowed) = captured.contents();
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.push(level, stream, line);
        }
        if overflowed {
            self.push(
                Level::Warn,
                "system",
                &format!("{stream} exceeded {MAX_CAPTURE_BYTES} bytes; the rest was dropped"),
            );
        }
    }

    /// The events, with a final note if some were dropped.
    pub(crate) fn finish(mut self) -> Vec<pb::LogEvent> {
        if self.dropped > 0 {
            let dropped = self.dropped;
            self.events.pop();
            self.dropped = 0;
            self.push(
                Level::Warn,
                "system",
                &format!(
                    "{} log events were dropped (limit {MAX_EVENTS})",
                    dropped + 1
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

    #[test]
    fn sink_keeps_a_bounded_number_of_events() {
        let mut sink = LogSink::new(LogScope::default());
        for i in 0..(MAX_EVENTS + 10) {
            sink.push(Level::Info, "log", &format!("event {i}"));
        }
        let events = sink.finish();
        assert_eq!(events.len(), MAX_EVENTS);
        assert!(events.last().is_some_and(|e| e.stream == "system"));
    }
}
