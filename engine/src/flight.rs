//! Tasks in flight, for stragglers: once most of a phase's tasks are done,
//! a task running far past the median gets a backup invocation on another
//! slot. The first result wins; the other is discarded (its output is
//! keyed by task, so nothing is doubled).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest wait before a backup, whatever the median.
const MIN_WAIT: Duration = Duration::from_millis(10);

struct State<T> {
    /// Tasks running, when their first run started, and what a backup of
    /// each needs.
    running: HashMap<u64, (Instant, T)>,
    /// Tasks with a result (or a tolerated failure): later results lose.
    finished: HashSet<u64>,
    /// How long finished tasks took.
    durations: Vec<Duration>,
    /// Tasks given a backup.
    backed_up: HashSet<u64>,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State { running: HashMap::new(), finished: HashSet::new(), durations: Vec::new(), backed_up: HashSet::new() }
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

impl<T: Clone> Flight<T> {
    /// A phase starts.
    pub(crate) fn reset(&self) {
        *self.state.lock().expect("not poisoned") = State::default();
    }

    /// Whether task `task` still needs running (a backup that arrives after
    /// the original finished does not).
    pub(crate) fn start(&self, task: u64, input: &T, backup: bool) -> bool {
        let mut s = self.state.lock().expect("not poisoned");
        if s.finished.contains(&task) {
            return false;
        }
        if !backup {
            s.running.insert(task, (Instant::now(), input.clone()));
        }
        true
    }

    /// Task `task` has a result; whether it is the first (and so is kept).
    pub(crate) fn finish(&self, task: u64) -> bool {
        let mut s = self.state.lock().expect("not poisoned");
        if !s.finished.insert(task) {
            return false;
        }
        if let Some((started, _)) = s.running.remove(&task) {
            s.durations.push(started.elapsed());
        }
        true
    }

    /// Whether task `task` has its result.
    pub(crate) fn is_finished(&self, task: u64) -> bool {
        self.state.lock().expect("not poisoned").finished.contains(&task)
    }

    /// Tasks finished so far.
    pub(crate) fn finished(&self) -> u64 {
        self.state.lock().expect("not poisoned").finished.len() as u64
    }

    /// Tasks that deserve a backup now, out of `total`: once `done` of them
    /// have finished, those running longer than `after` × the median.
    pub(crate) fn stragglers(&self, total: u64, done: f64, after: f64) -> Vec<(u64, T)> {
        let mut s = self.state.lock().expect("not poisoned");
        if total == 0 || (s.finished.len() as f64) < done * total as f64 || s.durations.is_empty() {
            return Vec::new();
        }
        let mut sorted = s.durations.clone();
        sorted.sort();
        let wait = sorted[sorted.len() / 2].mul_f64(after).max(MIN_WAIT);
        let slow: Vec<(u64, T)> = s
            .running
            .iter()
            .filter(|(task, (started, _))| started.elapsed() > wait && !s.backed_up.contains(task))
            .map(|(task, (_, input))| (*task, input.clone()))
            .collect();
        for (task, _) in &slow {
            s.backed_up.insert(*task);
        }
        slow
    }
}
