//! Steady traffic through the edge while a test changes the fleet under it:
//! a few callers in a loop, each call counted as served (200) or failed
//! (any other status, or no answer), with its duration. [`Load::window`]
//! hands out the figures since the previous window, so each phase of a test
//! (a rolling update, a rotation) has its own. Figures are printed, never
//! asserted on beyond the failure count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::{Mutex, PoisonError};
use tokio::task::JoinHandle;

/// The calls of one window.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub calls: u64,
    pub failures: u64,
    /// The first failures, described (status and body, or the error).
    pub failed: Vec<String>,
    latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Figures {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls in {:.1} s, {} failed; latency p50 {:?}, p99 {:?}, max {:?}",
            self.calls,
            self.elapsed.as_secs_f64(),
            self.failures,
            self.percentile(0.5),
            self.percentile(0.99),
            self.percentile(1.0),
        )
    }
}

struct Window {
    figures: Figures,
    since: Instant,
}

/// Counts one call in the current window.
fn record(window: &Mutex<Window>, took: Duration, failure: Option<String>) {
    let mut w = window.lock().unwrap_or_else(PoisonError::into_inner);
    w.figures.calls += 1;
    w.figures.latencies.push(took);
    if let Some(why) = failure {
        w.figures.failures += 1;
        if w.figures.failed.len() < DESCRIBED {
            w.figures.failed.push(why);
        }
    }
}

/// Callers running against one edge route.
pub struct Load {
    window: Arc<Mutex<Window>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Failures described in full, at most.
const DESCRIBED: usize = 20;

impl Load {
    /// One loop of `GET path` against `edge` per entry of `callers` (the
    /// headers that caller sends: its tenant's session, say), each pausing
    /// `pause` between calls (leaving the machine's cores to the fleet
    /// under test).
    pub fn start(
        edge: SocketAddr,
        path: String,
        callers: Vec<Vec<(String, String)>>,
        pause: Duration,
    ) -> Load {
        let window = Arc::new(Mutex::new(Window {
            figures: Figures::default(),
            since: Instant::now(),
        }));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = callers
            .into_iter()
            .map(|headers| {
                let (window, path, stopped) = (window.clone(), path.clone(), stopped.clone());
                tokio::spawn(async move {
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    while !*stopped.borrow() {
                        let began = Instant::now();
                        let r = crate::http::try_send(edge, "GET", &path, &headers, b"").await;
                        let took = began.elapsed();
                        let failure = match r {
                            Ok(resp) if resp.status == 200 => None,
                            Ok(resp) => Some(format!("{}: {}", resp.status, resp.text())),
                            Err(e) => Some(format!("no answer: {e}")),
                        };
                        record(&window, took, failure);
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load {
            window,
            stop,
            tasks,
        }
    }

    /// The figures since the previous window (or the start); a new window
    /// begins.
    pub fn window(&self) -> Figures {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let mut figures = std::mem::take(&mut w.figures);
        figures.elapsed = w.since.elapsed();
        w.since = Instant::now();
        figures
    }

    /// Stops the callers (letting calls in flight finish) and returns the
    /// last window.
    pub async fn stop(mut self) -> Figures {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        self.window()
    }
}
