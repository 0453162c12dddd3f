//! `fanout simulate`: a discrete-event simulation of a job in simulated
//! time, at any scale. It makes the engine's decisions by the engine's
//! own phases (`compile::phases`) and policy (`crate::policy`): the
//! shuffle's barrier between phases, the listing ahead of the slots, warm containers per
//! worker slot and their keep-alive, modelled cold starts over the
//! engine's seeded draw, chaos draws, retries with the engine's backoff,
//! tolerated failures, straggler backups with the loser cancelled — and
//! bills as the platform does, over durations calibrated on a real run of
//! the job (see `model.rs`), or replayed from one (`replay.rs`).
//!
//! It writes a run directory like a real run's (the job, invocation
//! records, `summary.json` with `simulation` set), so `fanout report`
//! draws a simulated run as it draws a real one.

mod curve;
mod emit;
mod events;
mod given;
mod model;
mod outcome;
mod replay;
mod start;
mod sweep;
mod tasks;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fanout_jobs::{JobFile, Plan};
use hdrhistogram::Histogram;

use crate::chaos::Chaos;
use crate::error::{EngineError, TaskFailure};
use crate::policy::{backups_due, straggler_wait, tolerated_so_far, too_many};
use crate::records::{Log, Recorder};
use crate::run_dir::RunDir;
use crate::stats::StageStats;
use crate::step::{Step, StepKind};
use crate::summary::{FailedTask, Simulation, Summary};
use events::{Event, Events, TaskHash};
pub use given::GivenDurations;
pub use model::Calibrated;
use model::{Calibration, StepModel};
pub use outcome::Figures;
use outcome::{Outcome, quantiles};
pub use sweep::{Point, Prediction, Sweep, SweepOptions, sweep};
use tasks::{Listing, Tasks};

/// What to simulate, beyond the job.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// How many seeds to simulate (the spread of the wall time).
    pub seeds: u32,
    /// The run directory to write (default `.fanout/runs/<id>`).
    pub run_dir: Option<PathBuf>,
    /// Faults to inject, as `fanout run --chaos` would.
    pub chaos: Option<Chaos>,
}

/// A simulated run.
#[derive(Debug, Clone)]
pub struct Simulated {
    /// Its summary (`simulation` set).
    pub summary: Summary,
    /// Its run directory.
    pub run_dir: PathBuf,
}

/// Simulates `plan` (the job file `job`, kept in the run directory) with
/// durations calibrated by `cal`, and writes its run directory: the first
/// seed's invocation records, and a summary of the first seed with the
/// wall time's spread over all.
pub fn simulate(
    plan: &Plan,
    job: &JobFile,
    cal: &Calibrated,
    opts: &SimulateOptions,
) -> Result<Simulated, EngineError> {
    let listing = Listing::of(plan, cal.cal.records_per_byte)?;
    let prepared = Prepared::new(plan, cal, &listing)?;
    let dir = RunDir::create(opts.run_dir.as_deref(), false)?;
    dir.write_job(job)?;
    let names: Vec<String> = plan.stages.iter().map(|s| s.name.clone()).collect();
    let log = Log::create(&dir.path.join(crate::records::FILE), false, &names)?;
    let outcomes = prepared.seeds(opts.seeds, opts.chaos, Some(&log))?;
    let (wall_p5, wall_p50, wall_p95) = quantiles(outcomes.iter().map(|o| o.wall_us as f64 / 1e6).collect());
    let simulation = Simulation {
        simulated: true,
        calibrated_from: cal.from.clone(),
        seeds: opts.seeds.max(1),
        wall_p5,
        wall_p50,
        wall_p95,
        cpu_share: cal.cal.cpu_share,
        cores: cal.cal.cores,
    };
    let summary = outcomes[0].summary(&dir.id, plan, simulation);
    dir.write_summary(&summary)?;
    Ok(Simulated { summary, run_dir: dir.path })
}

/// A plan ready to simulate: its steps and their calibrated models, and
/// its input's splits.
struct Prepared<'a> {
    plan: &'a Plan,
    cal: &'a Calibration,
    listing: &'a Listing,
    steps: Vec<Step>,
    replay: Option<&'a replay::Replay>,
    /// The steps of each phase, as index ranges of `steps`.
    phases: Vec<std::ops::Range<usize>>,
    models: Vec<StepModel>,
}

impl<'a> Prepared<'a> {
    fn new(plan: &'a Plan, cal: &'a Calibrated, listing: &'a Listing) -> Result<Prepared<'a>, EngineError> {
        // The engine's phases: steps run back to back on a slot, up to a
        // keyed stage's combine.
        let (mut steps, mut phases) = (Vec::new(), Vec::new());
        for phase in crate::compile::phases(plan.stages.iter().map(|s| s.key.is_some())) {
            let start = steps.len();
            steps.extend(phase.steps);
            if steps.len() > start {
                phases.push(start..steps.len());
            }
        }
        let mut models = Vec::new();
        for step in &steps {
            let stage = &plan.stages[step.stage];
            let m = cal.model(&stage.name, step.kind.name()).ok_or_else(|| {
                let (name, phase) = (&stage.name, step.kind.name());
                let e = if cal.cal.steps.is_empty() {
                    format!(
                        "stage `{name}` ({phase}) has no durations: give --durations {name}=TIME (e.g. 20ms or \
                         1ms+4ms/MiB), or --from RUN_DIR, a run of the job to calibrate on"
                    )
                } else {
                    format!(
                        "stage `{name}` ({phase}) has no successful invocations in {} to calibrate on: simulate a job \
                         with the stages of the run it is calibrated on, or give --durations {name}=TIME",
                        cal.from.display()
                    )
                };
                EngineError::io(&cal.from, std::io::Error::other(e))
            })?;
            models.push(m.clone());
        }
        Ok(Prepared { plan, cal: &cal.cal, listing, steps, replay: cal.replay.as_deref(), phases, models })
    }

    /// Simulates seeds `0..seeds`, the first one's invocations recorded
    /// in `log`.
    fn seeds(&self, seeds: u32, chaos: Option<Chaos>, log: Option<&Log>) -> Result<Vec<Outcome>, EngineError> {
        let mut outcomes = Vec::new();
        for seed in 0..seeds.max(1) {
            let index_count = StepKind::ALL.len() * self.plan.stages.len();
            let mut recorder = log.filter(|_| seed == 0).map(|log| Recorder::new(log, index_count));
            let mut sim = Sim::new(self, chaos, u64::from(seed), recorder.as_mut());
            sim.run();
            outcomes.push(sim.outcome());
            if let Some(r) = recorder.as_mut() {
                r.flush()?;
            }
        }
        Ok(outcomes)
    }
}

/// An invocation the simulation decided on.
#[derive(Debug, Clone)]
struct Planned {
    step: Step,
    attempt: u32,
    container: u64,
    cold: bool,
    start: u64,
    end: u64,
    error: Option<&'static str>,
    bytes_in: u64,
    records_in: u64,
    bytes_out: u64,
    records_out: u64,
}

/// A run of a task on a slot: its invocations, and how it ends.
struct Run {
    task: u64,
    backup: bool,
    queued: u64,
    planned: Vec<Planned>,
    ok: bool,
}

/// A worker slot.
struct SlotSim {
    /// Bumped when its run is cancelled: its pending end is stale.
    epoch: u64,
    run: Option<Run>,
    /// Per step index: a warm container and when it was last used.
    containers: Vec<Option<(u64, u64)>>,
    /// Per step index: containers started (for their cold starts' draws).
    cold_starts: Vec<u32>,
}

/// A task with runs going.
struct Running {
    started: u64,
    bytes: u64,
    records: u64,
    backed_up: bool,
    slots: Vec<usize>,
}

/// One seed's simulation.
struct Sim<'a, 'r> {
    plan: &'a Plan,
    cal: &'a Calibration,
    steps: &'a [Step],
    phases: &'a [std::ops::Range<usize>],
    replay: Option<&'a replay::Replay>,
    models: &'a [StepModel],
    listing: &'a Listing,
    chaos: Option<Chaos>,
    seed: u64,
    recorder: Option<&'r mut Recorder<'a>>,
    /// Instants for the engine's policies: `base` + simulated µs.
    base: Instant,
    now: u64,
    events: Events,
    slots: Vec<SlotSim>,
    free: Vec<usize>,
    /// Backups waiting for a slot (before the phase's own tasks).
    backlog: VecDeque<(u64, u64, u64)>,
    running: HashMap<u64, Running, TaskHash>,
    /// Tasks that may straggle, in the order they started (those that
    /// ended or were backed up are dropped when met).
    watch: VecDeque<(u64, u64)>,
    check_at: Option<u64>,
    /// The phase's tasks: their steps, how many were listed, how many
    /// are decided, whether all are listed.
    phase: Vec<usize>,
    listed: u64,
    finished: u64,
    exhausted: bool,
    durations: Histogram<u64>,
    /// Bytes and records out of the phase's last step, for the next.
    phase_out: (u64, u64),
    next_container: u64,
    stats: Vec<StageStats>,
    /// Tasks of the phase that failed for good.
    phase_failed: u64,
    /// Per stage with a concurrency of its own below the platform's:
    /// when each of its permits is next free (as the engine's `Limit`).
    limits: Vec<Option<BinaryHeap<Reverse<u64>>>>,
    /// Whether the functions run on this machine (the `local` preset, or
    /// an emulated platform), so that invocations running at once slow
    /// each other as in the calibration runs (`StepModel::stretch`).
    shares_machine: bool,
    out: Outcome,
}

impl<'a, 'r> Sim<'a, 'r> {
    fn new(p: &'a Prepared<'a>, chaos: Option<Chaos>, seed: u64, recorder: Option<&'r mut Recorder<'a>>) -> Self {
        let (plan, cal) = (p.plan, p.cal);
        let slots = plan.platform.concurrency.max(1);
        let index_count = StepKind::ALL.len() * plan.stages.len();
        Sim {
            plan,
            cal,
            listing: p.listing,
            steps: &p.steps,
            phases: &p.phases,
            replay: p.replay,
            models: &p.models,
            chaos: chaos.map(|c| Chaos { seed: c.seed.wrapping_add(seed), ..c }),
            seed,
            recorder,
            base: Instant::now(),
            now: cal.head_us as u64,
            events: Events::default(),
            slots: (0..slots)
                .map(|_| SlotSim {
                    epoch: 0,
                    run: None,
                    containers: vec![None; index_count],
                    cold_starts: vec![0; index_count],
                })
                .collect(),
            free: (0..slots).rev().collect(),
            backlog: VecDeque::new(),
            running: HashMap::default(),
            watch: VecDeque::new(),
            check_at: None,
            phase: Vec::new(),
            listed: 0,
            finished: 0,
            exhausted: false,
            durations: Histogram::new_with_bounds(1, 86_400_000_000, 2).expect("valid bounds"),
            phase_out: (0, 0),
            next_container: seed << 40,
            stats: vec![StageStats::default(); index_count],
            phase_failed: 0,
            limits: plan
                .stages
                .iter()
                .map(|s| (s.concurrency < slots).then(|| (0..s.concurrency.max(1)).map(|_| Reverse(0)).collect()))
                .collect(),
            shares_machine: plan.platform.preset == fanout_jobs::Preset::Local || plan.platform.emulate,
            out: Outcome {
                wall_us: 0,
                stats: Vec::new(),
                splits: 0,
                input_bytes: 0,
                input_records: 0,
                backups: 0,
                failed: Vec::new(),
                error: None,
                concurrency: slots,
                storage: None,
            },
        }
    }

    fn at(&self, us: u64) -> Instant {
        self.base + Duration::from_micros(us)
    }

    fn push(&mut self, at: u64, e: Event) {
        self.events.push(at, self.now, e);
    }

    /// Simulates every phase, up to a failure the job does not tolerate.
    fn run(&mut self) {
        let mut first = true;
        for phase in self.phases {
            if self.out.error.is_some() {
                break;
            }
            self.phase = phase.clone().collect();
            let tasks: Tasks<'_> = if first {
                self.listing.tasks(self.cal.records_per_byte)
            } else {
                let stage = &self.plan.stages[self.steps[self.phase[0]].stage];
                let n = stage.partitions.max(1) as u64;
                let (bytes, records) = self.phase_out;
                let bytes = self.cal.shuffled(&stage.name, bytes);
                Box::new((0..n).map(move |p| (p, bytes / n, records / n)))
            };
            self.run_phase(tasks, first);
            first = false;
        }
        self.out.wall_us = self.now + self.cal.tail_us as u64;
    }

    fn run_phase(&mut self, mut tasks: Tasks<'_>, splits: bool) {
        (self.listed, self.finished, self.exhausted, self.phase_failed) = (0, 0, false, 0);
        self.watch.clear();
        self.phase_out = (0, 0);
        self.durations.reset();
        self.check_at = None;
        // Tasks listed ahead of the slots, as the engine's bounded channel
        // holds them (two per slot): the listing ends, and backups may
        // start, that far before the last task runs.
        let ahead = crate::policy::LISTED_AHEAD_PER_SLOT * self.slots.len();
        let mut queue: VecDeque<(u64, u64, u64, u64)> = VecDeque::new();
        while self.out.error.is_none() {
            while !self.exhausted && queue.len() < ahead {
                match tasks.next() {
                    Some((t, b, r)) => {
                        self.listed += 1;
                        if splits {
                            self.out.splits += 1;
                            self.out.input_bytes += b;
                            self.out.input_records += r;
                        }
                        queue.push_back((t, b, r, self.now));
                    }
                    None => {
                        self.exhausted = true;
                        self.check_backups();
                    }
                }
            }
            // Free slots take backups first, then the phase's tasks.
            while let Some(&slot) = self.free.last() {
                let task = match self.backlog.pop_front() {
                    Some((t, b, r)) => (t, b, r, self.now, true),
                    None => match queue.pop_front() {
                        Some((t, b, r, queued)) => (t, b, r, queued, false),
                        None => break,
                    },
                };
                self.free.pop();
                let (task, bytes, records, queued, backup) = task;
                self.start(slot, task, bytes, records, queued, backup);
                if !self.exhausted && queue.len() < ahead {
                    break;
                }
            }
            if !self.exhausted && queue.len() < ahead {
                continue;
            }
            let Some((at, event)) = self.events.pop() else { break };
            // Time passes only for what happens: the end of a cancelled run
            // and a look for stragglers once the phase's tasks are all
            // decided are nothing (the engine's phase ends with its last
            // task).
            let done = self.exhausted && self.finished == self.listed && self.backlog.is_empty();
            match event {
                Event::End { slot, epoch } if epoch == self.slots[slot].epoch => {
                    self.now = self.now.max(at);
                    self.end(slot);
                }
                Event::End { .. } => {}
                Event::Ready { slot } => {
                    self.now = self.now.max(at);
                    self.free.push(slot);
                }
                Event::Check if done => self.check_at = None,
                Event::Check => {
                    self.now = self.now.max(at);
                    self.check_at = None;
                    self.check_backups();
                }
            }
        }
        if self.out.error.is_some() {
            // The run stops as the engine stops it: what is in flight is
            // cancelled, nothing more starts.
            for slot in 0..self.slots.len() {
                self.cancel(slot);
            }
            self.events = Events::default();
            self.free = (0..self.slots.len()).rev().collect();
            return;
        }
        let p = &self.plan.platform;
        if let Some(percent) = p.tolerated_failure_percent
            && too_many(self.phase_failed, self.listed, percent)
        {
            let e = EngineError::TooManyFailures { failed: self.phase_failed, tasks: self.listed, percent };
            self.out.error = Some(e.to_string());
        }
    }

    /// `slot`'s run has ended: the task is decided (its twin cancelled), or
    /// left to its twin, or failed for good.
    fn end(&mut self, slot: usize) {
        let run = self.slots[slot].run.take().expect("a run ends");
        self.emit(&run, slot, u64::MAX);
        let task = run.task;
        let r = self.running.get_mut(&task).expect("a running task");
        r.slots.retain(|&s| s != slot);
        let (started, bytes, twins) = (r.started, r.bytes, r.slots.len());
        let decided = if run.ok {
            if let Some(p) = run.planned.last() {
                self.phase_out.0 += p.bytes_out;
                self.phase_out.1 += p.records_out;
            }
            let _ = self.durations.record((self.now - started).max(1));
            let others = self.running.get_mut(&task).map(|r| std::mem::take(&mut r.slots)).unwrap_or_default();
            for other in others {
                self.cancel(other);
            }
            true
        } else if twins == 0 {
            let last = run.planned.last().expect("a failed run invoked");
            let failure = TaskFailure {
                stage: self.plan.stages[last.step.stage].name.clone(),
                phase: last.step.kind,
                task,
                attempt: last.attempt,
                input: format!("{bytes} bytes"),
                message: last.error.unwrap_or("failed").to_string(),
            };
            self.phase_failed += 1;
            self.out.failed.push(FailedTask::from(&failure));
            let p = &self.plan.platform;
            if !tolerated_so_far(self.phase_failed, p.tolerated_failure_count, p.tolerated_failure_percent) {
                self.out.error = Some(EngineError::Task(Box::new(failure)).to_string());
            }
            true
        } else {
            false
        };
        if decided {
            self.running.remove(&task);
            // A backup still waiting for a slot is needed no more.
            if !self.backlog.is_empty() {
                self.backlog.retain(|b| b.0 != task);
            }
            self.finished += 1;
            // Decided tasks leave the watch as they reach its front, so it
            // stays about as long as the tasks in flight.
            while self.watch.front().is_some_and(|(_, t)| !self.running.contains_key(t)) {
                self.watch.pop_front();
            }
        }
        let mut gap = self.cal.gap_us;
        if self.shares_machine {
            gap *= self.cal.sharing(&self.cal.gap_stretch, self.beside() as f64);
        }
        self.push(self.now + gap as u64, Event::Ready { slot });
        self.check_backups();
    }

    /// Cancels `slot`'s run now: its invocation in flight ends as
    /// cancelled, what it would have run later is not run.
    fn cancel(&mut self, slot: usize) {
        let Some(run) = self.slots[slot].run.take() else { return };
        self.emit(&run, slot, self.now);
        if let Some(p) = run.planned.iter().find(|p| p.start < self.now && p.end > self.now) {
            // Its container was abandoned.
            self.slots[slot].containers[p.step.index()] = None;
        }
        self.slots[slot].epoch += 1;
        self.push(self.now, Event::Ready { slot });
    }

    /// Backs up the stragglers, by the engine's rule, once every task of
    /// the phase is listed; schedules the next look.
    fn check_backups(&mut self) {
        let p = &self.plan.platform;
        if !p.backups || !self.exhausted || !backups_due(self.finished, self.listed, p.backup_when_done) {
            return;
        }
        if self.durations.is_empty() {
            return;
        }
        let median = Duration::from_micros(self.durations.value_at_quantile(0.5));
        let wait = straggler_wait(median, p.backup_after).as_micros() as u64;
        let mut next: Option<u64> = None;
        let mut due = Vec::new();
        while let Some(&(started, task)) = self.watch.front() {
            let Some(r) = self.running.get_mut(&task).filter(|r| !r.backed_up) else {
                self.watch.pop_front();
                continue;
            };
            if self.now.saturating_sub(started) > wait {
                r.backed_up = true;
                due.push((task, r.bytes, r.records));
                self.watch.pop_front();
            } else {
                next = Some(started + wait + 1);
                break;
            }
        }
        due.sort_unstable();
        self.out.backups += due.len() as u64;
        self.backlog.extend(due);
        if let Some(at) = next
            && self.check_at.is_none_or(|c| at < c)
        {
            self.check_at = Some(at);
            self.push(at, Event::Check);
        }
    }

    fn outcome(mut self) -> Outcome {
        self.out.stats = std::mem::take(&mut self.stats);
        self.out.storage = self.cal.storage.map(|s| s.at(self.out.splits, self.out.input_bytes));
        self.out
    }
}
