//! Tasks in flight, for stragglers: once most of a phase's tasks are done,
//! a task running far past the median gets a backup invocation on another
//! slot. The first result wins; the other is discarded (its output is
//! keyed by task, so nothing is doubled). A task fails only when every run
//! of it has failed: a run that fails for good while its twin still runs
//! leaves the task to the twin.
//!
//! What the flight holds is bounded by what is in flight, not by the
//! phase's task count: a finished task leaves it, and the durations that
//! give the median go into a histogram.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::policy::{backups_due, straggler_wait};

/// A task that has runs going (or queued).
struct Running<T> {
    /// When its first run started.
    started: Instant,
    /// What a backup needs.
    input: T,
    /// Runs started or queued that have not ended: the first run, and its
    /// backup once one is sent.
    runs: u32,
    /// Whether it was given a backup.
    backed_up: bool,
}

struct State<T> {
    /// Tasks running (a task leaves when it has a result or has failed).
    running: HashMap<u64, Running<T>>,
    /// Tasks of the phase that are done: a result, or failed for good.
    finished: u64,
    /// How long finished tasks took, in microseconds.
    durations: Histogram<u64>,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State {
            running: HashMap::new(),
            finished: 0,
            // 1 µs to a day, 2 significant figures: a median to 1%.
            durations: Histogram::new_with_bounds(1, 86_400_000_000, 2).expect("valid bounds"),
        }
    }
}

/// The phase's tasks in flight; `T` is a task's input, as a backup needs it.
pub(crate) struct Flight<T> {
    state: Mutex<State<T>>,
}

impl<T> Default for Flight<T> {
    fn default() -> Self {
        Flight { state: Mutex::new(State::default()) }
    }
}

/// How a run of a task ended, as the flight sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// This run decides the task: its result is kept, or its failure is
    /// the task's.
    Decides,
    /// Another run of the task decided it first, or is still running: this
    /// run's result or failure is dropped.
    Dropped,
}

impl<T: Clone> Flight<T> {
    /// A phase starts.
    pub(crate) fn reset(&self) {
        *self.state.lock().expect("not poisoned") = State::default();
    }

    /// A run of task `task` starts; whether it still needs running (a
    /// backup whose task is already decided does not).
    pub(crate) fn start(&self, task: u64, input: &T, backup: bool, now: Instant) -> bool {
        let mut s = self.state.lock().expect("not poisoned");
        if backup {
            return s.running.contains_key(&task);
        }
        s.running.insert(task, Running { started: now, input: input.clone(), runs: 1, backed_up: false });
        true
    }

    /// A run of task `task` has a result.
    pub(crate) fn finish(&self, task: u64, now: Instant) -> Ended {
        let mut s = self.state.lock().expect("not poisoned");
        match s.running.remove(&task) {
            Some(r) => {
                let took = now.saturating_duration_since(r.started).as_micros() as u64;
                s.durations.saturating_record(took.max(1));
                s.finished += 1;
                Ended::Decides
            }
            None => Ended::Dropped,
        }
    }

    /// A run of task `task` failed for good: it decides the task (which
    /// fails) only if no other run of it is left.
    pub(crate) fn fail(&self, task: u64) -> Ended {
        let mut s = self.state.lock().expect("not poisoned");
        let Some(r) = s.running.get_mut(&task) else { return Ended::Dropped };
        r.runs -= 1;
        if r.runs > 0 {
            return Ended::Dropped;
        }
        s.running.remove(&task);
        s.finished += 1;
        Ended::Decides
    }

    /// Whether task `task` is decided (a run of it has a result, or all
    /// failed). Asked only of a task that has started.
    pub(crate) fn is_finished(&self, task: u64) -> bool {
        !self.state.lock().expect("not poisoned").running.contains_key(&task)
    }

    /// Tasks decided so far.
    pub(crate) fn finished(&self) -> u64 {
        self.state.lock().expect("not poisoned").finished
    }

    /// Tasks that deserve a backup at `now`, out of the phase's `total`
    /// (the tasks it runs): once `done` of them have finished, those
    /// running longer than `after` × the median. Each is counted as a run
    /// of its task from here on, so its twin's failure does not fail it.
    pub(crate) fn stragglers(&self, total: u64, done: f64, after: f64, now: Instant) -> Vec<(u64, T)> {
        let mut s = self.state.lock().expect("not poisoned");
        if !backups_due(s.finished, total, done) || s.durations.is_empty() {
            return Vec::new();
        }
        let wait = straggler_wait(Duration::from_micros(s.durations.value_at_quantile(0.5)), after);
        let mut slow = Vec::new();
        for (task, r) in s.running.iter_mut() {
            if !r.backed_up && now.saturating_duration_since(r.started) > wait {
                r.backed_up = true;
                r.runs += 1;
                slow.push((*task, r.input.clone()));
            }
        }
        slow
    }

    /// Tasks in the flight now (for tests of its bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().expect("not poisoned").running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_result_wins_and_a_late_backup_is_not_run() {
        let f = Flight::<()>::default();
        let t0 = Instant::now();
        assert!(f.start(1, &(), false, t0));
        assert_eq!(f.finish(1, at(t0, 5)), Ended::Decides);
        assert_eq!(f.finish(1, at(t0, 6)), Ended::Dropped, "its twin's result is dropped");
        assert!(!f.start(1, &(), true, at(t0, 7)), "a backup of a decided task does not run");
        assert!(f.is_finished(1));
        assert_eq!(f.finished(), 1);
    }

    #[test]
    fn a_task_fails_only_when_every_run_of_it_has_failed() {
        let f = Flight::<()>::default();
        let t0 = Instant::now();
        for task in 0..10 {
            assert!(f.start(task, &(), false, t0));
        }
        for task in 1..10 {
            assert_eq!(f.finish(task, at(t0, 10)), Ended::Decides);
        }
        // Task 0 straggles: it gets a backup.
        let slow = f.stragglers(10, 0.9, 3.0, at(t0, 100));
        assert_eq!(slow.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0]);
        assert!(f.stragglers(10, 0.9, 3.0, at(t0, 200)).is_empty(), "one backup per task");
        assert!(f.start(0, &(), true, at(t0, 101)));
        // The backup fails for good: the first run still runs.
        assert_eq!(f.fail(0), Ended::Dropped);
        assert!(!f.is_finished(0));
        // ... and succeeds.
        assert_eq!(f.finish(0, at(t0, 1500)), Ended::Decides);
        assert_eq!(f.finished(), 10);

        // The other order: the first run fails, the backup succeeds.
        let f = Flight::<()>::default();
        f.start(0, &(), false, t0);
        f.start(1, &(), false, t0);
        f.finish(1, at(t0, 1));
        assert_eq!(f.stragglers(2, 0.5, 3.0, at(t0, 50)).len(), 1);
        assert_eq!(f.fail(0), Ended::Dropped);
        assert!(f.start(0, &(), true, at(t0, 51)), "the queued backup still runs");
        assert_eq!(f.finish(0, at(t0, 60)), Ended::Decides);

        // With no twin, a failure decides the task.
        f.start(2, &(), false, t0);
        assert_eq!(f.fail(2), Ended::Decides);
        assert_eq!(f.fail(2), Ended::Dropped);
    }

    #[test]
    fn stragglers_wait_for_most_tasks_and_for_a_multiple_of_the_median() {
        let f = Flight::<u64>::default();
        let t0 = Instant::now();
        for task in 0..10 {
            f.start(task, &(task * 100), false, t0);
        }
        for task in 0..8 {
            f.finish(task, at(t0, 20));
        }
        assert!(f.stragglers(10, 0.9, 3.0, at(t0, 1000)).is_empty(), "8 of 10 done, 9 needed");
        f.finish(8, at(t0, 20));
        assert!(f.stragglers(10, 0.9, 3.0, at(t0, 59)).is_empty(), "not yet 3 × the 20 ms median");
        assert_eq!(f.stragglers(10, 0.9, 3.0, at(t0, 61)), vec![(9, 900)]);
    }

    #[test]
    fn the_flight_holds_only_what_is_in_flight() {
        let f = Flight::<u64>::default();
        let t0 = Instant::now();
        for task in 0..100_000 {
            f.start(task, &task, false, t0);
            f.finish(task, t0);
            assert!(f.len() <= 1);
        }
        assert_eq!(f.finished(), 100_000);
        f.reset();
        assert_eq!(f.finished(), 0);
    }
}
