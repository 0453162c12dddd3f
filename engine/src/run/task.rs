//! What passes between a phase's coordinator and its slots: tasks, and
//! the permits of a stage's own concurrency.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::source::Input;

/// A task on its way to a slot.
pub(super) struct Task {
    pub(super) id: u64,
    pub(super) input: Input,
    pub(super) queued: Instant,
    /// A backup of a straggler, not its first run.
    pub(super) backup: bool,
}

/// A counting semaphore for a stage's own concurrency.
pub(super) struct Limit {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Limit {
    /// A semaphore of `permits`.
    pub(super) fn new(permits: usize) -> Limit {
        Limit { free: Mutex::new(permits), cv: Condvar::new() }
    }

    /// Waits for a permit; it is given back when dropped (on every path,
    /// an error's included).
    pub(super) fn permit(&self) -> Permit<'_> {
        let mut free = self.free.lock().expect("not poisoned");
        while *free == 0 {
            free = self.cv.wait(free).expect("not poisoned");
        }
        *free -= 1;
        Permit(self)
    }
}

/// A permit of a [`Limit`], held until dropped.
pub(super) struct Permit<'a>(&'a Limit);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("not poisoned") += 1;
        self.0.cv.notify_one();
    }
}
