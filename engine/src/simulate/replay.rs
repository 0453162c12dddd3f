//! A real run's invocations, replayed (`fanout simulate --replay
//! RUN_DIR`): each invocation the simulation decides on takes the time
//! the run's own invocation of the same step, task, attempt and run
//! (first or backup) took, and gives its output's size, instead of a
//! draw from the calibrated model. The simulation's decisions (which
//! invocations, retries, backups and cold starts there are) are still its
//! own, by the engine's policy: replayed with the run's settings, they
//! must be the run's (tests/simulate.rs checks it on every preset), and
//! with other settings (a concurrency, backups) they say what the same
//! work would have done. An invocation the run did not make takes the
//! model's time; one the run cancelled (its twin finished first) takes
//! the model's time, but no less than it ran before it was cancelled.

use std::collections::HashMap;
use std::path::Path;

use crate::error::EngineError;
use crate::records;
use crate::step::StepKind;

/// What one of the run's invocations took and gave.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replayed {
    /// Its duration, in microseconds, at one core's speed.
    pub(super) us: f64,
    pub(super) bytes_out: u64,
    pub(super) records_out: u64,
}

/// An invocation: its stage's name, phase, task, attempt, and whether it
/// is of a backup run.
type Key = (String, StepKind, u64, u32, bool);

/// A run's invocations, by stage name, phase, task, attempt and run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Replay {
    by: HashMap<Key, Replayed>,
    /// Invocations cancelled: how long they ran first, at one core's speed.
    cancelled: HashMap<Key, f64>,
    /// The run's seed: its retries' backoff is drawn from it.
    pub(super) seed: u64,
}

impl Replay {
    /// The invocations of the finished run in `dir`.
    pub(crate) fn load(dir: &Path) -> Result<Replay, EngineError> {
        let summary = crate::run_dir::read_summary(dir)?;
        // Durations at one core's speed, as the calibration has them.
        let cpu = summary.cost.cpu_scale.max(f64::MIN_POSITIVE);
        let (mut by, mut cancelled) = (HashMap::new(), HashMap::new());
        records::scan(dir, |r| {
            let Some(kind) = StepKind::parse(r.phase) else { return };
            let key = (r.stage.to_string(), kind, r.task, r.attempt, r.backup);
            let us = r.finished_us.saturating_sub(r.started_us) as f64 / cpu;
            if r.error == Some(crate::container::CANCELLED) {
                cancelled.insert(key, us);
            } else {
                by.insert(key, Replayed { us, bytes_out: r.bytes_out, records_out: r.records_out });
            }
        })?;
        Ok(Replay { by, cancelled, seed: crate::policy::run_seed(&summary.run_id) })
    }

    /// The run's invocation of `stage`'s `kind` step for attempt `attempt`
    /// of task `task` (of a backup run, with `backup`).
    pub(super) fn get(&self, stage: &str, kind: StepKind, task: u64, attempt: u32, backup: bool) -> Option<Replayed> {
        self.by.get(&(stage.to_string(), kind, task, attempt, backup)).copied()
    }

    /// How long the run's invocation ran before it was cancelled, if it
    /// was: what it would have taken is longer.
    pub(super) fn ran_before_cancelled(
        &self,
        stage: &str,
        kind: StepKind,
        task: u64,
        attempt: u32,
        backup: bool,
    ) -> Option<f64> {
        self.cancelled.get(&(stage.to_string(), kind, task, attempt, backup)).copied()
    }
}
