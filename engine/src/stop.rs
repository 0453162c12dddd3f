//! Stopping a run early: a task that failed for good, or an interrupt from
//! outside (Ctrl-C, SIGTERM). Once stopped, the coordinator issues no more
//! tasks, slots drain their queue without running it, invocations in
//! flight are told (through [`fanout_workers::Invocation::cancel`]: a
//! builtin that checks it stops, an exec or lambda process is killed), and
//! waits such as a retry's backoff end at once.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// A stop flag: whoever may interrupt runs holds one and passes it in
/// `RunOptions`; each run links a flag of its own to it, which its
/// failures stop without touching the one passed in (so options can be
/// reused for another run), and which an interrupt of the one passed in
/// stops too.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: AtomicBool,
    /// The signal that interrupted the run (0: none).
    signal: AtomicI32,
    /// Sleepers wait on this, so that a stop wakes them.
    lock: Mutex<()>,
    wake: Condvar,
    /// Flags linked to this one, which its interrupts reach.
    linked: Mutex<Vec<Weak<Stop>>>,
    /// Whether the run passed its commit point ([`Stop::begin_commit`]),
    /// under the lock an interrupt takes, so that each signal is either
    /// before the commit point or after it.
    committing: Mutex<bool>,
    /// Whether an interrupt lets the work in flight finish (a stream's
    /// drain) rather than cancel it.
    drains: AtomicBool,
}

/// What an interrupt does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The run stops: nothing is written, and `--resume` finishes it.
    Stops,
    /// The run's commit had begun: it goes on to the end, and the run then
    /// ends with its output complete.
    Commits,
    /// A stream drains: the batches in flight finish, the windows due are
    /// committed and a checkpoint is written; then the run ends, to be
    /// resumed.
    Drains,
}

impl Stop {
    /// A run not stopped.
    pub fn new() -> Arc<Stop> {
        Arc::new(Stop::default())
    }

    /// A flag of a run's own, interrupted when `self` is.
    pub(crate) fn link(&self) -> Arc<Stop> {
        let child = Stop::new();
        let mut linked = self.linked.lock().expect("not poisoned");
        linked.retain(|w| w.strong_count() > 0);
        linked.push(Arc::downgrade(&child));
        drop(linked);
        if let Some(signal) = self.interrupted() {
            child.interrupt(signal);
        }
        child
    }

    /// Interrupts the run because of `signal` (SIGINT is 2, SIGTERM 15):
    /// the run stops as after a failure, keeps its journal for `--resume`,
    /// and fails with [`crate::EngineError::Interrupted`].
    pub fn interrupt(&self, signal: i32) -> Interrupt {
        let committing = self.committing.lock().expect("not poisoned");
        let _ = self.signal.compare_exchange(0, signal, Relaxed, Relaxed);
        let does = match (*committing, self.drains.load(Relaxed)) {
            (true, _) => Interrupt::Commits,
            (false, true) => Interrupt::Drains,
            (false, false) => Interrupt::Stops,
        };
        drop(committing);
        self.stop();
        let linked: Vec<Arc<Stop>> =
            self.linked.lock().expect("not poisoned").iter().filter_map(Weak::upgrade).collect();
        for child in linked {
            child.interrupt(signal);
        }
        does
    }

    /// Makes an interrupt drain the run rather than cancel what is in
    /// flight: a stream's.
    pub(crate) fn drain_on_interrupt(&self) {
        self.drains.store(true, Relaxed);
    }

    /// Passes the commit point, unless the run was interrupted before it
    /// (then the signal): an interrupt from now on lets the commit finish.
    pub(crate) fn begin_commit(&self) -> Result<(), i32> {
        let mut committing = self.committing.lock().expect("not poisoned");
        match self.interrupted() {
            Some(signal) => Err(signal),
            None => {
                *committing = true;
                Ok(())
            }
        }
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
    fn a_signal_is_either_before_the_commit_point_or_after_it() {
        let before = Stop::new();
        assert_eq!(before.interrupt(15), Interrupt::Stops);
        assert_eq!(before.begin_commit(), Err(15));
        let after = Stop::new();
        assert_eq!(after.begin_commit(), Ok(()));
        assert_eq!(after.interrupt(2), Interrupt::Commits);
        assert_eq!(after.interrupted(), Some(2));
    }

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

    #[test]
    fn a_run_s_own_flag_takes_interrupts_but_keeps_its_failures() {
        let outside = Stop::new();
        let run = outside.link();
        run.stop();
        assert!(run.is_stopped() && !outside.is_stopped(), "a failed run leaves the options' flag alone");
        let next = outside.link();
        assert!(!next.is_stopped());
        outside.interrupt(15);
        assert_eq!(next.interrupted(), Some(15));
        assert_eq!(outside.link().interrupted(), Some(15), "a run linked after an interrupt starts interrupted");
    }
}
