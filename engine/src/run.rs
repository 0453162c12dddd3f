//! The run: phases of tasks on a pool of worker slots, each task a chain of
//! invocations; the shuffle between phases; the gather and the commit; the
//! run directory with its records and summary.
//!
//! See `engine/README.md` for the model.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use arrow_array::RecordBatch;
use fanout_datasets::{OpenFiles, Split};
use fanout_jobs::{JobFile, OutputMode, Plan};
use fanout_workers::{FunctionError, Registry};

use crate::chaos::{Chaos, Fault};
use crate::compile::{Compiled, Phase, Sink, Step, compile};
use crate::container::{Container, Instance};
use crate::error::{EngineError, TaskFailure};
use crate::flight::{Ended, Flight};
use crate::gather::{Gather, commit};
use crate::journal::Journal;
use crate::progress::{Progress, StageProgress};
use crate::records::{InvocationRecord, Log, Recorder};
use crate::shuffle::Shuffle;
use crate::stats::StageStats;
use crate::stop::Stop;
use crate::summary::{Summary, summarize};

/// How a run behaves (not what it computes): where it keeps its files, how
/// much memory the shuffle may hold, where progress goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory; `None` makes `.fanout/runs/<id>` under the
    /// current directory.
    pub run_dir: Option<PathBuf>,
    /// Where generated inputs are kept.
    pub cache_dir: PathBuf,
    /// Bytes of shuffle data held in memory before spilling to disk.
    pub shuffle_memory: u64,
    /// Live counters for a progress display.
    pub progress: Arc<Progress>,
    /// Faults to inject.
    pub chaos: Option<Chaos>,
    /// Journal completed tasks and their outputs (fsync'ed), so the run can
    /// be resumed; off trades that for speed on tiny tasks.
    pub journal: bool,
    /// Resume the run in `run_dir`: completed tasks are not run again.
    pub resume: bool,
    /// Stops the run from outside (an interrupt); one per run.
    pub stop: Arc<Stop>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_dir: None,
            cache_dir: PathBuf::from(".fanout/cache"),
            shuffle_memory: 256 << 20,
            progress: Progress::new(),
            chaos: None,
            journal: true,
            resume: false,
            stop: Stop::new(),
        }
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its directory.
    pub run_dir: PathBuf,
    /// What `summary.json` holds.
    pub summary: Summary,
    /// The run had finished before: `--resume` found nothing to do, and
    /// `summary` is what it wrote then.
    pub finished_before: bool,
}

/// The summary of the run in `dir` if it finished successfully (its
/// output committed), so that resuming it has nothing to do; `None` for
/// a run that has not finished, or failed, or was interrupted.
pub fn finished_run(dir: &Path) -> Result<Option<Summary>, EngineError> {
    let path = dir.join("summary.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(&path, e)),
    };
    let summary: Summary = serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    Ok((summary.status == "succeeded").then_some(summary))
}

/// A run that failed, and its directory if it got as far as making one.
#[derive(Debug)]
pub struct RunFailure {
    /// What went wrong.
    pub error: EngineError,
    /// The run directory, with the records and summary of the failed run.
    pub run_dir: Option<PathBuf>,
}

impl From<EngineError> for RunFailure {
    fn from(error: EngineError) -> Self {
        RunFailure { error, run_dir: None }
    }
}

/// Runs a validated job. `job` is the job file as resolved (after `--set`),
/// kept in the run directory.
pub fn run(plan: &Plan, job: &JobFile, registry: &Registry, opts: &RunOptions) -> Result<Report, RunFailure> {
    let started = Instant::now();
    if opts.resume
        && let Some(dir) = &opts.run_dir
        && let Some(summary) = finished_run(dir)?
    {
        opts.progress.finish();
        return Ok(Report { run_dir: dir.clone(), summary, finished_before: true });
    }
    if opts.chaos.is_some_and(|c| c.timeout > 0.0) && plan.platform.timeout.is_none() {
        return Err(EngineError::Chaos("timeout faults need a deadline: set platform.timeout".into()).into());
    }
    let compiled = compile(plan, registry, &opts.cache_dir)?;
    let target = &plan.output.path;
    if plan.output.mode == OutputMode::Error && target.exists() {
        return Err(EngineError::OutputExists(target.clone()).into());
    }
    let (run_id, run_dir) = make_run_dir(opts.run_dir.as_deref(), opts.resume)?;
    let fail = |error: EngineError| RunFailure { error, run_dir: Some(run_dir.clone()) };
    if !opts.resume {
        let job_json = serde_json::to_vec_pretty(job).expect("a job serializes");
        let job_path = run_dir.join("job.json");
        std::fs::write(&job_path, job_json).map_err(|e| fail(EngineError::io(&job_path, e)))?;
    }

    let out_dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let staging = out_dir.join(format!(".fanout-staging-{run_id}"));
    std::fs::create_dir_all(&staging).map_err(|e| fail(EngineError::io(&staging, e)))?;
    let name = target.file_name().map(|n| n.to_owned()).unwrap_or_else(|| "output".into());
    let executed = execute(&compiled, plan, &run_dir, &staging.join(&name), started, opts);
    let (mut state, staged) = match executed {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            opts.progress.finish();
            return Err(fail(e));
        }
    };
    let committed = match state.failure.take() {
        Some(e) => Err(e),
        None => staged.and_then(|(staged, rows)| {
            let manifest = serde_json::json!({ "job": plan.name, "run_id": run_id, "run_dir": run_dir });
            commit(&staged, target, plan.output.format, rows, manifest)
        }),
    };
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::remove_dir_all(run_dir.join("shuffle"));
    if committed.is_ok() {
        // A finished run is not resumed: its saved task outputs can go.
        let _ = std::fs::remove_file(run_dir.join("tasks.data"));
    }
    opts.progress.finish();
    let (output, error) = match committed {
        Ok(info) => (Some(info), None),
        Err(e) => (None, Some(e)),
    };
    let summary = summarize(&run_id, plan, &compiled, &state, started.elapsed(), output, error.as_ref());
    let summary_path = run_dir.join("summary.json");
    let written = std::fs::write(&summary_path, serde_json::to_vec_pretty(&summary).expect("serializes"))
        .map_err(|e| EngineError::io(&summary_path, e));
    match (error, written) {
        (Some(e), _) | (None, Err(e)) => Err(fail(e)),
        (None, Ok(())) => Ok(Report { run_dir, summary, finished_before: false }),
    }
}

/// `.fanout/runs/<UTC time>-<pid>` or the given directory, and its id.
fn make_run_dir(given: Option<&Path>, resume: bool) -> Result<(String, PathBuf), EngineError> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(['-', ':'], "");
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from(".fanout/runs").join(format!("{stamp}-{}", std::process::id())),
    };
    if resume && !dir.join("job.json").is_file() {
        return Err(EngineError::io(&dir, std::io::Error::other("not a run directory (no job.json)")));
    }
    // The id is the directory's name, the same when the run resumes (so its
    // staging directory is the same too).
    let id = dir.file_name().map_or_else(|| stamp.clone(), |n| n.to_string_lossy().into_owned());
    // A run that failed or was interrupted may be resumed (its failed
    // tasks run again); one that succeeded is not run again (see `run`).
    if !resume && dir.join("summary.json").exists() {
        return Err(EngineError::io(&dir, std::io::Error::other("this run directory already holds a finished run")));
    }
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    Ok((id, dir))
}

/// What a run measured, for the summary.
pub(crate) struct RunState {
    /// Statistics per stage and step kind: index `stage * 3 + kind`.
    pub(crate) stats: Vec<StageStats>,
    pub(crate) splits: u64,
    pub(crate) input_bytes: u64,
    pub(crate) input_records: u64,
    pub(crate) spilled: u64,
    pub(crate) concurrency: usize,
    pub(crate) failure: Option<EngineError>,
    /// Tasks that failed for good.
    pub(crate) failures: Vec<TaskFailure>,
    /// Tasks taken from the journal of an earlier run.
    pub(crate) resumed: u64,
    /// Backup tasks started for stragglers.
    pub(crate) backups: u64,
}

/// The index of a step's statistics.
pub(crate) fn stat_index(step: Step) -> usize {
    step.stage() * 3
        + match step {
            Step::Map(_) => 0,
            Step::Combine(_) => 1,
            Step::Reduce(_) => 2,
        }
}

/// A task on its way to a worker.
struct Task {
    id: u64,
    input: Input,
    queued: Instant,
    /// A backup of a straggler, not its first run.
    backup: bool,
}

impl Task {
    fn new(id: u64, input: Input, backup: bool) -> Task {
        Task { id, input, queued: Instant::now(), backup }
    }
}

/// A task's input.
#[derive(Clone)]
enum Input {
    Split(Split),
    Partition(usize),
    /// A partition taken from its shuffle (for tasks that may get a
    /// backup, which needs the same batches).
    Taken(usize, Vec<RecordBatch>),
}

/// A counting semaphore for per-stage concurrency.
struct Limit {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Limit {
    fn acquire(&self) {
        let mut free = self.free.lock().expect("not poisoned");
        while *free == 0 {
            free = self.cv.wait(free).expect("not poisoned");
        }
        *free -= 1;
    }

    fn release(&self) {
        *self.free.lock().expect("not poisoned") += 1;
        self.cv.notify_one();
    }
}

/// A worker slot, with its containers (one per stage and kind).
struct Worker {
    id: usize,
    containers: Vec<Option<Container>>,
    /// When each container last finished an invocation (for keep-alive).
    last_used: Vec<Instant>,
    /// The input file this slot read last, kept open.
    files: OpenFiles,
    /// Counts not yet added to the shared ones (adding them once a task
    /// group keeps workers off each other's cache lines).
    counts: Counts,
    /// Task outputs for the gather, handed over once a task group.
    gathered: Vec<(u64, Vec<RecordBatch>)>,
    /// Finished tasks for the journal, handed over in bunches (see
    /// `Journal::hand_over`).
    journaled: crate::journal::Local,
}

impl Worker {
    /// Drops container `at` if it has been idle past `keep_alive` (a
    /// worker process is killed with it).
    fn retire(&mut self, at: usize, keep_alive: Option<std::time::Duration>) {
        if keep_alive.is_some_and(|k| self.last_used[at].elapsed() > k) {
            self.containers[at] = None;
        }
    }

    /// The next task group; None once there are no more. A slot about to
    /// wait hands the tasks it has not journaled yet to the `journal`
    /// first (an error goes to `failed`). With a keep-alive, a slot
    /// waiting for tasks still retires its containers as they pass it (a
    /// lambda process is not left running while its slot idles).
    fn next_group(
        &mut self,
        rx: &crossbeam_channel::Receiver<Vec<Task>>,
        keep_alive: Option<std::time::Duration>,
        journal: Option<&Journal>,
        failed: impl Fn(EngineError),
    ) -> Option<Vec<Task>> {
        match rx.try_recv() {
            Ok(group) => return Some(group),
            Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
        // No task waits: journal what the slot holds before it waits.
        if let Some(journal) = journal
            && let Err(e) = journal.hand_over(&mut self.journaled, true)
        {
            failed(e);
        }
        let Some(keep) = keep_alive else { return rx.recv().ok() };
        loop {
            let Some(wait) = self.next_expiry(keep) else { return rx.recv().ok() };
            match rx.recv_timeout(wait) {
                Ok(group) => return Some(group),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => self.retire_idle(keep_alive),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// How long until the next of this slot's containers passes `keep`
    /// (a millisecond past it); None when it holds none.
    fn next_expiry(&self, keep: std::time::Duration) -> Option<std::time::Duration> {
        (self.containers.iter().zip(&self.last_used))
            .filter(|(c, _)| c.is_some())
            .map(|(_, used)| keep.saturating_sub(used.elapsed()) + std::time::Duration::from_millis(1))
            .min()
    }

    /// Called by a slot with no tasks left in the phase: counts it out of
    /// `running`, and while other slots still run (and it holds containers
    /// that a keep-alive will retire) retires them as they pass it.
    fn idle_until_done(
        &mut self,
        running: &(std::sync::Mutex<usize>, std::sync::Condvar),
        keep_alive: Option<std::time::Duration>,
    ) {
        let (count, done) = running;
        let mut n = count.lock().expect("not poisoned");
        *n -= 1;
        if *n == 0 {
            done.notify_all();
        }
        let Some(keep) = keep_alive else { return };
        while *n > 0 {
            let Some(wait) = self.next_expiry(keep) else { return };
            n = done.wait_timeout(n, wait).expect("not poisoned").0;
            self.retire_idle(keep_alive);
        }
    }

    /// Drops every container idle past `keep_alive`.
    fn retire_idle(&mut self, keep_alive: Option<std::time::Duration>) {
        if keep_alive.is_some() {
            for at in 0..self.containers.len() {
                self.retire(at, keep_alive);
            }
        }
    }
}

/// A worker's counts since it last published them.
#[derive(Default)]
struct Counts {
    /// Per stage: tasks done, input bytes, records out.
    stages: Vec<[u64; 3]>,
    input_records: u64,
    input_bytes: u64,
}

impl Counts {
    fn publish(&mut self, shared: &Shared<'_>) {
        for (stage, c) in self.stages.iter_mut().enumerate() {
            if c[0] > 0 {
                let p = &shared.progress[stage];
                p.done.fetch_add(c[0], Relaxed);
                p.bytes.fetch_add(c[1], Relaxed);
                p.records.fetch_add(c[2], Relaxed);
                *c = [0; 3];
            }
        }
        if self.input_bytes > 0 || self.input_records > 0 {
            shared.input_records.fetch_add(std::mem::take(&mut self.input_records), Relaxed);
            shared.input_bytes.fetch_add(std::mem::take(&mut self.input_bytes), Relaxed);
        }
    }
}

/// Everything the workers share during a run.
struct Shared<'a> {
    compiled: &'a Compiled,
    plan: &'a Plan,
    chaos: Option<Chaos>,
    /// Every task that failed for good, tolerated or not.
    failures: Mutex<Vec<TaskFailure>>,
    /// Failed tasks of the phase running now.
    phase_failures: AtomicU64,
    /// Where failed tasks are listed.
    failures_path: PathBuf,
    /// Completed tasks, saved for a resume.
    journal: Option<Journal>,
    /// Tasks taken from the journal instead of run.
    resumed: AtomicU64,
    /// The running phase's tasks, for stragglers.
    flight: Flight<Input>,
    /// Backup invocations started.
    backups: AtomicU64,
    /// Per worker: time spent on tasks, for sizing task groups.
    busy: Vec<Busy>,
    started: Instant,
    log: Arc<Log>,
    /// Set when the run stops early: a failure, or an interrupt.
    stop: Arc<Stop>,
    failure: Mutex<Option<EngineError>>,
    next_container: AtomicU64,
    shuffles: Vec<Option<Shuffle<'a>>>,
    gather: Mutex<Option<Gather>>,
    progress: Vec<Arc<StageProgress>>,
    limits: Vec<Option<Limit>>,
    input_records: AtomicU64,
    input_bytes: AtomicU64,
}

impl Shared<'_> {
    fn micros(&self, t: Instant) -> u64 {
        // Not `as_micros`: its 128-bit division is most of this.
        let d = t.saturating_duration_since(self.started);
        d.as_secs() * 1_000_000 + u64::from(d.subsec_micros())
    }

    /// Records a failed task; whether the job tolerates it (so far: a
    /// percentage threshold is checked when the phase ends).
    fn tolerate(&self, f: &TaskFailure) -> bool {
        let mut failures = self.failures.lock().expect("not poisoned");
        failures.push(f.clone());
        // Listed at once, so that a run killed later still reports it when
        // resumed (the list is rewritten whole at the end). A resumed run
        // kept only the failures of tasks it does not run again.
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.failures_path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, failure_line(f).as_bytes()));
        drop(failures);
        let failed = self.phase_failures.fetch_add(1, Relaxed) + 1;
        let p = &self.plan.platform;
        match (p.tolerated_failure_count, p.tolerated_failure_percent) {
            (None, None) => false,
            (Some(count), _) if failed > count => false,
            _ => true,
        }
    }

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

type Staged = Result<(PathBuf, u64), EngineError>;

fn execute(
    compiled: &Compiled,
    plan: &Plan,
    run_dir: &Path,
    staged: &Path,
    started: Instant,
    opts: &RunOptions,
) -> Result<(RunState, Staged), EngineError> {
    let concurrency = plan.platform.concurrency.max(1);
    let used = AtomicU64::new(0);
    let shuffles = compiled
        .stages
        .iter()
        .map(|s| {
            s.key.as_ref().map(|key| {
                let dir = run_dir.join("shuffle").join(&s.name);
                Shuffle::new(s.function.output_schema(), key.clone(), s.partitions, opts.shuffle_memory, &used, dir)
            })
        })
        .collect();
    let gather = Gather::new(
        compiled.output.clone(),
        plan.output.format,
        staged.to_path_buf(),
        compiled.sort.clone(),
        plan.output.limit,
    )?;
    let progress = opts.progress.register(compiled.stages.iter().map(|s| s.name.clone()));
    let limits = compiled
        .stages
        .iter()
        .map(|s| (s.concurrency < concurrency).then(|| Limit { free: Mutex::new(s.concurrency), cv: Condvar::new() }))
        .collect();
    // A resumed run reports the whole run: the interrupted part's
    // invocations and failed tasks count too.
    let steps = compiled.stages.len() * 3;
    let mut earlier_stats = vec![StageStats::default(); steps];
    let mut earlier_failures = Vec::new();
    if opts.resume {
        let step_of = |stage: &str, phase: &str| {
            let s = compiled.stages.iter().position(|c| c.name == stage)?;
            let kind = ["map", "combine", "reduce"].iter().position(|p| *p == phase)?;
            Some(s * 3 + kind)
        };
        crate::records::replay(run_dir, step_of, &mut earlier_stats)?;
        earlier_failures = read_failures(&run_dir.join("failures.jsonl"))?;
    } else {
        let _ = std::fs::remove_file(run_dir.join("failures.jsonl"));
    }
    let phase_of = |f: &TaskFailure| {
        compiled
            .phases
            .iter()
            .position(|p| p.steps.iter().any(|s| compiled.stages[s.stage()].name == f.stage && s.phase() == f.phase))
    };
    // Each step index's stage and phase, for the records.
    let names = (compiled.stages.iter())
        .flat_map(|s| ["map", "combine", "reduce"].map(|phase| (s.name.clone(), phase)))
        .collect();
    let log = Arc::new(Log::create(&run_dir.join(crate::records::FILE), opts.resume, names)?);
    let journal = opts.journal.then(|| Journal::open(run_dir, opts.resume, log.clone())).transpose()?;
    // A failed task that was journaled was tolerated: it stays failed. One
    // that was not (it failed the run, or the run stopped before its line
    // was written) runs again, and counts only if it fails again.
    earlier_failures.retain(|f| journal.as_ref().zip(phase_of(f)).is_some_and(|(j, phase)| j.has(phase, f.task)));
    let earlier_by_phase: Vec<u64> = (0..compiled.phases.len())
        .map(|i| earlier_failures.iter().filter(|f| phase_of(f) == Some(i)).count() as u64)
        .collect();
    let shared = Shared {
        compiled,
        plan,
        chaos: opts.chaos,
        failures: Mutex::new(earlier_failures),
        failures_path: run_dir.join("failures.jsonl"),
        phase_failures: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        flight: Flight::default(),
        backups: AtomicU64::new(0),
        busy: (0..concurrency).map(|_| Busy::default()).collect(),
        started,
        journal,
        log,
        stop: opts.stop.clone(),
        failure: Mutex::new(None),
        next_container: AtomicU64::new(0),
        shuffles,
        gather: Mutex::new(Some(gather)),
        progress,
        limits,
        input_records: AtomicU64::new(0),
        input_bytes: AtomicU64::new(0),
    };
    let mut workers: Vec<(Worker, Recorder<'_>)> = (0..concurrency)
        .map(|id| {
            let containers = (0..steps).map(|_| None).collect();
            let last_used = vec![Instant::now(); steps];
            let counts = Counts { stages: vec![[0; 3]; compiled.stages.len()], ..Counts::default() };
            (
                Worker {
                    id,
                    containers,
                    last_used,
                    files: OpenFiles::default(),
                    counts,
                    gathered: Vec::new(),
                    journaled: Default::default(),
                },
                Recorder::new(&shared.log, steps),
            )
        })
        .collect();
    let mut splits = 0;
    for (index, phase) in compiled.phases.iter().enumerate() {
        shared.phase_failures.store(earlier_by_phase[index], Relaxed);
        let n = run_phase(&shared, index, phase, &mut workers);
        if phase.source.is_none() {
            splits = n;
        }
        let failed = shared.phase_failures.load(Relaxed);
        if let Some(percent) = plan.platform.tolerated_failure_percent
            && failed > 0
            && failed as f64 * 100.0 > percent * n as f64
        {
            shared.fail(EngineError::TooManyFailures { failed, tasks: n, percent });
        }
        if shared.failed() {
            break;
        }
    }
    let mut stats = earlier_stats;
    for (_, r) in &mut workers {
        r.flush()?;
        for (s, w) in stats.iter_mut().zip(&r.stats) {
            s.merge(w);
        }
    }
    if let Some(j) = &shared.journal {
        j.finish(!shared.failed())?;
    }
    // An interrupted run says so, whatever its cancelled invocations said.
    if let Some(signal) = shared.stop.interrupted() {
        *shared.failure.lock().expect("not poisoned") = Some(EngineError::Interrupted { signal });
    }
    let failures = dedupe(std::mem::take(&mut *shared.failures.lock().expect("not poisoned")));
    let path = run_dir.join("failures.jsonl");
    if failures.is_empty() {
        // A resumed run whose failed tasks all succeeded this time.
        let _ = std::fs::remove_file(&path);
    } else {
        let lines: String = failures.iter().map(failure_line).collect();
        std::fs::write(&path, lines).map_err(|e| EngineError::io(&path, e))?;
    }
    let failure = shared.failure.lock().expect("not poisoned").take();
    let gather = shared.gather.lock().expect("not poisoned").take().expect("taken once");
    let staged = match &failure {
        Some(_) => Err(EngineError::io(staged, std::io::Error::other("not committed"))),
        None => gather.finish(),
    };
    let spilled = shared.shuffles.iter().flatten().map(|s| s.spilled.load(Relaxed)).sum();
    let state = RunState {
        resumed: shared.resumed.load(Relaxed),
        backups: shared.backups.load(Relaxed),
        stats,
        splits,
        input_bytes: shared.input_bytes.load(Relaxed),
        input_records: shared.input_records.load(Relaxed),
        spilled,
        concurrency,
        failure,
        failures,
    };
    Ok((state, staged))
}

/// The failed tasks an interrupted run listed in `path`.
fn read_failures(path: &Path) -> Result<Vec<TaskFailure>, EngineError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let phase = match v["phase"].as_str() {
            Some("combine") => "combine",
            Some("reduce") => "reduce",
            _ => "map",
        };
        out.push(TaskFailure {
            stage: text("stage"),
            phase,
            task: v["task"].as_u64().unwrap_or_default(),
            attempt: v["attempts"].as_u64().unwrap_or_default() as u32,
            input: text("input"),
            message: text("error"),
        });
    }
    Ok(dedupe(out))
}

/// One line of `failures.jsonl`.
fn failure_line(f: &TaskFailure) -> String {
    let v = serde_json::json!({
        "stage": f.stage, "phase": f.phase, "task": f.task, "input": f.input,
        "attempts": f.attempt, "error": f.message,
    });
    format!("{v}\n")
}

/// Keeps the last failure of each task (a task redone after a crash may
/// have failed before it).
fn dedupe(failures: Vec<TaskFailure>) -> Vec<TaskFailure> {
    let mut last = std::collections::HashMap::new();
    for (i, f) in failures.iter().enumerate() {
        last.insert((f.stage.clone(), f.phase, f.task), i);
    }
    let mut out = failures;
    let mut i = 0;
    out.retain(|f| {
        i += 1;
        last[&(f.stage.clone(), f.phase, f.task)] == i - 1
    });
    out
}

/// Takes task `task`'s output from the journal, if an earlier run completed
/// it, and sends it on as if the task had just run. A split task's input
/// (`split`) counts as read, as it was before the resume.
fn resumed(
    shared: &Shared<'_>,
    index: usize,
    phase: &Phase,
    task: u64,
    split: Option<&Split>,
    counted: &[&Arc<StageProgress>],
) -> bool {
    let Some(journal) = &shared.journal else { return false };
    match journal.completed(index, task, &sink_schema(shared, phase)) {
        Ok(None) => false,
        Ok(Some(done)) => {
            shared.resumed.fetch_add(1, Relaxed);
            let bytes = split.map_or(0, Split::bytes);
            if split.is_some() {
                shared.input_bytes.fetch_add(bytes, Relaxed);
                shared.input_records.fetch_add(done.input_records, Relaxed);
            }
            for p in counted {
                p.finish_task(bytes, 0);
            }
            if let Err(e) = sink(shared, phase, task, done.batches) {
                shared.fail(e);
            }
            true
        }
        Err(e) => {
            shared.fail(e);
            true
        }
    }
}

/// The schema of what a phase's tasks send to its sink.
fn sink_schema(shared: &Shared<'_>, phase: &Phase) -> arrow_schema::SchemaRef {
    match phase.sink {
        Sink::Gather => shared.compiled.output.clone(),
        Sink::Shuffle(s) => shared.compiled.stages[s].function.output_schema(),
    }
}

/// Sends a task's output to its phase's sink.
fn sink(shared: &Shared<'_>, phase: &Phase, task: u64, out: Vec<RecordBatch>) -> Result<(), EngineError> {
    match phase.sink {
        Sink::Gather => shared.gather.lock().expect("not poisoned").as_mut().expect("open").push(task, out),
        Sink::Shuffle(s) => shared.shuffles[s].as_ref().expect("a keyed stage has a shuffle").insert(task, out),
    }
}

/// Most tasks in one channel message.
const GROUP_TASKS: usize = 32;
/// The work one channel message should carry: tasks are grouped only as
/// far as their measured time stays under this, so that tiny tasks share
/// the hand-off while costly ones spread over every worker.
const GROUP_TIME_NANOS: u64 = 100_000;

/// Time a worker spent on its tasks so far in the phase (each on a cache
/// line of its own: only its worker writes it).
#[repr(align(128))]
#[derive(Default)]
struct Busy {
    nanos: AtomicU64,
    tasks: AtomicU64,
}

/// How many tasks the next message carries: one until tasks have been
/// measured, then as many as fit [`GROUP_TIME_NANOS`] at the mean task
/// time, up to [`GROUP_TASKS`].
fn group_size(shared: &Shared<'_>) -> usize {
    let (mut nanos, mut tasks) = (0, 0);
    for b in &shared.busy {
        nanos += b.nanos.load(Relaxed);
        tasks += b.tasks.load(Relaxed);
    }
    if tasks == 0 {
        return 1;
    }
    let mean = (nanos / tasks).max(1);
    (GROUP_TIME_NANOS / mean).clamp(1, GROUP_TASKS as u64) as usize
}
/// Split bytes past which a group is sent: a task of this size or more
/// travels alone.
const GROUP_BYTES: u64 = 256 * 1024;

/// Runs one phase's tasks on the workers; returns the number of tasks.
fn run_phase(shared: &Shared<'_>, index: usize, phase: &Phase, workers: &mut [(Worker, Recorder<'_>)]) -> u64 {
    // Tasks travel in small groups: many tiny splits share one channel
    // message, a large split or a partition goes alone.
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Task>>(workers.len() * 2);
    let mut count = 0;
    // Tasks sent to the slots: the phase's tasks less those resumed.
    let mut sent = 0;
    shared.flight.reset();
    for b in &shared.busy {
        b.nanos.store(0, Relaxed);
        b.tasks.store(0, Relaxed);
    }
    // Slots still running this phase's tasks (see `Worker::idle_until_done`).
    let running = (std::sync::Mutex::new(workers.len()), std::sync::Condvar::new());
    std::thread::scope(|scope| {
        for (worker, recorder) in workers.iter_mut() {
            let rx = rx.clone();
            let running = &running;
            scope.spawn(move || {
                let busy = &shared.busy[worker.id];
                let keep_alive = shared.plan.platform.containers.keep_alive;
                while let Some(group) = worker.next_group(&rx, keep_alive, shared.journal.as_ref(), |e| shared.fail(e))
                {
                    let began = Instant::now();
                    let n = group.len() as u64;
                    for t in group {
                        if shared.failed() {
                            continue;
                        }
                        if let Err(e) = run_task(shared, index, phase, worker, recorder, t) {
                            shared.fail(e);
                        }
                    }
                    busy.nanos.fetch_add(began.elapsed().as_nanos() as u64, Relaxed);
                    busy.tasks.fetch_add(n, Relaxed);
                    worker.counts.publish(shared);
                    // Tasks are journaled in bunches while more wait (and
                    // before the slot waits: see `next_group`).
                    if let Some(journal) = &shared.journal
                        && let Err(e) = journal.hand_over(&mut worker.journaled, false)
                    {
                        shared.fail(e);
                    }
                    worker.retire_idle(keep_alive);
                    if !worker.gathered.is_empty() {
                        let mut gather = shared.gather.lock().expect("not poisoned");
                        let pushed = worker
                            .gathered
                            .drain(..)
                            .try_for_each(|(task, out)| gather.as_mut().expect("open").push(task, out));
                        if let Err(e) = pushed {
                            drop(gather);
                            shared.fail(e);
                        }
                    }
                }
                if let Some(journal) = &shared.journal
                    && let Err(e) = journal.hand_over(&mut worker.journaled, true)
                {
                    shared.fail(e);
                }
                if let Err(e) = recorder.flush() {
                    shared.fail(e);
                }
                worker.idle_until_done(running, keep_alive);
            });
        }
        drop(rx);
        let counted: Vec<&Arc<StageProgress>> = phase
            .steps
            .iter()
            .filter(|s| !matches!(s, Step::Combine(_)))
            .map(|s| &shared.progress[s.stage()])
            .collect();
        let alone =
            shared.plan.platform.backups || phase.steps.iter().any(|s| shared.compiled.stages[s.stage()].external);
        match phase.source {
            None => {
                let mut group = Vec::new();
                let mut bytes = 0;
                for split in shared.compiled.dataset.splits() {
                    if shared.failed() {
                        break;
                    }
                    match split {
                        Ok(split) => {
                            count += 1;
                            // The running total, for the progress display: not
                            // at every split, to keep off the workers' lines.
                            if count % 64 == 1 {
                                for p in &counted {
                                    p.total.store(count, Relaxed);
                                }
                            }
                            if resumed(shared, index, phase, split.index, Some(&split), &counted) {
                                continue;
                            }
                            sent += 1;
                            bytes += split.bytes();
                            group.push(Task::new(split.index, Input::Split(split), false));
                            // With backups, tasks go one by one: a straggler must not
                            // hold up the tasks grouped behind it. So do tasks of
                            // functions outside the process, whose invocations cost
                            // far more than the hand-off.
                            let most = if alone { 1 } else { group_size(shared) };
                            if group.len() >= most || bytes >= GROUP_BYTES {
                                let _ = tx.send(std::mem::take(&mut group));
                                bytes = 0;
                            }
                        }
                        Err(e) => shared.fail(EngineError::Input(e)),
                    }
                }
                if !group.is_empty() {
                    let _ = tx.send(group);
                }
                // Until every split sent is done, back up the stragglers.
                backups(shared, &tx, sent);
            }
            Some(stage) => {
                let n = shared.shuffles[stage].as_ref().expect("a keyed stage has a shuffle").partitions();
                for p in &counted {
                    p.total.store(n as u64, Relaxed);
                    p.total_known.store(true, Relaxed);
                }
                for part in 0..n {
                    if shared.failed() {
                        break;
                    }
                    count += 1;
                    if resumed(shared, index, phase, part as u64, None, &counted) {
                        // Its shuffle input is not needed again.
                        let shuffle = shared.shuffles[stage].as_ref().expect("a keyed stage has a shuffle");
                        if let Err(e) = shuffle.take(part) {
                            shared.fail(e);
                        }
                        continue;
                    }
                    sent += 1;
                    let _ = tx.send(vec![Task::new(part as u64, Input::Partition(part), false)]);
                }
                backups(shared, &tx, sent);
            }
        }
        for p in &counted {
            if phase.source.is_none() {
                p.total.store(count, Relaxed);
            }
            p.total_known.store(true, Relaxed);
        }
        drop(tx);
    });
    count
}

/// Until the `sent` tasks of the phase are decided, backs up its
/// stragglers (when the platform has backups). Tasks taken from the
/// journal were never sent, and are not waited for.
fn backups(shared: &Shared<'_>, tx: &crossbeam_channel::Sender<Vec<Task>>, sent: u64) {
    let p = &shared.plan.platform;
    while p.backups && !shared.failed() && shared.flight.finished() < sent {
        for (task, input) in shared.flight.stragglers(sent, p.backup_when_done, p.backup_after, Instant::now()) {
            shared.backups.fetch_add(1, Relaxed);
            let _ = tx.send(vec![Task::new(task, input, true)]);
        }
        shared.stop.sleep(std::time::Duration::from_millis(5));
    }
}

/// Reads a task's input: a split's records, or a partition's batches.
fn load(
    shared: &Shared<'_>,
    files: &mut OpenFiles,
    counts: &mut Counts,
    input: &Input,
    stage: Option<usize>,
) -> Result<(Vec<RecordBatch>, u64), EngineError> {
    match input {
        Input::Split(split) => {
            let batches = shared.compiled.dataset.read_all_with(split, files).map_err(EngineError::Input)?;
            let records: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            counts.input_records += records;
            counts.input_bytes += split.bytes();
            Ok((batches, split.bytes()))
        }
        Input::Partition(p) => {
            let batches = take(shared, stage, *p)?;
            let bytes = batches.iter().map(|b| b.get_array_memory_size() as u64).sum();
            Ok((batches, bytes))
        }
        Input::Taken(_, batches) => {
            let bytes = batches.iter().map(|b| b.get_array_memory_size() as u64).sum();
            Ok((batches.clone(), bytes))
        }
    }
}

/// Takes partition `p` of keyed stage `stage`'s shuffle.
fn take(shared: &Shared<'_>, stage: Option<usize>, p: usize) -> Result<Vec<RecordBatch>, EngineError> {
    let shuffle = shared.shuffles[stage.expect("a partition belongs to a keyed stage")].as_ref();
    shuffle.expect("a keyed stage has a shuffle").take(p)
}

fn describe(input: &Input) -> String {
    match input {
        Input::Split(s) => s.to_string(),
        Input::Partition(p) | Input::Taken(p, _) => format!("partition {p}"),
    }
}

fn run_task(
    shared: &Shared<'_>,
    index: usize,
    phase: &Phase,
    worker: &mut Worker,
    recorder: &mut Recorder<'_>,
    t: Task,
) -> Result<(), EngineError> {
    let Task { id: task, mut input, queued, backup } = t;
    // Without backups each task runs once: nothing to track.
    let tracked = shared.plan.platform.backups;
    if tracked {
        // A backup of a partition needs its batches: take them now.
        if let Input::Partition(p) = input {
            input = Input::Taken(p, take(shared, phase.source, p)?);
        }
        if !shared.flight.start(task, &input, backup, Instant::now()) {
            return Ok(());
        }
    }
    let (out, read) = match run_steps(shared, phase, worker, recorder, task, &input, queued, backup) {
        // The first result of a task wins; a straggler's late twin is dropped.
        Ok(_) if tracked && shared.flight.finish(task, Instant::now()) == Ended::Dropped => return Ok(()),
        Ok(done) => done,
        Err(EngineError::Task(f)) => {
            // A run that fails while its twin still runs leaves the task
            // to the twin: a task fails only when all its runs have.
            if tracked && shared.flight.fail(task) == Ended::Dropped {
                return Ok(());
            }
            if !shared.tolerate(&f) {
                return Err(EngineError::Task(f));
            }
            // A tolerated failure contributes no output.
            (Vec::new(), 0)
        }
        Err(e) => return Err(e),
    };
    if let Some(journal) = &shared.journal {
        journal.record(&mut worker.journaled, index, task, read, &sink_schema(shared, phase), &out)?;
        // The task's invocation records reach the log before the task is
        // journaled, so that a resumed run's report misses none of them.
        recorder.take_into(&mut worker.journaled.batch.records);
    }
    match phase.sink {
        // Outputs for the gather wait for the end of the task group: one
        // lock of the gather per group, not per task.
        Sink::Gather => {
            worker.gathered.push((task, out));
            Ok(())
        }
        Sink::Shuffle(_) => sink(shared, phase, task, out),
    }
}

/// Runs a task's steps, each invocation retried on transient failures;
/// returns the output and the records read from the task's split (none
/// for a partition).
#[allow(clippy::too_many_arguments)]
fn run_steps(
    shared: &Shared<'_>,
    phase: &Phase,
    worker: &mut Worker,
    recorder: &mut Recorder<'_>,
    task: u64,
    input: &Input,
    queued: Instant,
    backup: bool,
) -> Result<(Vec<RecordBatch>, u64), EngineError> {
    let compiled = shared.compiled;
    let platform = &shared.plan.platform;
    let mut data: Option<Vec<RecordBatch>> = None;
    let is_split = matches!(input, Input::Split(_));
    if phase.steps.is_empty() {
        let out = load(shared, &mut worker.files, &mut worker.counts, input, phase.source)?.0;
        let read = if is_split { out.iter().map(|b| b.num_rows() as u64).sum() } else { 0 };
        return Ok((out, read));
    }
    let mut split_records = 0;
    let mut queued_at = queued;
    for &step in &phase.steps {
        let stage = &compiled.stages[step.stage()];
        let limit = shared.limits[step.stage()].as_ref();
        let started = Instant::now();
        // The first step over a split passes it on (a function may read it
        // itself instead of being sent records).
        let split = match (&data, input) {
            (None, Input::Split(s)) => Some(s),
            _ => None,
        };
        let (batches, bytes_in) = match data.take() {
            Some(d) => {
                let bytes = d.iter().map(|b| b.get_array_memory_size() as u64).sum();
                (d, bytes)
            }
            None if split.is_some() && stage.function.reads_split() => {
                let bytes = split.map_or(0, Split::bytes);
                worker.counts.input_bytes += bytes;
                (Vec::new(), bytes)
            }
            // Bad input fails the task at once: a retry would read the same.
            None => load(shared, &mut worker.files, &mut worker.counts, input, phase.source)
                .map_err(|e| task_error(stage.name.clone(), step, task, input, 1, e.to_string()))?,
        };
        let first = data.is_none() && is_split && split.is_some();
        let mut records_in: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let mut counted_read = false;
        let mut attempt = 1;
        let mut started = Some(started);
        loop {
            if let Some(l) = limit {
                l.acquire();
            }
            let began = started.take().unwrap_or_else(Instant::now);
            // A backup draws its own faults.
            let draw = if backup { attempt + 1000 } else { attempt };
            let (container, cold, result, read) =
                invoke(shared, worker, step, task, attempt, draw, batches.clone(), split);
            // A function that read its split itself may say how many records.
            if let Some(n) = read {
                records_in = n;
                if !counted_read {
                    worker.counts.input_records += n;
                    counted_read = true;
                }
            }
            let finished = Instant::now();
            if let Some(l) = limit {
                l.release();
            }
            let (status, error, bytes_out, records_out) = match &result {
                Ok(out) => (
                    "ok",
                    None,
                    out.iter().map(|b| b.get_array_memory_size() as u64).sum(),
                    out.iter().map(|b| b.num_rows() as u64).sum(),
                ),
                Err(e) => ("error", Some(e.message.as_str()), 0, 0),
            };
            let billed = platform.pricing.billed(finished - began);
            recorder.record(
                stat_index(step),
                &InvocationRecord {
                    stage: &stage.name,
                    phase: step.phase(),
                    task,
                    attempt,
                    backup,
                    worker: worker.id,
                    container,
                    cold,
                    queued_us: shared.micros(queued_at),
                    started_us: shared.micros(began),
                    finished_us: shared.micros(finished),
                    billed_us: billed.as_micros() as u64,
                    status,
                    error,
                    bytes_in,
                    records_in,
                    bytes_out,
                    records_out,
                },
            )?;
            queued_at = finished;
            match result {
                Ok(out) => {
                    if first {
                        split_records = records_in;
                    }
                    if !matches!(step, Step::Combine(_)) {
                        let c = &mut worker.counts.stages[step.stage()];
                        c[0] += 1;
                        c[1] += bytes_in;
                        c[2] += records_out;
                    }
                    data = Some(out);
                    break;
                }
                // Another run of the task finished first: this one's result
                // would be dropped anyway.
                Err(_) if platform.backups && shared.flight.is_finished(task) => return Ok((Vec::new(), 0)),
                Err(e) if !e.permanent && attempt <= platform.retries && !shared.failed() => {
                    shared.stop.sleep(backoff(platform.backoff, attempt, task));
                    queued_at = Instant::now();
                    attempt += 1;
                }
                Err(e) => return Err(task_error(stage.name.clone(), step, task, input, attempt, e.message)),
            }
        }
    }
    Ok((data.unwrap_or_default(), split_records))
}

/// A standard normal draw from a seed (Box–Muller over two hashes), so an
/// emulated run's cold starts are the same every time.
fn standard_normal(seed: u64) -> f64 {
    let u = |salt: u64| {
        let h = xxhash_rust::xxh3::xxh3_64(&(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
        ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (-2.0 * u(1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u(2)).cos()
}

/// The delay before retry `attempt` (1 = the first retry): the base doubled
/// per attempt, capped at 30 s, with "equal jitter" (half fixed, half
/// random) so that retries of many tasks spread out.
fn backoff(base: std::time::Duration, attempt: u32, task: u64) -> std::time::Duration {
    let full = base.saturating_mul(1 << (attempt - 1).min(16)).min(std::time::Duration::from_secs(30));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&task.to_le_bytes());
    key[8..12].copy_from_slice(&attempt.to_le_bytes());
    key[12..].copy_from_slice(&nanos.to_le_bytes());
    let r = (xxhash_rust::xxh3::xxh3_64(&key) >> 11) as f64 / (1u64 << 53) as f64;
    full / 2 + full.mul_f64(r / 2.0)
}

/// One invocation on the worker's container for `step` (started cold if
/// the slot has none), with chaos applied. Returns the container id,
/// whether it was cold, and the result.
#[allow(clippy::too_many_arguments)]
fn invoke(
    shared: &Shared<'_>,
    worker: &mut Worker,
    step: Step,
    task: u64,
    attempt: u32,
    draw: u32,
    batches: Vec<RecordBatch>,
    split: Option<&Split>,
) -> (u64, bool, Result<Vec<RecordBatch>, FunctionError>, Option<u64>) {
    let stage = &shared.compiled.stages[step.stage()];
    let platform = &shared.plan.platform;
    let timeout = platform.timeout;
    let at = stat_index(step);
    let model = &platform.containers;
    // An idle container past its keep-alive has been retired.
    worker.retire(at, model.keep_alive);
    let slot = &mut worker.containers[at];
    let cold = slot.is_none();
    if cold {
        let id = shared.next_container.fetch_add(1, Relaxed);
        if platform.emulate {
            std::thread::sleep(model.cold_start.sample(standard_normal(id)));
        }
        let init = match step {
            Step::Reduce(_) => stage.function.init_reduce().expect("a keyed stage reduces").map(Instance::Reduce),
            _ => stage.function.init().map(Instance::Map),
        };
        match init {
            // With a deadline or backups, a container runs on its own
            // thread so that a late or losing invocation can be abandoned.
            Ok(instance) => {
                let threaded = timeout.is_some() || platform.backups;
                *slot = Some(Container::start(id, &stage.name, instance, threaded));
            }
            Err(e) => return (id, true, Err(FunctionError { message: format!("init: {}", e.message), ..e }), None),
        }
    }
    if platform.emulate {
        std::thread::sleep(model.overhead);
    }
    let fault = shared.chaos.map_or(Fault::None, |c| c.draw(step.stage(), stat_index(step) % 3, task, draw));
    let container = slot.as_mut().expect("initialised");
    let id = container.id();
    // A threaded container's invocation is abandoned once another run of
    // its task has finished, or the run stops.
    let tracked = platform.backups;
    let cancelled = || shared.failed() || (tracked && shared.flight.is_finished(task));
    let reply = container.call(task, attempt, timeout, fault, batches, split, shared.stop.flag(), &cancelled);
    if model.keep_alive.is_some() {
        worker.last_used[at] = Instant::now();
    }
    if reply.panicked {
        // A panicked or abandoned container is not reused.
        *slot = None;
    }
    (id, cold, reply.result, reply.read)
}

fn task_error(stage: String, step: Step, task: u64, input: &Input, attempt: u32, message: String) -> EngineError {
    EngineError::Task(Box::new(TaskFailure {
        stage,
        phase: step.phase(),
        task,
        attempt,
        input: describe(input),
        message,
    }))
}
