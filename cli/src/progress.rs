//! Progress on stderr for the waits a person sits through: `annex dev`'s first start (cluster
//! initialisation, the guest build), `annex pack` of large inputs and `annex publish` of large
//! bundles (bytes sent).
//!
//! On a terminal indicatif draws a spinner or a bar that disappears when the work is done. When
//! stderr is not a terminal (CI logs, `2> file`), nothing redraws: a spinner becomes one plain
//! line when the work starts and a byte bar one line per quarter, so logs stay readable. This
//! module only draws; it must never write to stdout, which belongs to the command's result.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often a spinner advances: fast enough to look alive, slow enough to cost nothing.
const TICK: Duration = Duration::from_millis(120);

fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner with a message while something of unknown length runs; cleared when dropped, so
/// it also goes away when the work fails with `?`.
#[derive(Debug)]
pub struct Spinner {
    bar: Option<ProgressBar>,
}

/// Starts a spinner showing `message` (on a terminal), or prints `message` once.
pub fn spinner(message: impl Into<String>) -> Spinner {
    let message = message.into();
    if !interactive() {
        eprintln!("{message}");
        return Spinner { bar: None };
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(TICK);
    Spinner { bar: Some(bar) }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Progress of a transfer of `total` bytes. Cloneable and thread-safe, so an upload's chunk
/// callback can advance it.
#[derive(Debug, Clone)]
pub struct Transfer {
    inner: Arc<TransferInner>,
}

#[derive(Debug)]
struct TransferInner {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: AtomicU64,
    /// Plain mode: the last quarter (1-4) a line was printed for.
    quarter: AtomicU64,
}

/// Starts a byte bar labelled `label` (e.g. `uploading bundle.tar.zst`).
pub fn transfer(label: impl Into<String>, total: u64) -> Transfer {
    let label = label.into();
    let bar = interactive().then(|| {
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg} {bar:30} {binary_bytes}/{binary_total_bytes} ({eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label.clone());
        bar
    });
    Transfer {
        inner: Arc::new(TransferInner {
            bar,
            label,
            total,
            done: AtomicU64::new(0),
            quarter: AtomicU64::new(0),
        }),
    }
}

impl Transfer {
    /// Records `n` more bytes.
    pub fn inc(&self, n: u64) {
        let inner = &self.inner;
        let done = inner.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &inner.bar {
            bar.inc(n);
            return;
        }
        let quarter = plain_quarter(done, inner.total);
        let last = inner.quarter.fetch_max(quarter, Ordering::Relaxed);
        if quarter > last {
            eprintln!(
                "{}: {}% ({} of {})",
                inner.label,
                quarter * 25,
                crate::commands::human_bytes(done.min(inner.total)),
                crate::commands::human_bytes(inner.total)
            );
        }
    }

    /// Removes the bar (plain mode printed its last line at 100% already).
    pub fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }
}

/// The completed quarter (0-4) of `done` out of `total`.
fn plain_quarter(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 4;
    }
    (u128::from(done.min(total)) * 4 / u128::from(total)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_progress_reports_whole_quarters() {
        assert_eq!(plain_quarter(0, 100), 0);
        assert_eq!(plain_quarter(24, 100), 0);
        assert_eq!(plain_quarter(25, 100), 1);
        assert_eq!(plain_quarter(99, 100), 3);
        assert_eq!(plain_quarter(100, 100), 4);
        assert_eq!(plain_quarter(150, 100), 4);
        assert_eq!(plain_quarter(0, 0), 4);
        assert_eq!(plain_quarter(u64::MAX, u64::MAX), 4);
    }
}
