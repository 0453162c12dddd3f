//! Live progress: counters the engine bumps and a display (the CLI's
//! progress bars, or nothing) reads. Bumping is a few relaxed atomic adds,
//! so progress costs the hot path nothing measurable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
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
