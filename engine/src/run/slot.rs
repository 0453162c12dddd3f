//! A worker slot's state: one container per step (retired past its
//! keep-alive), the input file it read last, and the counts, outputs and
//! journal entries it hands over once per task group. Its loop is in
//! `worker.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout_datasets::OpenFiles;

use super::Shared;
use crate::container::Container;
use crate::journal::Local;
use crate::policy::{expired, next_expiry};
use crate::progress::SlotGauge;
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

    /// How long until the next of this slot's containers passes `keep`.
    pub(super) fn next_expiry(&self, keep: Duration, now: Instant) -> Option<Duration> {
        let used = (self.containers.iter().zip(&self.last_used)).filter(|(c, _)| c.is_some()).map(|(_, u)| *u);
        next_expiry(used, keep, now)
    }

    /// Drops container `at` if it has been idle past `keep_alive` (a
    /// worker process is killed with it).
    pub(super) fn retire(&mut self, at: usize, keep_alive: Option<Duration>, now: Instant) {
        if expired(self.last_used[at], keep_alive, now) {
            self.containers[at] = None;
        }
    }

    /// Drops every container idle past `keep_alive`.
    pub(super) fn retire_idle(&mut self, keep_alive: Option<Duration>, now: Instant) {
        if keep_alive.is_some() {
            for at in 0..self.containers.len() {
                self.retire(at, keep_alive, now);
            }
        }
    }
}
