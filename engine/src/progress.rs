//! Live progress: counters the engine bumps and a display (the CLI's
//! progress bars, or nothing) reads. Bumping is a few relaxed atomic adds
//! once a task group, and a store per invocation into a gauge of the
//! slot's own (no other thread writes its cache line), so progress costs
//! the hot path nothing measurable.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// The counters of one stage.
#[derive(Debug, Default)]
pub struct StageProgress {
    /// The stage's name.
    pub name: String,
    /// Its tasks (splits, or partitions for a keyed stage), as far as known.
    pub total: AtomicU64,
    /// Whether `total` is final (splits are listed lazily).
    pub total_known: AtomicBool,
    /// Tasks done.
    pub done: AtomicU64,
    /// Input bytes of the tasks done.
    pub bytes: AtomicU64,
    /// Records the stage passed on.
    pub records: AtomicU64,
    /// Input records left out as bad (skipped or rejected): the first
    /// stage's.
    pub bad: AtomicU64,
    /// The input's size in bytes, once the listing has summed it (0 until
    /// then, and for a stage fed by a shuffle): a stage over the input's
    /// splits can show its progress by bytes from the start, before the
    /// lazy splitting has counted the tasks.
    pub total_bytes: AtomicU64,
    /// Tasks handed to the slots.
    pub sent: AtomicU64,
}

/// What one worker slot is doing, for the display: written by that slot
/// alone, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct SlotGauge {
    /// 1 + the stage whose invocation runs now; 0 when none does.
    pub running: AtomicUsize,
    /// 1 + the stage of a task waiting out a retry's backoff; 0 when none.
    pub retrying: AtomicUsize,
}

/// A stage's tasks right now: invocations running, tasks waiting to
/// retry, and tasks handed to slots but not started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Invocations running.
    pub running: u64,
    /// Tasks waiting out a retry's backoff.
    pub retrying: u64,
    /// Tasks handed to slots and not started.
    pub queued: u64,
}

impl StageProgress {
    pub(crate) fn finish_task(&self, bytes: u64, records: u64) {
        self.done.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        self.records.fetch_add(records, Relaxed);
    }
}

/// The progress of a run: one entry per stage, registered when the run
/// starts.
#[derive(Debug, Default)]
pub struct Progress {
    stages: RwLock<Vec<Arc<StageProgress>>>,
    slots: RwLock<Vec<Arc<SlotGauge>>>,
    finished: AtomicBool,
}

impl Progress {
    /// A progress with no stages yet.
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }

    /// The stages registered so far.
    pub fn stages(&self) -> Vec<Arc<StageProgress>> {
        self.stages.read().expect("not poisoned").clone()
    }

    /// Stage `stage`'s tasks in flight now (`stage` as in [`Progress::stages`]).
    pub fn in_flight(&self, stage: usize) -> InFlight {
        let mark = stage + 1;
        let (mut running, mut retrying) = (0, 0);
        for g in self.slots.read().expect("not poisoned").iter() {
            running += u64::from(g.running.load(Relaxed) == mark);
            retrying += u64::from(g.retrying.load(Relaxed) == mark);
        }
        let queued = self
            .stages()
            .get(stage)
            .map_or(0, |s| s.sent.load(Relaxed).saturating_sub(s.done.load(Relaxed) + running + retrying));
        InFlight { running, retrying, queued }
    }

    /// A gauge for each of `n` slots, replacing those of an earlier run.
    pub(crate) fn register_slots(&self, n: usize) -> Vec<Arc<SlotGauge>> {
        let gauges: Vec<Arc<SlotGauge>> = (0..n).map(|_| Arc::new(SlotGauge::default())).collect();
        *self.slots.write().expect("not poisoned") = gauges.clone();
        gauges
    }

    /// Whether the run has ended (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.finished.load(Relaxed)
    }

    pub(crate) fn register(&self, names: impl IntoIterator<Item = String>) -> Vec<Arc<StageProgress>> {
        let stages: Vec<Arc<StageProgress>> =
            names.into_iter().map(|name| Arc::new(StageProgress { name, ..Default::default() })).collect();
        *self.stages.write().expect("not poisoned") = stages.clone();
        stages
    }

    pub(crate) fn finish(&self) {
        self.finished.store(true, Relaxed);
    }
}
