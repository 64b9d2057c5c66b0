//! Waiting for a condition with a deadline: [`eventually`] re-checks an async
//! condition until it holds or the deadline passes, and [`assert_eventually!`]
//! does the same and panics on timeout with a message naming what was
//! awaited. This is the one place tests pause between checks; a test never
//! sleeps a fixed time hoping a condition will hold by then.
//!
//! A check returns `bool` (done or not yet) or `Option<T>` (the value once it
//! is there). It must not assert on how long anything took: the deadline is
//! an upper bound for a failing test, never a figure under test.

use std::time::Duration;

use tokio::time::Instant;

/// What a check answers: whether the awaited condition holds and, if it
/// does, the value the wait returns.
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// The condition did not hold by the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not within {within:?} ({checks} checks)")]
pub struct TimedOut {
    pub within: Duration,
    pub checks: u32,
}

/// The first pause between checks; it doubles up to [`MAX_PAUSE`], so a
/// quick condition is seen at once and a slow one is not hammered.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Runs `check` until it is ready or `within` has passed; the last check runs
/// at the deadline. Prefer [`assert_eventually!`], which names what was
/// awaited when it times out.
pub async fn eventually<R: Ready>(
    within: Duration,
    mut check: impl AsyncFnMut() -> R,
) -> Result<R::Value, TimedOut> {
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    let mut checks = 0;
    loop {
        checks += 1;
        if let Some(value) = check().await.ready() {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TimedOut { within, checks });
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// `assert_eventually!(within, check)` or
/// `assert_eventually!(within, check, "what was awaited {}", args…)`: awaits
/// [`eventually`] and returns the check's value; on timeout it panics with
/// the message (only then formatted, so it may gather logs) and the deadline.
/// Use inside an async test.
#[macro_export]
macro_rules! assert_eventually {
    ($within:expr, $check:expr $(,)?) => {
        $crate::assert_eventually!($within, $check, "{}", ::core::stringify!($check))
    };
    ($within:expr, $check:expr, $($what:tt)+) => {{
        // Bound first, so the check (and what it borrows) is gone before the
        // message is formatted.
        let result = $crate::eventually($within, $check).await;
        match result {
            ::core::result::Result::Ok(value) => value,
            ::core::result::Result::Err(timed_out) => ::core::panic!(
                "timed out waiting for {}: {}",
                ::core::format_args!($($what)+),
                timed_out
            ),
        }
    }};
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::eventually;

    #[tokio::test]
    async fn returns_the_value_once_the_check_has_it() {
        let mut calls = 0;
        let value = crate::assert_eventually!(
            Duration::from_secs(5),
            async || {
                calls += 1;
                (calls == 3).then_some(calls * 10)
            },
            "the third call"
        );
        assert_eq!(value, 30);
    }

    #[tokio::test]
    async fn a_bool_check_waits_until_true() {
        let mut calls = 0;
        crate::assert_eventually!(Duration::from_secs(5), async || {
            calls += 1;
            calls > 1
        });
        assert_eq!(calls, 2);
    }

    #[tokio::test]
    async fn a_check_that_never_holds_times_out_after_checking_at_the_deadline() {
        let within = Duration::from_millis(30);
        let err = eventually(within, async || false)
            .await
            .expect_err("never true");
        assert_eq!(err.within, within);
        assert!(err.checks >= 2, "{err:?}");
    }

    #[tokio::test]
    async fn the_timeout_message_names_what_was_awaited() {
        let task = tokio::spawn(async {
            crate::assert_eventually!(
                Duration::from_millis(10),
                async || None::<()>,
                "the {} to answer",
                "edge"
            );
        });
        let panic = task.await.expect_err("timed out").into_panic();
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.starts_with("timed out waiting for the edge to answer: not within 10ms"),
            "{message}"
        );
    }
}
