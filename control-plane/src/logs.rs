//! Guest logs for the debug stream: what workers publish
//! (`HostServices.PublishLogs`) is cleaned, bounded and appended to the
//! store's debug event log; watchers (`WatchLogs`, `ListLogs`) read it back
//! from there, so every replica serves every worker's events and a reader
//! resumes after an event id on any replica. [`DebugLogs::trim`] keeps the
//! newest [`KEEP_PER_EXTENSION`] events of each tenant's extension (as
//! Alga's stream `MAXLEN`).
//!
//! While the database is unreachable, published events are refused (the
//! worker drops and counts them) and open streams wait; the debug stream
//! never touches an execution.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use annex_proto::AnnexError;
use annex_proto::pb::LogEvent;
use futures::Stream;
use parking_lot::Mutex;

use crate::store::{DebugEvent, DebugFilter, Store};

/// The newest events kept per (tenant, extension).
pub(crate) const KEEP_PER_EXTENSION: u32 = 2000;
/// The most a reader asks for at once, tail included.
pub(crate) const MAX_PAGE: u32 = 2000;
/// A message longer than this many bytes is cut (at a character boundary)
/// and marked truncated.
const MAX_MESSAGE_BYTES: usize = 8192;
/// Identifiers and the level/stream words longer than this are cut.
const MAX_FIELD_CHARS: usize = 256;
/// Events of one publish beyond this many are dropped.
const MAX_BATCH: usize = 4096;
/// How often an open stream looks for new events, and how often a trim runs.
const POLL: Duration = Duration::from_millis(400);
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// Keys waiting for a trim; beyond this, new keys wait for the next round.
const MAX_TOUCHED: usize = 65_536;

/// The debug event log as the gRPC services use it.
pub(crate) struct DebugLogs {
    store: Arc<dyn Store>,
    /// (tenant, extension) pairs appended to since the last trim.
    touched: Mutex<HashSet<(String, String)>>,
}

impl DebugLogs {
    pub(crate) fn new(store: Arc<dyn Store>) -> DebugLogs {
        DebugLogs {
            store,
            touched: Mutex::new(HashSet::new()),
        }
    }

    /// Appends a worker's batch. Events without a tenant or an extension are
    /// skipped; text is cleaned ([`clean`]).
    pub(crate) async fn publish(&self, events: Vec<LogEvent>) -> Result<(), AnnexError> {
        let events: Vec<DebugEvent> = events
            .into_iter()
            .take(MAX_BATCH)
            .filter_map(clean)
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        let keys: HashSet<(String, String)> = events
            .iter()
            .map(|e| (e.tenant_id.clone(), e.extension_id.clone()))
            .collect();
        self.store
            .append_debug_events(events)
            .await
            .map_err(AnnexError::from)?;
        let mut touched = self.touched.lock();
        for key in keys {
            if touched.len() >= MAX_TOUCHED {
                break;
            }
            touched.insert(key);
        }
        Ok(())
    }

    /// One page of matching events, oldest first, and the id to resume
    /// after: the last event's, else `after`'s, else 0 (nothing matched
    /// yet, so every later event is new).
    pub(crate) async fn page(
        &self,
        filter: &DebugFilter,
        after: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<LogEvent>, u64), AnnexError> {
        let rows = self
            .store
            .read_debug_events(filter, after, limit.clamp(1, MAX_PAGE))
            .await
            .map_err(AnnexError::from)?;
        let last = rows.last().map(|(id, _)| *id).or(after).unwrap_or(0);
        Ok((rows.into_iter().map(to_pb).collect(), last))
    }

    /// The recent matching events (`after`'s successors, else the newest
    /// `tail`), then new ones as they are appended, until `closed`
    /// resolves. Where "new" starts is read before this returns, so every
    /// event appended after the call returned is delivered. A store failure
    /// is logged and retried; it never ends the stream.
    pub(crate) async fn follow(
        self: Arc<Self>,
        filter: DebugFilter,
        tail: u32,
        after: Option<u64>,
        closed: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl Stream<Item = LogEvent> + Send + 'static {
        let tail = tail.min(MAX_PAGE);
        let (first, mut cursor) = match after {
            Some(after) => (Vec::new(), Some(after)),
            // With no tail, one event is read only to learn where "now" is.
            None => match self.page(&filter, None, tail.max(1)).await {
                Ok((events, last)) => (if tail > 0 { events } else { Vec::new() }, Some(last)),
                Err(error) => {
                    tracing::debug!(%error, "reading the debug log tail failed");
                    (Vec::new(), None)
                }
            },
        };
        async_stream::stream! {
            tokio::pin!(closed);
            for e in first {
                yield e;
            }
            loop {
                let read = match cursor {
                    // The start could not be read: start from the newest event there is.
                    None => self.page(&filter, None, 1).await.map(|(_, last)| (Vec::new(), last)),
                    Some(after) => self.page(&filter, Some(after), MAX_PAGE).await,
                };
                let full = match read {
                    Ok((events, last)) => {
                        let full = events.len() >= MAX_PAGE as usize;
                        cursor = Some(last);
                        for e in events {
                            yield e;
                        }
                        full
                    }
                    Err(error) => {
                        tracing::debug!(%error, "reading the debug log failed; retrying");
                        false
                    }
                };
                if full {
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = &mut closed => break,
                }
            }
        }
    }

    /// Trims every key appended to since the last round, every
    /// [`TRIM_EVERY`], until `stopped` resolves.
    pub(crate) async fn trim(self: Arc<Self>, stopped: impl std::future::Future<Output = ()>) {
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = tokio::time::sleep(TRIM_EVERY) => {}
                () = &mut stopped => return,
            }
            let keys: Vec<_> = self.touched.lock().drain().collect();
            for (tenant, extension) in keys {
                if let Err(error) = self
                    .store
                    .trim_debug_events(&tenant, &extension, KEEP_PER_EXTENSION)
                    .await
                {
                    tracing::debug!(%error, "trimming the debug log failed; retrying next round");
                    self.touched.lock().insert((tenant, extension));
                }
            }
        }
    }
}

/// An event id as the wire carries it (decimal); anything else is refused.
pub(crate) fn parse_id(id: &str) -> Result<Option<u64>, AnnexError> {
    if id.is_empty() {
        return Ok(None);
    }
    id.parse::<u64>()
        .map(Some)
        .map_err(|_| AnnexError::invalid("after_id must be an event id from this log"))
}

/// A worker's event as stored: NUL characters (which Postgres text cannot
/// hold) replaced, the message bounded at [`MAX_MESSAGE_BYTES`], other fields
/// at [`MAX_FIELD_CHARS`]. `None` without a tenant or an extension.
fn clean(e: LogEvent) -> Option<DebugEvent> {
    let field = |s: String| -> String {
        let s = s.replace('\0', "\u{fffd}");
        match s.char_indices().nth(MAX_FIELD_CHARS) {
            Some((at, _)) => s[..at].to_owned(),
            None => s,
        }
    };
    let tenant_id = field(e.tenant_id);
    let extension_id = field(e.extension_id);
    if tenant_id.is_empty() || extension_id.is_empty() {
        return None;
    }
    let mut message = e.message.replace('\0', "\u{fffd}");
    let mut truncated = e.truncated;
    if message.len() > MAX_MESSAGE_BYTES {
        let mut at = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(at) {
            at -= 1;
        }
        message.truncate(at);
        truncated = true;
    }
    Some(DebugEvent {
        tenant_id,
        extension_id,
        install_id: field(e.install_id),
        request_id: field(e.request_id),
        version_id: field(e.version_id),
        content_hash: field(e.content_hash),
        ts_ms: e.ts_ms,
        level: word(
            &e.level,
            &["trace", "debug", "info", "warn", "error"],
            "info",
        ),
        stream: word(&e.stream, &["log", "stderr", "stdout", "system"], "log"),
        message,
        truncated,
    })
}

/// `s` if it is one of `known`, else `fallback`.
fn word(s: &str, known: &[&str], fallback: &str) -> String {
    known
        .iter()
        .find(|k| **k == s)
        .copied()
        .unwrap_or(fallback)
        .to_owned()
}

fn to_pb((id, e): (u64, DebugEvent)) -> LogEvent {
    LogEvent {
        ts_ms: e.ts_ms,
        level: e.level,
        stream: e.stream,
        tenant_id: e.tenant_id,
        extension_id: e.extension_id,
        install_id: e.install_id,
        request_id: e.request_id,
        version_id: e.version_id,
        content_hash: e.content_hash,
        message: e.message,
        truncated: e.truncated,
        id: id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(message: &str) -> LogEvent {
        LogEvent {
            tenant_id: "t1".into(),
            extension_id: "ext".into(),
            level: "warn".into(),
            stream: "log".into(),
            message: message.into(),
            ..LogEvent::default()
        }
    }

    #[test]
    fn a_nul_in_a_guests_message_is_replaced_not_refused_by_the_database() {
        let e = clean(event("a\0b")).unwrap_or_else(|| panic!("kept"));
        assert_eq!(e.message, "a\u{fffd}b");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary_and_marked() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let e = clean(event(&long)).unwrap_or_else(|| panic!("kept"));
        assert!(e.message.len() <= MAX_MESSAGE_BYTES);
        assert!(e.truncated);
        assert!(e.message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn events_without_a_tenant_are_dropped_and_unknown_levels_read_as_info() {
        assert!(
            clean(LogEvent {
                tenant_id: String::new(),
                ..event("x")
            })
            .is_none()
        );
        let e = clean(LogEvent {
            level: "shout".into(),
            ..event("x")
        })
        .unwrap_or_else(|| panic!("kept"));
        assert_eq!(e.level, "info");
    }

    #[test]
    fn ids_are_decimal_or_refused() {
        assert_eq!(parse_id("").ok(), Some(None));
        assert_eq!(parse_id("42").ok(), Some(Some(42)));
        assert!(parse_id("1700000000000-0").is_err());
    }
}
