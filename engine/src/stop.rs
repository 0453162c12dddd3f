//! Stopping a run early: a task that failed for good, or an interrupt from
//! outside (Ctrl-C, SIGTERM). Once stopped, the coordinator issues no more
//! tasks, slots drain their queue without running it, invocations in
//! flight are told (through [`fanout_workers::Invocation::cancel`]: a
//! builtin that checks it stops, an exec or lambda process is killed), and
//! waits such as a retry's backoff end at once.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A run's stop flag, shared by the engine and whoever may interrupt it.
/// One per run.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: AtomicBool,
    /// The signal that interrupted the run (0: none).
    signal: AtomicI32,
    /// Sleepers wait on this, so that a stop wakes them.
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    /// A run not stopped.
    pub fn new() -> Arc<Stop> {
        Arc::new(Stop::default())
    }

    /// Interrupts the run because of `signal` (SIGINT is 2, SIGTERM 15):
    /// the run stops as after a failure, keeps its journal for `--resume`,
    /// and fails with [`crate::EngineError::Interrupted`].
    pub fn interrupt(&self, signal: i32) {
        let _ = self.signal.compare_exchange(0, signal, Relaxed, Relaxed);
        self.stop();
    }

    /// The signal that interrupted the run, if one did.
    pub fn interrupted(&self) -> Option<i32> {
        Some(self.signal.load(Relaxed)).filter(|&s| s != 0)
    }

    /// Whether the run is stopping.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Relaxed)
    }

    /// Stops the run.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Relaxed);
        let _guard = self.lock.lock().expect("not poisoned");
        self.wake.notify_all();
    }

    /// The flag invocations watch (their `cancel`).
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.stopped
    }

    /// Sleeps for `d`, or until the run stops; whether it slept it all.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut guard = self.lock.lock().expect("not poisoned");
        loop {
            if self.is_stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            guard = self.wake.wait_timeout(guard, until - now).expect("not poisoned").0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_wakes_a_sleeper_and_keeps_the_first_signal() {
        let stop = Stop::new();
        assert!(stop.sleep(Duration::from_millis(1)));
        let s = stop.clone();
        let sleeper = std::thread::spawn(move || s.sleep(Duration::from_secs(600)));
        // The sleeper may not be asleep yet: a stop before it sleeps is
        // seen too, so this does not race.
        stop.interrupt(2);
        stop.interrupt(15);
        assert!(!sleeper.join().unwrap(), "woken, not slept out");
        assert_eq!(stop.interrupted(), Some(2));
        assert!(stop.is_stopped());
        assert_eq!(Stop::new().interrupted(), None);
    }
}
