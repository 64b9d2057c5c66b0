//! CPU time of one execution: the calling thread's CPU clock read around
//! every poll of the guest future and summed. A guest moves between runtime
//! threads across polls, and time spent waiting (host calls in flight,
//! timers) is not counted, so this is the CPU the execution itself used on
//! whichever threads ran it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// The calling thread's CPU time so far.
pub(crate) fn thread_cpu_time() -> Duration {
    let ts = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Wraps a future and sums the thread CPU time of its polls.
#[derive(Debug)]
pub(crate) struct CpuTimed<F> {
    fut: Pin<Box<F>>,
    cpu: Duration,
}

impl<F: Future> CpuTimed<F> {
    pub(crate) fn new(fut: F) -> CpuTimed<F> {
        CpuTimed {
            fut: Box::pin(fut),
            cpu: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for CpuTimed<F> {
    /// The future's output and the CPU time its polls used.
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let start = thread_cpu_time();
        let polled = self.fut.as_mut().poll(cx);
        let spent = thread_cpu_time().saturating_sub(start);
        self.cpu += spent;
        polled.map(|out| (out, self.cpu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_cpu_spent_in_polls_not_time_spent_waiting() {
        let (sum, cpu) = CpuTimed::new(async {
            // Waiting costs (almost) no CPU.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut x = 0u64;
            for i in 0..30_000_000u64 {
                x = x.wrapping_add(std::hint::black_box(i));
            }
            x
        })
        .await;
        assert_ne!(sum, 0);
        assert!(cpu > Duration::ZERO, "busy work is counted");
        // A loose bound (not a performance check): the 200 ms sleep is not CPU.
        let (_, idle) = CpuTimed::new(tokio::time::sleep(Duration::from_millis(200))).await;
        assert!(
            idle < Duration::from_millis(150),
            "sleeping counted as CPU: {idle:?}"
        );
    }
}
