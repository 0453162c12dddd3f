//! A worker slot: a thread that takes task groups from the coordinator and
//! runs them, holding one container per step; its counts, outputs and
//! journal hand-overs go out once per group. Between groups, and once its
//! phase has no more tasks while other slots still run, a slot retires the
//! containers that pass their keep-alive (a lambda process is not left
//! running while its slot idles).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use fanout_datasets::OpenFiles;

use super::Shared;
use super::attempt::run_task;
use super::dispatch::Task;
use crate::compile::Phase;
use crate::container::Container;
use crate::journal::{HAND_OVER_AGE, Local};
use crate::policy::{expired, next_expiry};
use crate::progress::SlotGauge;
use crate::records::Recorder;
use crate::sink::Outputs;

/// A worker slot, with its containers (one per step).
pub(super) struct Slot {
    pub(super) id: usize,
    /// Per step: its container, if started and not retired.
    pub(super) containers: Vec<Option<Container>>,
    /// Per step: when its container last finished an invocation.
    pub(super) last_used: Vec<Instant>,
    /// Per step: containers started (for their cold starts' draws).
    pub(super) cold_starts: Vec<u32>,
    /// The input file this slot read last, kept open.
    pub(super) files: OpenFiles,
    /// Counts not yet added to the shared ones (adding them once a task
    /// group keeps slots off each other's cache lines).
    pub(super) counts: Counts,
    /// Task outputs for the phase's sink, handed over once a task group.
    pub(super) outputs: Outputs,
    /// Finished tasks for the journal, handed over in bunches (see
    /// `Journal::hand_over`).
    pub(super) journaled: Local,
    /// What the slot is doing, for the progress display.
    pub(super) gauge: Arc<SlotGauge>,
}

/// One stage's counts of a slot since it last published them.
#[derive(Default, Clone, Copy)]
pub(super) struct StageCounts {
    /// Tasks done.
    pub(super) tasks: u64,
    /// Their input bytes.
    pub(super) bytes: u64,
    /// Records they passed on.
    pub(super) records: u64,
}

impl StageCounts {
    /// Counts a task done.
    pub(super) fn add(&mut self, bytes: u64, records: u64) {
        self.tasks += 1;
        self.bytes += bytes;
        self.records += records;
    }
}

/// A slot's counts since it last published them.
#[derive(Default)]
pub(super) struct Counts {
    /// Per stage.
    pub(super) stages: Vec<StageCounts>,
    pub(super) input_records: u64,
    pub(super) input_bytes: u64,
}

impl Counts {
    /// Adds the counts to the shared ones, for the progress display.
    pub(super) fn publish(&mut self, shared: &Shared<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        for (stage, c) in self.stages.iter_mut().enumerate() {
            if c.tasks > 0 {
                let p = &shared.progress[stage];
                p.done.fetch_add(c.tasks, Relaxed);
                p.bytes.fetch_add(c.bytes, Relaxed);
                p.records.fetch_add(c.records, Relaxed);
                *c = StageCounts::default();
            }
        }
        if self.input_bytes > 0 || self.input_records > 0 {
            shared.counters.input_records.fetch_add(std::mem::take(&mut self.input_records), Relaxed);
            shared.counters.input_bytes.fetch_add(std::mem::take(&mut self.input_bytes), Relaxed);
        }
    }
}

/// Slots still running a phase's tasks, and a wake-up when that changes.
pub(super) type Running = (Mutex<usize>, Condvar);

impl Slot {
    /// Slot `id` of a run of `steps` steps and `stages` stages.
    pub(super) fn new(id: usize, steps: usize, stages: usize, now: Instant, gauge: Arc<SlotGauge>) -> Slot {
        Slot {
            id,
            containers: (0..steps).map(|_| None).collect(),
            last_used: vec![now; steps],
            cold_starts: vec![0; steps],
            files: OpenFiles::default(),
            counts: Counts { stages: vec![StageCounts::default(); stages], ..Counts::default() },
            outputs: Vec::new(),
            journaled: Local::default(),
            gauge,
        }
    }

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

    /// How long until the next of this slot's containers passes `keep`.
    fn next_expiry(&self, keep: Duration, now: Instant) -> Option<Duration> {
        let used = (self.containers.iter().zip(&self.last_used)).filter(|(c, _)| c.is_some()).map(|(_, u)| *u);
        next_expiry(used, keep, now)
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

    /// Drops container `at` if it has been idle past `keep_alive` (a
    /// worker process is killed with it).
    pub(super) fn retire(&mut self, at: usize, keep_alive: Option<Duration>, now: Instant) {
        if expired(self.last_used[at], keep_alive, now) {
            self.containers[at] = None;
        }
    }

    /// Drops every container idle past `keep_alive`.
    fn retire_idle(&mut self, keep_alive: Option<Duration>, now: Instant) {
        if keep_alive.is_some() {
            for at in 0..self.containers.len() {
                self.retire(at, keep_alive, now);
            }
        }
    }
}
