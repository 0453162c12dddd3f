//! The run: phases of tasks on a pool of worker slots, each task a chain of
//! invocations; the shuffle between phases; the gather and the commit; the
//! run directory with its records and summary.
//!
//! - `topology.rs`: where each phase's tasks come from and where their
//!   outputs go (shuffles, the gather);
//! - `dispatch.rs`: a phase's coordinator (tasks from the source, grouping,
//!   the journal's resumed tasks, backups of stragglers);
//! - `task.rs`: tasks on their way to the slots, a stage's permits;
//! - `worker.rs`: a worker slot's loop, keep-alive and idling;
//! - `slot.rs`: a worker slot's state (its containers, counts, outputs);
//! - `attempt.rs`: a task's steps, invocations, retries and deadlines;
//! - `failures.rs`: tasks that failed for good, and tolerance.
//!
//! See `engine/README.md` for the model.

pub(crate) mod attempt;
mod bad;
mod dispatch;
pub(crate) mod failures;
pub(crate) mod slot;
mod task;
mod topology;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fanout_datasets::store::UploadNote;
use fanout_jobs::{JobFile, OutputMode, Plan};
use fanout_workers::Registry;

use crate::chaos::Chaos;
use crate::clock::Clock;
use crate::compile::{Compiled, Tasks, compile};
use crate::error::EngineError;
use crate::flight::Flight;
use crate::gather::{Commit, commit};
use crate::inputs::{self, Inputs};
use crate::journal::Journal;
pub use crate::options::{Report, RunFailure, RunOptions};
use crate::progress::StageProgress;
use crate::records::{Log, Recorder};
pub use crate::run_dir::{CWD, finished_run, running};
use crate::run_dir::{RunDir, Upload};
use crate::scratch::Scratch;
use crate::sink::TaskSink;
use crate::source::{Input, TaskSource};
use crate::stats::StageStats;
use crate::step::{Step, StepKind};
use crate::stop::Stop;
use crate::summary::{Totals, summarize};
use bad::BadInput;
use dispatch::{Busy, run_phase};
use failures::Failures;
use slot::Slot;
use task::Limit;
use topology::Topology;

/// Runs a validated job. `job` is the job file as resolved (after `--set`),
/// kept in the run directory.
pub fn run(plan: &Plan, job: &JobFile, registry: &Registry, opts: &RunOptions) -> Result<Report, RunFailure> {
    if opts.chaos.is_some_and(|c| c.timeout > 0.0) && plan.platform.timeout.is_none() {
        return Err(EngineError::Chaos("timeout faults need a deadline: set platform.timeout".into()).into());
    }
    if plan.is_stream() {
        return crate::stream::run(plan, job, registry, opts);
    }
    let started = opts.clock.now();
    if opts.resume
        && let Some(dir) = &opts.run_dir
        && let Some(summary) = finished_run(dir)?
    {
        opts.progress.finish();
        return Ok(Report { run_dir: dir.clone(), summary, finished_before: true, signal_in_commit: None });
    }
    let compiled = compile(plan, registry, &opts.cache_dir)?;
    // From here: a generated input made on the way is not the job's work.
    let cpu_at_start = crate::summary::cpu_seconds();
    let target = &plan.output.path;
    let remote = target.to_str().is_some_and(fanout_datasets::store::is_url);
    // A resumed run's directory is there to say whose an object is.
    let resumed = opts.resume.then(|| RunDir::create(opts.run_dir.as_deref(), true)).transpose()?;
    let owner = resumed.as_ref().map(|d| d.owner.as_str());
    if plan.output.mode == OutputMode::Error && output_taken(target, remote, &plan.storage, owner)? {
        return Err(EngineError::OutputExists(target.clone()).into());
    }
    let dir = match resumed {
        Some(d) => d,
        None => RunDir::create(opts.run_dir.as_deref(), false)?,
    };
    let fail = |error: EngineError| RunFailure { error, run_dir: Some(dir.path.clone()) };
    if !opts.resume {
        dir.write_job(job).map_err(fail)?;
    }
    // The output is staged beside its target, to be renamed into place; an
    // output in object storage is staged in the run directory and uploaded.
    let out_dir = match remote {
        true => dir.path.as_path(),
        false => target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")),
    };
    let staging = out_dir.join(format!(".fanout-staging-{}", dir.id));
    std::fs::create_dir_all(&staging).map_err(|e| fail(EngineError::io(&staging, e)))?;
    let name = target.file_name().map(|n| n.to_owned()).unwrap_or_else(|| "output".into());
    let executed = execute(&compiled, plan, &dir, &staging.join(&name), started, opts);
    // A signal before the commit point (while the output was gathered)
    // stops the run as one during its tasks does: nothing is written. Once
    // the commit has begun, it goes on to the end.
    test_hold("gathered");
    let executed = executed.and_then(|x| match opts.stop.begin_commit() {
        Err(signal) => Err(EngineError::Interrupted { signal }),
        Ok(()) => Ok(x),
    });
    let (totals, staged) = match executed {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            opts.progress.finish();
            return Err(fail(e));
        }
    };
    let committed = staged.and_then(|(staged, rows)| {
        let mut manifest = serde_json::json!({ "job": plan.name, "run_id": dir.id, "run_dir": dir.path });
        if let Some(path) = &totals.rejects {
            let rejects = serde_json::json!({ "path": path, "records": totals.bad_records });
            manifest["rejects"] = rejects;
        }
        // Uploads an earlier attempt left pending (killed mid-upload) go
        // first, also one killed before it heard its upload's id; the new
        // one is noted before it is created and again as it starts.
        for (url, upload) in dir.uploads() {
            match upload {
                Upload::Started(id) => plan.storage.abort_upload(&url, &id),
                Upload::Creating(before) => plan.storage.abort_new_uploads(&url, &before).map(drop),
            }
            .map_err(EngineError::Output)?;
        }
        dir.forget_uploads().map_err(|e| EngineError::io(&dir.path, e))?;
        let mut started = |note: UploadNote<'_>| dir.record_upload(&target.to_string_lossy(), note);
        let how = Commit {
            create: plan.output.mode == OutputMode::Error,
            owner: &dir.owner,
            resume: opts.resume,
            started: &mut started,
        };
        test_hold("committing");
        let info = commit(&staged, target, plan.output.format, rows, manifest, &plan.storage, how)?;
        dir.forget_uploads().map_err(|e| EngineError::io(&dir.path, e))?;
        Ok(info)
    });
    let _ = std::fs::remove_dir_all(&staging);
    dir.tidy(committed.is_ok());
    opts.progress.finish();
    let (output, error) = match committed {
        Ok(info) => (Some(info), None),
        Err(e) => (None, Some(e)),
    };
    let wall = opts.clock.now().saturating_duration_since(started);
    let cpu = crate::summary::cpu_seconds().zip(cpu_at_start).map(|(end, start)| (end - start).max(0.0));
    let summary = summarize(&dir.id, plan, &totals, wall, cpu, output, error.as_ref());
    match (error, dir.write_summary(&summary)) {
        (Some(e), _) | (None, Err(e)) => Err(fail(e)),
        (None, Ok(())) => {
            let signal_in_commit = opts.stop.interrupted();
            Ok(Report { run_dir: dir.path, summary, finished_before: false, signal_in_commit })
        }
    }
}

/// A test hook: with `FANOUT_TEST_HOLD=POINT:FILE` in its environment,
/// the run creates FILE at POINT (`gathered`: the output is staged, before
/// the commit point; `committing`: the commit has begun) and waits there
/// until FILE is gone, so that a test can signal it there.
fn test_hold(point: &str) {
    let Ok(spec) = std::env::var("FANOUT_TEST_HOLD") else { return };
    let Some((at, file)) = spec.split_once(':') else { return };
    if at != point || std::fs::write(file, point).is_err() {
        return;
    }
    while Path::new(file).exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether the output exists already, and is not a resumed run's own: a
/// file, or an object not stamped by `owner` (the run resumed, if it is).
fn output_taken(
    target: &Path,
    remote: bool,
    storage: &fanout_datasets::Storage,
    owner: Option<&str>,
) -> Result<bool, EngineError> {
    if !remote {
        return Ok(target.exists());
    }
    let found = storage.stamp(&target.to_string_lossy()).map_err(EngineError::Output)?;
    Ok(match found {
        None => false,
        Some(Some(stamp)) => owner != Some(stamp.run.as_str()),
        Some(None) => true,
    })
}

/// Counters the slots and the coordinator share.
#[derive(Default)]
struct Counters {
    /// Tasks taken from the journal instead of run.
    resumed: AtomicU64,
    /// Backup invocations started.
    backups: AtomicU64,
    /// Records and bytes read from the input.
    input_records: AtomicU64,
    input_bytes: AtomicU64,
    /// Containers started, for their ids.
    containers: AtomicU64,
}

impl Counters {
    /// A new container's id.
    fn next_container(&self) -> u64 {
        self.containers.fetch_add(1, Relaxed)
    }
}

/// Everything the slots and the coordinator share during a run.
struct Shared<'a> {
    compiled: &'a Compiled,
    plan: &'a Plan,
    chaos: Option<Chaos>,
    clock: &'a dyn Clock,
    /// Set when the run stops early: a failure, or an interrupt.
    stop: Arc<Stop>,
    /// The run's random seed (backoff jitter), from its id.
    seed: u64,
    /// Per phase: where its tasks come from, and where their output goes.
    sources: Vec<Box<dyn TaskSource + 'a>>,
    sinks: Vec<&'a dyn TaskSink>,
    /// Per phase: its remote map step that writes the shuffle itself.
    writers: Vec<Option<Writer<'a>>>,
    /// Tasks that failed for good.
    failures: Failures,
    /// Input records that could not be read.
    bad: BadInput,
    /// Completed tasks, saved for a resume.
    journal: Option<Journal>,
    /// The running phase's tasks, for stragglers.
    flight: Flight<Input>,
    /// Per slot: time spent on tasks, for sizing task groups.
    busy: Vec<Busy>,
    counters: Counters,
    /// Per stage: its progress counters.
    progress: Vec<Arc<StageProgress>>,
    /// Per stage: a semaphore, when the stage's concurrency is below the
    /// platform's.
    limits: Vec<Option<Limit>>,
    /// When the run started: records count from here.
    started: Instant,
    failure: Mutex<Option<EngineError>>,
}

impl<'a> Shared<'a> {
    /// What the slots and the coordinator of `compiled`'s run share: the
    /// topology's sources, sinks and writers, the run's files, and its
    /// counters.
    #[allow(clippy::too_many_arguments)]
    fn new(
        compiled: &'a Compiled,
        plan: &'a Plan,
        dir: &RunDir,
        topology: &'a Topology<'a>,
        inputs: Option<&'a Inputs>,
        files: RunFiles,
        started: Instant,
        opts: &'a RunOptions,
    ) -> Shared<'a> {
        let concurrency = plan.platform.concurrency.max(1);
        let RunFiles { journal, failures, bad } = files;
        Shared {
            compiled,
            plan,
            chaos: opts.chaos,
            clock: opts.clock.as_ref(),
            stop: opts.stop.link(),
            seed: crate::policy::run_seed(&dir.id),
            sources: topology.sources(inputs),
            sinks: topology.sinks(),
            writers: topology.writers(),
            failures,
            bad,
            journal,
            flight: Flight::default(),
            busy: (0..concurrency).map(|_| Busy::default()).collect(),
            counters: Counters::default(),
            progress: opts.progress.register(compiled.stages.iter().map(|s| s.name.clone())),
            limits: (compiled.stages.iter())
                .map(|s| (s.concurrency < concurrency).then(|| Limit::new(s.concurrency)))
                .collect(),
            started,
            failure: Mutex::new(None),
        }
    }

    /// Microseconds from the run's start to `t`.
    fn micros(&self, t: Instant) -> u64 {
        // Not `as_micros`: its 128-bit division is most of this.
        let d = t.saturating_duration_since(self.started);
        d.as_secs() * 1_000_000 + u64::from(d.subsec_micros())
    }

    /// Stops the run with `e` (the first failure is the run's).
    fn fail(&self, e: EngineError) {
        let mut f = self.failure.lock().expect("not poisoned");
        if f.is_none() {
            *f = Some(e);
        }
        drop(f);
        self.stop.stop();
    }

    /// Whether the run is stopping (a failure, or an interrupt).
    fn failed(&self) -> bool {
        self.stop.is_stopped()
    }
}

/// The staged output and its rows, or why there is none.
type Staged = Result<(PathBuf, u64), EngineError>;

/// A phase's remote map step that writes the next keyed stage's shuffle
/// to object storage itself.
pub(crate) struct Writer<'a> {
    pub(crate) step: Step,
    pub(crate) scratch: &'a Scratch,
}

/// Runs the phases; returns what the summary needs and the staged output:
/// builds the topology, opens the run's files, runs the phases on the
/// slots, and tears down into totals.
fn execute(
    compiled: &Compiled,
    plan: &Plan,
    dir: &RunDir,
    staged: &Path,
    started: Instant,
    opts: &RunOptions,
) -> Result<(Totals, Staged), EngineError> {
    // A resume first checks that its input is what the run read before.
    let recorded = match opts.resume && opts.journal {
        true => inputs::check(&dir.path, &compiled.dataset)?,
        false => 0,
    };
    let inputs = opts.journal.then(|| Inputs::open(&dir.path, opts.resume, recorded)).transpose()?;
    let used = AtomicU64::new(0);
    let topology = Topology::build(compiled, plan, dir, staged, opts, &used)?;
    let (stats, log) = open_records(compiled, &dir.path, opts.resume)?;
    let files = RunFiles::open(compiled, plan, &dir.path, opts.resume, opts.journal, log.clone())?;
    let shared = Shared::new(compiled, plan, dir, &topology, inputs.as_ref(), files, started, opts);
    let concurrency = shared.busy.len();
    let (now, steps) = (shared.clock.now(), Step::count(compiled.stages.len()));
    let gauges = opts.progress.register_slots(concurrency);
    let mut slots: Vec<(Slot, Recorder<'_>)> = (0..concurrency)
        .map(|id| (Slot::new(id, steps, compiled.stages.len(), now, gauges[id].clone()), Recorder::new(&log, steps)))
        .collect();
    measure_input(&shared);
    let splits = run_phases(&shared, &mut slots);
    tear_down(shared, slots, stats, &topology, inputs.as_ref(), splits)
}

/// The run's invocation log, and the statistics so far: a resumed run
/// reports the whole run, the interrupted part's invocations too.
fn open_records(compiled: &Compiled, run_dir: &Path, resume: bool) -> Result<(Vec<StageStats>, Arc<Log>), EngineError> {
    let mut stats = vec![StageStats::default(); Step::count(compiled.stages.len())];
    let step_of = |stage: &str, phase: &str| {
        let s = compiled.stages.iter().position(|c| c.name == stage)?;
        Some(Step { stage: s, kind: StepKind::parse(phase)? }.index())
    };
    if resume {
        crate::records::replay(run_dir, step_of, &mut stats)?;
    }
    let stage_names: Vec<String> = compiled.stages.iter().map(|s| s.name.clone()).collect();
    let log = Arc::new(Log::create(&run_dir.join(crate::records::FILE), resume, &stage_names)?);
    Ok((stats, log))
}

/// The files a run keeps as it goes, for a resume and the summary.
struct RunFiles {
    journal: Option<Journal>,
    failures: Failures,
    bad: BadInput,
}

impl RunFiles {
    /// Opens the journal (with `journal`), the failed tasks and the bad
    /// input of the run in `run_dir`; a resume keeps what its journaled
    /// tasks decided.
    fn open(
        compiled: &Compiled,
        plan: &Plan,
        run_dir: &Path,
        resume: bool,
        journal: bool,
        log: Arc<Log>,
    ) -> Result<RunFiles, EngineError> {
        let journal = journal.then(|| Journal::open(run_dir, resume, log)).transpose()?;
        let tolerated = (plan.platform.tolerated_failure_count, plan.platform.tolerated_failure_percent);
        let failures = Failures::open(run_dir, resume, tolerated, |f| {
            journal.as_ref().zip(phase_of(compiled, &f.stage, f.phase)).is_some_and(|(j, phase)| j.has(phase, f.task))
        })?;
        let splits_phase = compiled.phases.iter().position(|p| p.tasks == Tasks::Splits);
        let bad = BadInput::open(run_dir, resume, plan.input.options.bad, |task| {
            journal.as_ref().zip(splits_phase).is_some_and(|(j, phase)| j.has(phase, task))
        })?;
        Ok(RunFiles { journal, failures, bad })
    }
}

/// The phase that runs `stage`'s `kind` step.
fn phase_of(compiled: &Compiled, stage: &str, kind: StepKind) -> Option<usize> {
    (compiled.phases.iter())
        .position(|p| p.steps.iter().any(|s| compiled.stages[s.stage].name == stage && s.kind == kind))
}

/// Sums the input's size from its listing, on a thread of its own: the
/// first stage's progress goes by bytes from the start.
fn measure_input(shared: &Shared<'_>) {
    let compiled = shared.compiled;
    let first = compiled.phases.iter().find(|p| p.tasks == Tasks::Splits).and_then(|p| p.steps.first());
    if let Some(first) = first {
        let dataset = compiled.dataset.clone();
        let progress = shared.progress[first.stage].clone();
        let _ = std::thread::Builder::new().name("input-size".into()).spawn(move || {
            let total: u64 = dataset.files().map_while(Result::ok).map(|f| f.size).sum();
            let _ = progress.total_bytes.compare_exchange(0, total.max(1), Relaxed, Relaxed);
        });
    }
}

/// Runs the phases in order, up to a failure; returns the input's splits.
fn run_phases(shared: &Shared<'_>, slots: &mut [(Slot, Recorder<'_>)]) -> u64 {
    let mut splits = 0;
    for (index, phase) in shared.compiled.phases.iter().enumerate() {
        shared.failures.begin_phase(|f| phase_of(shared.compiled, &f.stage, f.phase) == Some(index));
        let n = run_phase(shared, index, phase, slots);
        if phase.tasks == Tasks::Splits {
            splits = n;
            // The input is read: a percentage of bad records can be told.
            if !shared.failed()
                && let Some(e) = shared.bad.input_read(shared.counters.input_records.load(Relaxed))
            {
                shared.fail(e);
            }
        }
        if let Some(e) = shared.failures.end_phase(n) {
            shared.fail(e);
        }
        if shared.failed() {
            break;
        }
    }
    splits
}

/// Flushes the slots' records and closes the run's files into its totals
/// and the staged output (or why there is none).
fn tear_down(
    shared: Shared<'_>,
    mut slots: Vec<(Slot, Recorder<'_>)>,
    mut stats: Vec<StageStats>,
    topology: &Topology<'_>,
    inputs: Option<&Inputs>,
    splits: u64,
) -> Result<(Totals, Staged), EngineError> {
    for (_, r) in &mut slots {
        r.flush()?;
        for (s, w) in stats.iter_mut().zip(&r.stats) {
            s.merge(w);
        }
    }
    if let Some(j) = &shared.journal {
        j.finish(!shared.failed())?;
    }
    if let Some(i) = inputs {
        i.sync()?;
    }
    let failed_tasks = shared.failures.finish()?;
    shared.bad.finish()?;
    // An interrupted run says so, whatever its cancelled invocations said.
    let failure = match shared.stop.interrupted() {
        Some(signal) => Some(EngineError::Interrupted { signal }),
        None => shared.failure.lock().expect("not poisoned").take(),
    };
    // The shuffles' objects in storage go once the run succeeded, or
    // failed with no journal to resume it from; a journal names them, so
    // they are kept for `--resume`.
    let scratches = topology.scratches.iter().flatten();
    let cleared = match failure.is_none() || shared.journal.is_none() {
        true => scratches.clone().try_for_each(Scratch::delete),
        false => Ok(()),
    };
    let gather = topology.gather.finish();
    let staged = match (failure, cleared) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(())) => gather.finish(),
    };
    let c = &shared.counters;
    let totals = Totals {
        resumed: c.resumed.load(Relaxed),
        backups: c.backups.load(Relaxed),
        stats,
        splits,
        input_bytes: c.input_bytes.load(Relaxed),
        input_records: c.input_records.load(Relaxed),
        spilled: topology.shuffles.iter().flatten().map(|s| s.spilled.load(Relaxed)).sum(),
        scratch_written: scratches.map(|s| s.written.load(Relaxed)).sum(),
        concurrency: slots.len(),
        failures: failed_tasks,
        bad_records: shared.bad.count(),
        rejects: shared.bad.rejects_path().map(Path::to_path_buf),
    };
    Ok((totals, staged))
}
