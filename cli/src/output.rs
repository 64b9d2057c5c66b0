//! What a successful command prints: a [`Report`] carries both a text rendering for people and
//! a JSON value for scripts (`--json`), so every command supports both without branching.
//!
//! Results go to stdout; notes (`note: …`) and progress go to stderr so `--json` output and
//! `$(annex token)` stay clean. This module formats; it must not decide what a command reports.

use std::fmt::Write as _;

use annex_proto::pb;
use serde_json::Value;

/// A command's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// For people. May be empty (nothing printed). A trailing newline is added when missing.
    pub text: String,
    /// For `--json`: printed pretty, as one document.
    pub json: Value,
}

impl Report {
    pub fn new(text: impl Into<String>, json: Value) -> Report {
        Report {
            text: text.into(),
            json,
        }
    }
}

pub fn print(report: &Report, json: bool) {
    if json {
        // Serialising a `Value` cannot fail; fall back to compact form just in case.
        let text =
            serde_json::to_string_pretty(&report.json).unwrap_or_else(|_| report.json.to_string());
        println!("{text}");
    } else if !report.text.is_empty() {
        if report.text.ends_with('\n') {
            print!("{}", report.text);
        } else {
            println!("{}", report.text);
        }
    }
}

/// A side remark for people, on stderr.
pub fn note(message: impl std::fmt::Display) {
    eprintln!("note: {message}");
}

/// Aligned `label  value` lines.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    out
}

/// A table with a header row; columns are padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// RFC 3339 in UTC, or `-` for an absent timestamp.
pub fn time(ts: Option<&pb::Timestamp>) -> String {
    ts.and_then(|t| chrono::DateTime::from_timestamp_millis(t.unix_ms))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".to_owned())
}

/// [`time`] for JSON: a string, or `null` when absent.
pub fn time_json(ts: Option<&pb::Timestamp>) -> Value {
    match ts {
        Some(_) => Value::String(time(ts)),
        None => Value::Null,
    }
}

/// A comma-separated list, or `-` when empty.
pub fn comma_list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_all_but_the_last_column() {
        let t = table(
            &["VERSION", "HASH"],
            &[
                vec!["1.0.0".into(), "sha256:aa".into()],
                vec!["10.20.30".into(), "sha256:b".into()],
            ],
        );
        assert_eq!(
            t,
            "VERSION   HASH\n1.0.0     sha256:aa\n10.20.30  sha256:b\n"
        );
    }

    #[test]
    fn times_are_utc_seconds() {
        let ts = pb::Timestamp {
            unix_ms: 1_700_000_000_123,
        };
        assert_eq!(time(Some(&ts)), "2023-11-14T22:13:20Z");
        assert_eq!(time(None), "-");
        assert_eq!(time_json(None), Value::Null);
    }
}
