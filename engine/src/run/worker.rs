//! A worker slot's loop: a thread that takes task groups from the
//! coordinator and runs them; its counts, outputs and journal hand-overs
//! go out once per group. Between groups, and once its phase has no more
//! tasks while other slots still run, a slot retires the containers that
//! pass their keep-alive (a lambda process is not left running while its
//! slot idles).

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::Shared;
use super::attempt::run_task;
use super::slot::Slot;
use super::task::Task;
use crate::compile::Phase;
use crate::journal::HAND_OVER_AGE;
use crate::records::Recorder;

/// Slots still running a phase's tasks, and a wake-up when that changes.
pub(super) type Running = (Mutex<usize>, Condvar);

impl Slot {
    /// Runs phase `index`'s task groups from `rx` until there are none,
    /// then idles (retiring containers) until every slot is done.
    pub(super) fn run_phase(
        &mut self,
        shared: &Shared<'_>,
        index: usize,
        phase: &Phase,
        recorder: &mut Recorder<'_>,
        rx: &Receiver<Vec<Task>>,
        running: &Running,
    ) {
        let busy = &shared.busy[self.id];
        let keep_alive = shared.plan.platform.containers.keep_alive;
        let sink = shared.sinks[index];
        // A process's invocation (0.5 ms and up) costs far more than a
        // hand-off to the journal: its tasks are handed over one by one,
        // while fast remote ones (a warm Lambda container's, some tens of
        // microseconds) are bunched like builtins'.
        let external = phase.steps.iter().any(|s| shared.compiled.stages[s.stage].external);
        while let Some(group) = self.next_group(shared, rx, keep_alive) {
            let began = shared.clock.now();
            let n = group.len() as u64;
            // An object's read-ahead covers this group's splits, no more.
            self.files.expect(group.iter().filter_map(|t| t.input.split()));
            for t in group {
                if shared.failed() {
                    continue;
                }
                if let Err(e) = run_task(shared, index, phase, self, recorder, t) {
                    shared.fail(e);
                }
            }
            let took = shared.clock.now().saturating_duration_since(began);
            busy.add(took, n);
            self.counts.publish(shared);
            // Tiny tasks are journaled in bunches while more wait (and
            // before the slot waits: see `next_group`). A group that took
            // a while (2 ms; 0.5 ms for a function outside the process) is
            // likely followed by another: its tasks go now, not after the
            // next group, however long that takes.
            let long = took >= HAND_OVER_AGE || (external && took >= HAND_OVER_AGE / 4);
            if let Some(journal) = &shared.journal
                && let Err(e) = journal.hand_over(&mut self.journaled, long)
            {
                shared.fail(e);
            }
            self.retire_idle(keep_alive, shared.clock.now());
            if !self.outputs.is_empty()
                && let Err(e) = sink.push(&mut self.outputs)
            {
                shared.fail(e);
            }
        }
        if let Some(journal) = &shared.journal
            && let Err(e) = journal.hand_over(&mut self.journaled, true)
        {
            shared.fail(e);
        }
        if let Err(e) = recorder.flush() {
            shared.fail(e);
        }
        self.idle_until_done(shared, running, keep_alive);
    }

    /// The next task group; `None` once there are no more. A slot about to
    /// wait hands the tasks it has not journaled yet to the journal first.
    /// With a keep-alive, a slot waiting for tasks still retires its
    /// containers as they pass it.
    fn next_group(
        &mut self,
        shared: &Shared<'_>,
        rx: &Receiver<Vec<Task>>,
        keep_alive: Option<Duration>,
    ) -> Option<Vec<Task>> {
        match rx.try_recv() {
            Ok(group) => return Some(group),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        // No task waits: journal what the slot holds before it waits.
        if let Some(journal) = &shared.journal
            && let Err(e) = journal.hand_over(&mut self.journaled, true)
        {
            shared.fail(e);
        }
        let Some(keep) = keep_alive else { return rx.recv().ok() };
        loop {
            let Some(wait) = self.next_expiry(keep, shared.clock.now()) else { return rx.recv().ok() };
            match rx.recv_timeout(wait) {
                Ok(group) => return Some(group),
                Err(RecvTimeoutError::Timeout) => self.retire_idle(keep_alive, shared.clock.now()),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Counts the slot out of `running`, and while other slots still run
    /// (and it holds containers that a keep-alive will retire) retires them
    /// as they pass it.
    fn idle_until_done(&mut self, shared: &Shared<'_>, running: &Running, keep_alive: Option<Duration>) {
        let (count, done) = running;
        let mut n = count.lock().expect("not poisoned");
        *n -= 1;
        if *n == 0 {
            done.notify_all();
        }
        let Some(keep) = keep_alive else { return };
        while *n > 0 {
            let Some(wait) = self.next_expiry(keep, shared.clock.now()) else { return };
            n = done.wait_timeout(n, wait).expect("not poisoned").0;
            self.retire_idle(keep_alive, shared.clock.now());
        }
    }
}
