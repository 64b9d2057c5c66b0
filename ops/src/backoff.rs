//! The one reconnect and retry delay policy: exponential backoff with
//! jitter between a floor and a ceiling, built on `backon`. Jitter keeps a
//! fleet of processes that lost the same peer at the same moment from
//! coming back in lock-step.
//!
//! This module only computes delays; the loops that wait and retry stay
//! with their owners (the edge's routing watch and audit shipper, the
//! worker's fleet membership).

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

/// Exponential backoff from `min` up to `max`, each delay jittered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// Delays start at `min` and double up to `max` (a `max` below `min`
    /// is read as `min`).
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max }
    }

    /// A fresh sequence of delays, starting over at the floor.
    pub fn delays(&self) -> Delays {
        let max = if self.max.as_nanos() < self.min.as_nanos() {
            self.min
        } else {
            self.max
        };
        // backon's jitter adds up to one more base delay, so the base stops
        // at half the ceiling (never under the floor) and every delay stays
        // within [min, max].
        let inner = ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay((max / 2).max(self.min))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        Delays { inner, max }
    }
}

/// One sequence of delays from a [`Backoff`]: endless, each within the
/// policy's bounds.
#[derive(Debug)]
pub struct Delays {
    inner: backon::ExponentialBackoff,
    max: Duration,
}

impl Delays {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.inner.next().unwrap_or(self.max).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(policy: Backoff, min: Duration, max: Duration) -> Vec<Duration> {
        let mut delays = policy.delays();
        let seen: Vec<Duration> = (0..200).map(|_| delays.next_delay()).collect();
        for d in &seen {
            assert!(*d >= min && *d <= max, "{d:?} outside {min:?}..={max:?}");
        }
        seen
    }

    #[test]
    fn delays_stay_within_the_bounds() {
        let ms = Duration::from_millis;
        within(Backoff::new(ms(500), ms(2_000)), ms(500), ms(2_000));
        within(Backoff::new(ms(200), ms(5_000)), ms(200), ms(5_000));
        within(Backoff::new(ms(100), ms(5_000)), ms(100), ms(5_000));
        // A ceiling below the floor is the floor.
        within(Backoff::new(ms(300), ms(100)), ms(300), ms(300));
    }

    #[test]
    fn delays_grow_from_the_floor_towards_the_ceiling() {
        let ms = Duration::from_millis;
        let seen = within(Backoff::new(ms(100), ms(5_000)), ms(100), ms(5_000));
        assert!(
            seen[0] < ms(200),
            "the first delay is near the floor: {seen:?}"
        );
        assert!(
            seen[10..].iter().all(|d| *d >= ms(2_500)),
            "later delays are near the ceiling: {seen:?}"
        );
    }

    #[test]
    fn delays_are_jittered() {
        let ms = Duration::from_millis;
        let seen = within(Backoff::new(ms(500), ms(2_000)), ms(500), ms(2_000));
        let distinct: std::collections::HashSet<&Duration> = seen[5..].iter().collect();
        assert!(
            distinct.len() > 1,
            "every delay at the cap was the same: {seen:?}"
        );
    }

    #[test]
    fn a_new_sequence_starts_over() {
        let ms = Duration::from_millis;
        let policy = Backoff::new(ms(100), ms(5_000));
        let mut first = policy.delays();
        for _ in 0..10 {
            first.next_delay();
        }
        assert!(policy.delays().next_delay() < ms(200));
    }
}
