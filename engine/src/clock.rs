//! The clock the scheduler reads: every timing decision — grouping tasks
//! by their measured time, straggler detection, keep-alive, record
//! timestamps — takes its `now` from a [`Clock`], and the policies
//! themselves are functions of the times they are given, so the same
//! policy can be driven by simulated time (`fanout simulate`) and tested
//! without sleeping. Real waits (a deadline, a backoff) still take real
//! time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Instant;
}

/// The machine's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told: for tests of timing policy, and for
/// simulated time.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    nanos: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock { start: Instant::now(), nanos: AtomicU64::new(0) }
    }
}

impl ManualClock {
    /// A clock at its start.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// The time `d` after the clock's start.
    pub fn at(&self, d: Duration) -> Instant {
        self.start + d
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_nanos(self.nanos.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now() - t0, Duration::from_millis(5));
        assert_eq!(c.at(Duration::from_millis(5)), c.now());
        assert!(SystemClock.now() >= t0);
    }
}
