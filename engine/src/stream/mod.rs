//! Streams: a job whose input is records as they arrive (`input.stream`).
//!
//! A source thread cuts the records into batches (`batch_size`, waiting
//! up to `batch_window` to fill one) and hands them, numbered, to worker
//! threads through a bounded channel: a slow function pauses the source.
//! Each worker runs the map stages on its batch, in containers of its own
//! (a function's instance, made at its first call: a cold start). The
//! coordinator takes the batches back in order and, with a keyed last
//! stage, assigns each record to its tumbling window (by its event-time
//! field, or its arrival), runs the stage's combiner on each window's part
//! of the batch and keeps the partials; once the watermark (the newest
//! event time less `allowed_lateness`) passes a window's end, the reduce
//! runs over its partials and the window is committed as one file of the
//! output directory. Records whose window had closed are late: they go to
//! `late/` in the run directory, counted. Without a keyed stage, the
//! records are committed as a part file at each checkpoint.
//!
//! Every `checkpoint_every`, the source's position, the open windows'
//! partials and the counts are checkpointed together ([`checkpoint`]).
//! Output files have names that the records decide (a window's start, a
//! part's number kept in the checkpoint), so a resume after `kill -9`
//! replays from the checkpoint and writes the same files again: nothing is
//! lost and nothing is counted twice.

mod checkpoint;
mod source;
mod window;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_datasets::{CsvOptions, Format, Writer};
use fanout_jobs::{InputSource, JobFile, OutputMode, Plan, StreamPlan, StreamSource};
use fanout_workers::{FunctionError, Invocation, MapInstance, ReduceInstance, Registry};
use hdrhistogram::Histogram;

use crate::compile::{CompiledStage, plan_stages};
use crate::error::EngineError;
use crate::options::{Report, RunFailure, RunOptions, Until};
use crate::records::{InvocationRecord, Log, Recorder};
use crate::run_dir::{RunDir, finished_run};
use crate::step::{Step, StepKind};
use crate::summary::{Latency, StreamSummary, Summary, Totals, summarize};
use checkpoint::State;
use source::{DirSource, Piece, Segment, Spool};

/// Plans a stream job's stages against its schema (declared, or text's):
/// what `fanout plan` shows, and the check a run makes first.
pub fn plan_stream(plan: &Plan, registry: &Registry) -> Result<Vec<CompiledStage>, EngineError> {
    let format = plan.input.options.format.unwrap_or(Format::Jsonl);
    let (stages, _, mut errors) = plan_stages(plan, registry, format, None)?;
    // The window's time field, in what the keyed stage reads.
    if errors.is_empty()
        && let Some(w) = plan.stream.as_ref().and_then(|sp| sp.window.as_ref())
        && let Some(field) = &w.time
        && let Some(k) = stages.iter().position(|s| s.key.is_some())
    {
        let schema = match k {
            0 => plan.input.options.schema.clone().unwrap_or_else(fanout_datasets::text::schema),
            k => stages[k - 1].output.clone(),
        };
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let at = ["stream", "window", "time"];
        match schema.field_with_name(field) {
            Err(_) => errors.push(crate::error::CompileError::field(
                &at,
                format!("window.time `{field}` is not a column of what stage `{}` reads ({})", stages[k].name, columns.join(", ")),
            )),
            Ok(f) if !window::is_time_type(f.data_type()) => errors.push(crate::error::CompileError::field(
                &at,
                format!(
                    "window.time `{field}` is {}; an event time is RFC 3339 text, epoch seconds or milliseconds, or a timestamp",
                    f.data_type()
                ),
            )),
            Ok(_) => {}
        }
    }
    match errors.is_empty() {
        true => Ok(stages),
        false => Err(EngineError::Compile(errors)),
    }
}

/// The file in a stream's run directory that keeps its `--until`, so
/// that a resume stops as the run would have.
const UNTIL_FILE: &str = "stream.json";

/// Runs a stream job until `until`, an interrupt, or the end of its input
/// (standard input closed).
pub(crate) fn run(plan: &Plan, job: &JobFile, registry: &Registry, opts: &RunOptions) -> Result<Report, RunFailure> {
    let started = Instant::now();
    let sp = plan.stream.as_ref().expect("a stream job has a stream plan");
    let InputSource::Stream(source) = &plan.input.source else { unreachable!("a stream job reads a stream") };
    if opts.resume
        && let Some(dir) = &opts.run_dir
        && let Some(summary) = finished_run(dir)?
    {
        return Ok(Report { run_dir: dir.clone(), summary, finished_before: true, signal_in_commit: None });
    }
    // A signal drains the stream: what is in flight finishes.
    opts.stop.drain_on_interrupt();
    // The stages are planned before anything is made.
    let stages = plan_stream(plan, registry)?;
    // A new run whose output is taken makes nothing, not even its run
    // directory (which a resume could then take for its own).
    if !opts.resume {
        check_output(plan)?;
    }
    let dir = RunDir::create(opts.run_dir.as_deref(), opts.resume)?;
    let fail = |error: EngineError| RunFailure { error, run_dir: Some(dir.path.clone()) };
    let until = settle_until(&dir.path, opts).map_err(fail)?;
    if !opts.resume {
        dir.write_job(job).map_err(fail)?;
        prepare_output(plan).map_err(fail)?;
    }
    let output_schema = match stages.last() {
        Some(s) => s.output.clone(),
        None => plan.input.options.schema.clone().unwrap_or_else(fanout_datasets::text::schema),
    };
    let restored = checkpoint::load(&dir.path).map_err(fail)?;
    let (state, partials) = restored.unwrap_or_default();
    let source_dir = match source {
        StreamSource::Dir(d) => d.clone(),
        StreamSource::Stdin => dir.path.join("stdin"),
        StreamSource::Http(_) => dir.path.join("http"),
    };
    let reader = DirSource::new(source_dir.clone(), plan.input.options.clone(), state.position.clone(), &dir.path);
    let format = plan.input.options.format.unwrap_or(Format::Jsonl);
    let spool = match source {
        StreamSource::Dir(_) => None,
        StreamSource::Stdin => Some(Spool::start(&source_dir, sp.batch_size, sp.batch_window).map_err(fail)?),
        StreamSource::Http(addr) => {
            Some(Spool::http(&source_dir, addr, &plan.name, format, reader.taken()).map_err(fail)?)
        }
    };
    let log = open_records(plan, &dir.path, opts.resume).map_err(fail)?;
    let mut recorder = Recorder::new(&log, Step::count(stages.len()));
    if opts.resume {
        let step_of = |stage: &str, phase: &str| {
            let s = plan.stages.iter().position(|c| c.name == stage)?;
            Some(Step { stage: s, kind: StepKind::parse(phase)? }.index())
        };
        crate::records::replay(&dir.path, step_of, &mut recorder.stats).map_err(fail)?;
    }
    let mut stream = Stream::new(plan, sp, &stages, output_schema, &dir.path, state, partials, recorder, opts);
    stream.spooled = spool.as_ref().map(|_| source_dir.clone());
    let result = stream.run(reader, spool.as_ref(), until, opts);
    drop(spool);
    let wall = started.elapsed();
    let (ended, error) = match result {
        Ok(ended) => (Some(ended), None),
        Err(e) => (None, Some(e)),
    };
    if let Some(EngineError::Interrupted { .. }) = &error {
        // As a batch run: no summary, so that a resume goes on.
        return Err(fail(error.expect("matched")));
    }
    let summary = stream.summary(&dir.id, plan, wall, ended, error.as_ref());
    let path = dir.path.join("summary.json");
    let text = serde_json::to_vec_pretty(&summary).expect("a summary serializes");
    let written = checkpoint::write_synced(&path, &text);
    dir.tidy(error.is_none());
    if let Some(e) = error {
        return Err(fail(e));
    }
    written.map_err(fail)?;
    Ok(Report { run_dir: dir.path.clone(), summary, finished_before: false, signal_in_commit: None })
}

/// The run's invocation records, appended to on a resume.
fn open_records(plan: &Plan, run_dir: &Path, resume: bool) -> Result<Log, EngineError> {
    let names: Vec<String> = plan.stages.iter().map(|s| s.name.clone()).collect();
    Log::create(&run_dir.join(crate::records::FILE), resume, &names)
}

/// The `--until` a run goes by: a new run's (kept in its directory), or
/// the one the resumed run was started with.
fn settle_until(run_dir: &Path, opts: &RunOptions) -> Result<Until, EngineError> {
    let path = run_dir.join(UNTIL_FILE);
    if opts.resume {
        return match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| EngineError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Until::default()),
            Err(e) => Err(EngineError::io(&path, e)),
        };
    }
    let until = opts.until.unwrap_or_default();
    checkpoint::write_synced(&path, &serde_json::to_vec(&until).expect("serializes"))?;
    Ok(until)
}

/// Refuses an output that is a file, or a directory holding files already
/// (another run's), unless the job overwrites.
fn check_output(plan: &Plan) -> Result<(), EngineError> {
    let out = &plan.output.path;
    if out.exists() && !out.is_dir() {
        return Err(EngineError::io(
            out,
            std::io::Error::other("a stream's output is a directory, and this is a file"),
        ));
    }
    let taken = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if taken && plan.output.mode == OutputMode::Error {
        return Err(EngineError::OutputExists(out.clone()));
    }
    Ok(())
}

/// Makes the output directory. Overwriting, the files an earlier stream
/// wrote there (`window-*` and `part-*` of the output's format, and their
/// unfinished dot-files) go first, so that two runs' windows never mix;
/// other files are left alone.
fn prepare_output(plan: &Plan) -> Result<(), EngineError> {
    let out = &plan.output.path;
    std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
    if plan.output.mode == OutputMode::Overwrite {
        let ext = format!(".{}", plan.output.format.extension());
        for entry in std::fs::read_dir(out).map_err(|e| EngineError::io(out, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bare = name.strip_prefix('.').unwrap_or(&name);
            let ours = (bare.starts_with("window-") || bare.starts_with("part-"))
                && (name.ends_with(&ext) || (name.starts_with('.') && name.ends_with(".tmp")));
            if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::remove_file(entry.path()).map_err(|e| EngineError::io(entry.path(), e))?;
            }
        }
    }
    Ok(())
}

/// A batch on its way to the workers.
struct Work {
    seq: u64,
    batch: RecordBatch,
    segments: Vec<Segment>,
    queued: Instant,
}

/// A batch back from the workers: its map stages' output, or why not
/// (`None`: it was not started, the stream stopping).
struct Done {
    seq: u64,
    result: Result<RecordBatch, Option<EngineError>>,
    segments: Vec<Segment>,
    /// When it was handed to the workers.
    queued: Instant,
    /// The worker that ran it.
    worker: usize,
    /// Its map stages' invocations, failed attempts included.
    calls: Vec<Call>,
}

/// One invocation of a function, as a worker or the coordinator saw it.
#[derive(Debug, Clone)]
struct Call {
    /// The stage, by index.
    stage: usize,
    attempt: u32,
    container: u64,
    cold: bool,
    started: Instant,
    finished: Instant,
    records_in: u64,
    records_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    error: Option<String>,
}

/// Numbers the containers (function instances) of a stream.
static CONTAINERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Why the source stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Until(&'static str),
    InputEnded,
    Signal,
}

/// A window's state besides its partials: when its records arrived (for
/// the latency at commit).
#[derive(Default)]
struct Arrivals(BTreeMap<i64, u64>);

/// The coordinator's state.
struct Stream<'a> {
    recorder: Recorder<'a>,
    /// When the stream started: records' times count from here.
    origin: Instant,
    /// The reduce's and combiner's containers.
    containers: (u64, u64),
    plan: &'a Plan,
    sp: &'a StreamPlan,
    stages: &'a [CompiledStage],
    /// The keyed last stage, when there is one.
    keyed: Option<&'a CompiledStage>,
    output_schema: SchemaRef,
    run_dir: PathBuf,
    state: State,
    partials: BTreeMap<i64, Vec<RecordBatch>>,
    arrivals: BTreeMap<i64, Arrivals>,
    combine: Option<Box<dyn MapInstance>>,
    reduce: Option<Box<dyn ReduceInstance>>,
    /// The part being written (map-only output) and the late records'.
    part: Option<(Writer, PathBuf, u64)>,
    late: Option<(Writer, PathBuf, u64)>,
    /// Arrivals of the rows in `part`.
    part_arrivals: Arrivals,
    latency: Histogram<u64>,
    stop: Arc<crate::stop::Stop>,
    live: bool,
    /// The spool directory the source reads, when fanout spools the
    /// input itself (standard input): its files go once checkpointed.
    spooled: Option<PathBuf>,
}

impl<'a> Stream<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        plan: &'a Plan,
        sp: &'a StreamPlan,
        stages: &'a [CompiledStage],
        output_schema: SchemaRef,
        run_dir: &Path,
        state: State,
        partials: BTreeMap<i64, Vec<RecordBatch>>,
        recorder: Recorder<'a>,
        opts: &RunOptions,
    ) -> Stream<'a> {
        let keyed = stages.last().filter(|s| s.key.is_some());
        let output_schema = match keyed {
            Some(_) => window::windowed_schema(&output_schema),
            None => output_schema,
        };
        let mut state = state;
        state.next_part = state.next_part.max(1);
        state.next_late = state.next_late.max(1);
        Stream {
            recorder,
            origin: Instant::now(),
            containers: (0, 0),
            plan,
            sp,
            stages,
            keyed,
            output_schema,
            run_dir: run_dir.to_path_buf(),
            state,
            partials,
            arrivals: BTreeMap::new(),
            combine: None,
            reduce: None,
            part: None,
            late: None,
            part_arrivals: Arrivals::default(),
            latency: Histogram::new(3).expect("a histogram"),
            stop: opts.stop.clone(),
            live: opts.live,
            spooled: None,
        }
    }

    /// The map stages: all but a keyed last one.
    fn map_stages(&self) -> &'a [CompiledStage] {
        match self.keyed {
            Some(_) => &self.stages[..self.stages.len() - 1],
            None => self.stages,
        }
    }

    /// Runs the stream: the source thread, the workers, and the
    /// coordinator on this thread. Returns why it stopped.
    fn run(
        &mut self,
        mut source: DirSource,
        spool: Option<&Spool>,
        until: Until,
        opts: &RunOptions,
    ) -> Result<&'static str, EngineError> {
        let concurrency = self.plan.platform.concurrency.max(1);
        let (work_tx, work_rx) = crossbeam_channel::bounded::<Work>(concurrency * 2);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
        let (end_tx, end_rx) = crossbeam_channel::bounded::<Result<End, EngineError>>(1);
        let map_stages = self.map_stages();
        let sp = self.sp;
        let stop = opts.stop.clone();
        let ended = spool.map(|s| s.ended.clone());
        let start = Start { records: self.state.counts.records_in, batch: self.state.counts.batches };
        let retrying = Retrying {
            timeout: self.plan.platform.timeout,
            retries: self.plan.platform.retries,
            backoff: self.plan.platform.backoff,
            seed: crate::policy::run_seed(&self.run_dir.to_string_lossy()),
        };
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let end = feed(&mut source, sp, until, start, ended.as_deref(), &stop, &work_tx);
                drop(work_tx);
                let _ = end_tx.send(end);
            });
            for worker in 0..concurrency {
                let (rx, tx, stop) = (work_rx.clone(), done_tx.clone(), opts.stop.clone());
                scope.spawn(move || work(worker, map_stages, &rx, &tx, &stop, retrying));
            }
            drop((work_rx, done_tx));
            self.coordinate(&done_rx, &end_rx)
        })
    }

    /// Takes the batches back in order and applies them, checkpointing as
    /// it goes; at the end, commits what the way it ended calls for.
    fn coordinate(
        &mut self,
        done: &crossbeam_channel::Receiver<Done>,
        end: &crossbeam_channel::Receiver<Result<End, EngineError>>,
    ) -> Result<&'static str, EngineError> {
        let mut next = self.state.counts.batches;
        let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
        let mut last_checkpoint = Instant::now();
        let mut last_line = Instant::now();
        let mut failure: Option<EngineError> = None;
        let mut halted = false;
        let tick = Duration::from_millis(50);
        loop {
            match done.recv_timeout(tick) {
                Ok(d) => {
                    waiting.insert(d.seq, d);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            while failure.is_none()
                && !halted
                && let Some(d) = waiting.remove(&next)
            {
                next += 1;
                match self.apply(d) {
                    Ok(true) => {}
                    // A batch left for the resume: so are those after it.
                    Ok(false) => halted = true,
                    Err(e) => {
                        // The source and the workers stop; what is in flight
                        // is dropped, and the checkpoint stays where it was.
                        self.stop.stop();
                        failure = Some(e);
                    }
                }
            }
            if failure.is_none() && last_checkpoint.elapsed() >= self.sp.checkpoint_every {
                self.checkpoint()?;
                last_checkpoint = Instant::now();
            }
            if self.live && last_line.elapsed() >= Duration::from_secs(1) {
                self.say_progress();
                last_line = Instant::now();
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let end = match end.recv() {
            Ok(Ok(end)) => end,
            Ok(Err(e)) => return Err(e),
            Err(_) => End::Signal,
        };
        match end {
            End::Signal => {
                // Drained: windows due are committed already; the rest
                // wait in the checkpoint for the resume.
                self.checkpoint()?;
                let signal = self.stop.interrupted().unwrap_or(15);
                Err(EngineError::Interrupted { signal })
            }
            End::Until(_) | End::InputEnded => {
                // The input counts as ended: every open window closes.
                let starts: Vec<i64> = self.partials.keys().copied().collect();
                for start in starts {
                    self.emit(start)?;
                }
                self.checkpoint()?;
                if self.live {
                    self.say_progress();
                }
                Ok(match end {
                    End::Until(why) => why,
                    _ => "input ended",
                })
            }
        }
    }

    /// Applies one batch, in order: its records into windows (or the
    /// part), windows that closed committed, the source's position moved.
    /// Returns false for a batch not started (the stream stopping).
    fn apply(&mut self, d: Done) -> Result<bool, EngineError> {
        for call in &d.calls {
            self.record(Step::map(call.stage), d.seq, d.worker, d.queued, call)?;
        }
        let batch = match d.result {
            Ok(b) => b,
            Err(None) => return Ok(false),
            Err(Some(e)) => return Err(e),
        };
        let records: u64 = d.segments.iter().map(|s| s.rows as u64).sum();
        // The arrival of each row of the map stages' output: a map stage
        // may change the row count, so rows are given the arrival of the
        // batch's newest file then.
        let arrivals: Vec<i64> = match batch.num_rows() as u64 == records {
            true => d.segments.iter().flat_map(|s| std::iter::repeat_n(s.arrival_ms, s.rows)).collect(),
            false => vec![d.segments.iter().map(|s| s.arrival_ms).max().unwrap_or(0); batch.num_rows()],
        };
        if batch.num_rows() > 0 {
            match self.keyed {
                Some(stage) => self.window_batch(stage, &batch, &arrivals, &d.segments)?,
                None => {
                    self.write_part(&batch)?;
                    for a in &arrivals {
                        *self.part_arrivals.0.entry(*a).or_default() += 1;
                    }
                }
            }
        }
        for segment in &d.segments {
            self.state.position.advance(segment);
        }
        self.state.counts.records_in += records;
        self.state.counts.batches += 1;
        Ok(true)
    }

    /// Puts a batch's records into their windows, and commits the windows
    /// the watermark has passed.
    fn window_batch(
        &mut self,
        stage: &CompiledStage,
        batch: &RecordBatch,
        arrivals: &[i64],
        segments: &[Segment],
    ) -> Result<(), EngineError> {
        let w = self.sp.window.as_ref().expect("a keyed stream stage has a window");
        let size = w.size.as_millis().max(1) as i64;
        let lateness = self.sp.allowed_lateness.as_millis() as i64;
        let times = match &w.time {
            Some(field) => window::event_times(batch, field).map_err(|e| {
                // Located by file and record where the map stages kept
                // the rows one to one.
                let whose = e.row.and_then(|r| locate_row(segments, batch.num_rows(), r));
                let whose = whose.or_else(|| e.row.map(|r| format!("row {} of the batch", r + 1)));
                let m = match whose {
                    Some(w) => format!("{} ({w})", e.message),
                    None => e.message,
                };
                self.stage_error(stage, m)
            })?,
            None => arrivals.to_vec(),
        };
        let assigned = self.state.clock.assign(&times, size, lateness);
        for (start, rows) in &assigned.windows {
            let part = window::take(batch, rows).map_err(|e| self.stage_error(stage, e.to_string()))?;
            let partial = self.call_combine(stage, part)?;
            self.partials.entry(*start).or_default().extend(partial);
            let seen = self.arrivals.entry(*start).or_default();
            for &r in rows {
                *seen.0.entry(arrivals[r as usize]).or_default() += 1;
            }
        }
        if !assigned.late.is_empty() {
            let late = window::take(batch, &assigned.late).map_err(|e| self.stage_error(stage, e.to_string()))?;
            self.write_late(&late)?;
            self.state.counts.late += late.num_rows() as u64;
        }
        if let Some(mark) = self.state.clock.watermark(lateness) {
            let due: Vec<i64> = self.partials.keys().copied().take_while(|s| s + size <= mark).collect();
            for start in due {
                self.emit(start)?;
            }
        }
        Ok(())
    }

    /// The keyed stage's combiner over one window's part of a batch.
    fn call_combine(&mut self, stage: &CompiledStage, part: RecordBatch) -> Result<Vec<RecordBatch>, EngineError> {
        let cold = self.combine.is_none();
        if cold {
            self.combine = Some(stage.function.init().map_err(|e| self.stage_error(stage, e.message))?);
            self.containers.0 = CONTAINERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (records_in, bytes_in) = (part.num_rows() as u64, part.get_array_memory_size() as u64);
        let inv = Invocation::plain(&stage.name, self.state.counts.batches);
        let started = Instant::now();
        let out = self.combine.as_mut().expect("made above").call(&inv, vec![part]);
        let call = Call {
            stage: stage.index,
            attempt: 1,
            container: self.containers.0,
            cold,
            started,
            finished: Instant::now(),
            records_in,
            records_out: out.as_ref().map_or(0, |o| o.iter().map(|b| b.num_rows() as u64).sum()),
            bytes_in,
            bytes_out: out.as_ref().map_or(0, |o| o.iter().map(|b| b.get_array_memory_size() as u64).sum()),
            error: out.as_ref().err().map(|e| e.message.clone()),
        };
        self.record(Step::combine(stage.index), self.state.counts.batches, 0, started, &call)?;
        out.map_err(|e| self.stage_error(stage, e.message))
    }

    /// Records one invocation of `step`, for the run's records and its
    /// statistics.
    fn record(
        &mut self,
        step: Step,
        task: u64,
        worker: usize,
        queued: Instant,
        call: &Call,
    ) -> Result<(), EngineError> {
        let us = |t: Instant| t.saturating_duration_since(self.origin).as_micros() as u64;
        let took = call.finished.saturating_duration_since(call.started);
        let r = InvocationRecord {
            stage: &self.stages[call.stage].name,
            phase: step.kind.name(),
            task,
            attempt: call.attempt,
            backup: false,
            worker,
            container: call.container,
            cold: call.cold,
            queued_us: us(queued),
            started_us: us(call.started),
            finished_us: us(call.finished),
            billed_us: self.plan.platform.pricing.billed(took).as_micros() as u64,
            status: if call.error.is_none() { "ok" } else { "error" },
            error: call.error.as_deref(),
            bytes_in: call.bytes_in,
            records_in: call.records_in,
            bytes_out: call.bytes_out,
            records_out: call.records_out,
        };
        self.recorder.record(step.index(), &r)
    }

    /// Reduces window `start`'s partials and commits it as one file.
    fn emit(&mut self, start: i64) -> Result<(), EngineError> {
        let stage = self.keyed.expect("windows belong to a keyed stage");
        let partials = self.partials.remove(&start).unwrap_or_default();
        let arrivals = self.arrivals.remove(&start).unwrap_or_default();
        let cold = self.reduce.is_none();
        if cold {
            let made = stage.function.init_reduce().expect("a keyed stage reduces");
            self.reduce = Some(made.map_err(|e| self.stage_error(stage, e.message))?);
            self.containers.1 = CONTAINERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let records_in: u64 = partials.iter().map(|b| b.num_rows() as u64).sum();
        let bytes_in: u64 = partials.iter().map(|b| b.get_array_memory_size() as u64).sum();
        let inv = Invocation::plain(&stage.name, start as u64);
        let started = Instant::now();
        let reduced = self.reduce.as_mut().expect("made above").call(&inv, partials);
        let call = Call {
            stage: stage.index,
            attempt: 1,
            container: self.containers.1,
            cold,
            started,
            finished: Instant::now(),
            records_in,
            records_out: reduced.as_ref().map_or(0, |o| o.iter().map(|b| b.num_rows() as u64).sum()),
            bytes_in,
            bytes_out: reduced.as_ref().map_or(0, |o| o.iter().map(|b| b.get_array_memory_size() as u64).sum()),
            error: reduced.as_ref().err().map(|e| e.message.clone()),
        };
        // A window's reduce is task `start` (its start, epoch ms).
        self.record(Step::reduce(stage.index), start.max(0) as u64, 0, started, &call)?;
        let reduced = reduced.map_err(|e| self.stage_error(stage, e.message))?;
        let rows = call.records_out;
        let size = self.sp.window.as_ref().map_or(1, |w| w.size.as_millis().max(1) as i64);
        let name = format!("window-{}", window::rfc3339(start).replace(':', "-"));
        let schema = self.output_schema.clone();
        let batches = (reduced.iter())
            .map(|b| window::with_window(b, &schema, start, size))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.stage_error(stage, e.to_string()))?;
        if rows > 0 {
            let out = self.plan.output.path.clone();
            let format = self.plan.output.format;
            commit_file(&out, &name, format, &schema, &batches)?;
            self.state.counts.rows_out += rows;
            self.state.counts.files += 1;
        }
        self.state.counts.windows += 1;
        self.state.last_window = Some(start);
        self.count_latency(&arrivals);
        Ok(())
    }

    /// Arrival-to-commit latency of records that arrived at `arrivals`,
    /// committed now.
    fn count_latency(&mut self, arrivals: &Arrivals) {
        let now = source::millis(SystemTime::now());
        for (at, n) in &arrivals.0 {
            // In microseconds, as every latency histogram here.
            let _ = self.latency.record_n((now - at).max(0) as u64 * 1000, *n);
        }
    }

    /// Appends rows to the map-only output's current part.
    fn write_part(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        let number = self.state.next_part;
        let out = self.plan.output.path.clone();
        let (format, schema) = (self.plan.output.format, self.output_schema.clone());
        let part = open_part(&mut self.part, &out, "part", number, format, &schema)?;
        part.write(batch).map_err(EngineError::Output)
    }

    /// Appends late records to the run's current late part.
    fn write_late(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        let number = self.state.next_late;
        let dir = self.run_dir.join("late");
        let late = open_part(&mut self.late, &dir, "late", number, Format::Jsonl, &batch.schema())?;
        late.write(batch).map_err(EngineError::Output)
    }

    /// Commits the parts being written, then writes a checkpoint of where
    /// the stream is: a resume from it writes the next parts under the
    /// next numbers.
    fn checkpoint(&mut self) -> Result<(), EngineError> {
        if let Some((writer, temp, number)) = self.part.take() {
            let rows = finish_part(writer, &temp, &self.plan.output.path, "part", number, self.plan.output.format)?;
            self.state.next_part = number + 1;
            self.state.counts.rows_out += rows;
            self.state.counts.files += 1;
            let arrivals = std::mem::take(&mut self.part_arrivals);
            self.count_latency(&arrivals);
        }
        if let Some((writer, temp, number)) = self.late.take() {
            finish_part(writer, &temp, &self.run_dir.join("late"), "late", number, Format::Jsonl)?;
            self.state.next_late = number + 1;
        }
        self.recorder.flush()?;
        self.state.number += 1;
        self.state.windows = self.partials.keys().copied().collect();
        let partial_schema = self.keyed.map(|s| s.function.output_schema());
        checkpoint::save(&self.run_dir, &self.state, &self.partials, partial_schema.as_ref())?;
        // Spooled files read to the end before this checkpoint are never
        // read again: they go, and so do their names.
        if let Some(spool) = &self.spooled {
            for name in std::mem::take(&mut self.state.position.done) {
                let path = spool.join(&name);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(EngineError::io(&path, e)),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// A stage's failure, with the batch it was on.
    fn stage_error(&self, stage: &CompiledStage, message: impl std::fmt::Display) -> EngineError {
        EngineError::Stream(format!("stage `{}`, batch {}: {message}", stage.name, self.state.counts.batches + 1))
    }

    /// One line on stderr: records in, rows out, windows, lag.
    fn say_progress(&self) {
        let c = &self.state.counts;
        let lag = self.state.clock.newest.map_or(String::new(), |n| {
            let behind = (source::millis(SystemTime::now()) - n) as f64 / 1000.0;
            format!(", newest event {behind:.1}s ago")
        });
        say(&format!(
            "stream: {} records in, {} rows out, {} windows committed ({} open), {} late{lag}",
            c.records_in,
            c.rows_out,
            c.windows,
            self.partials.len(),
            c.late
        ));
    }

    /// The run's summary: the batch summary's fields, with the stream's
    /// own counts.
    fn summary(
        &self,
        run_id: &str,
        plan: &Plan,
        wall: Duration,
        ended: Option<&str>,
        error: Option<&EngineError>,
    ) -> Summary {
        let c = self.state.counts;
        let totals = Totals {
            stats: self.recorder.stats.clone(),
            splits: c.batches,
            input_bytes: 0,
            input_records: c.records_in,
            spilled: 0,
            scratch_written: 0,
            concurrency: plan.platform.concurrency,
            failures: Vec::new(),
            resumed: 0,
            backups: 0,
            bad_records: 0,
            rejects: None,
        };
        let mut summary = summarize(run_id, plan, &totals, wall, None, None, error);
        summary.stream = Some(StreamSummary {
            records_in: c.records_in,
            rows_out: c.rows_out,
            batches: c.batches,
            windows: c.windows,
            late_records: c.late,
            files: c.files,
            output: plan.output.path.clone(),
            stopped_by: ended.unwrap_or("a failure").to_string(),
            latency_ms: Latency::of(&self.latency),
        });
        summary
    }
}

/// Where the source thread starts: the records and batches counted
/// before (a resume's, from its checkpoint).
#[derive(Debug, Clone, Copy)]
struct Start {
    records: u64,
    batch: u64,
}

/// The source thread: batches of up to `batch_size` records, each sent
/// once full or once `batch_window` has passed since its first record,
/// until `until` is met, the input ends or the run is stopped.
fn feed(
    source: &mut DirSource,
    sp: &StreamPlan,
    until: Until,
    start: Start,
    input_ended: Option<&std::sync::atomic::AtomicBool>,
    stop: &crate::stop::Stop,
    tx: &crossbeam_channel::Sender<Work>,
) -> Result<End, EngineError> {
    let began = Instant::now();
    let mut last_record = Instant::now();
    let (mut taken, mut seq) = (start.records, start.batch);
    let poll = Duration::from_millis(10);
    loop {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut rows = 0usize;
        let mut first: Option<Instant> = None;
        let end = loop {
            if stop.is_stopped() {
                break Some(End::Signal);
            }
            if until.time.is_some_and(|t| began.elapsed() >= t) {
                break Some(End::Until("time"));
            }
            let left = until.records.map(|n| n.saturating_sub(taken + rows as u64));
            if left == Some(0) {
                break Some(End::Until("records"));
            }
            let want = (sp.batch_size - rows).min(left.map_or(usize::MAX, |l| l.min(usize::MAX as u64) as usize));
            // Read before polling: set, and nothing found, means all of the
            // input has been read.
            let ended = input_ended.is_some_and(|e| e.load(std::sync::atomic::Ordering::Acquire));
            match source.next(want)? {
                Some(piece) => {
                    if piece.segment.rows > 0 {
                        first.get_or_insert_with(Instant::now);
                        last_record = Instant::now();
                    }
                    rows += piece.segment.rows;
                    pieces.push(piece);
                    if rows >= sp.batch_size {
                        break None;
                    }
                }
                None => {
                    // Nothing waiting: send what there is once its window
                    // has passed, else wait for more.
                    if first.is_some_and(|f| f.elapsed() >= sp.batch_window) {
                        break None;
                    }
                    if ended {
                        break Some(End::InputEnded);
                    }
                    if first.is_none() && until.idle.is_some_and(|d| last_record.elapsed() >= d) {
                        break Some(End::Until("idle"));
                    }
                    std::thread::sleep(poll);
                }
            }
        };
        if !pieces.is_empty() {
            let schema = pieces[0].batch.schema();
            let batch = arrow_select::concat::concat_batches(&schema, pieces.iter().map(|p| &p.batch))
                .map_err(|e| EngineError::Stream(format!("batching records: {e}")))?;
            let segments = pieces.into_iter().map(|p| p.segment).collect();
            if tx.send(Work { seq, batch, segments, queued: Instant::now() }).is_err() {
                return Ok(End::Signal);
            }
            seq += 1;
            taken += rows as u64;
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// A worker: runs the map stages on each batch it takes, in containers
/// of its own, and sends the result back.
fn work(
    worker: usize,
    stages: &[CompiledStage],
    rx: &crossbeam_channel::Receiver<Work>,
    tx: &crossbeam_channel::Sender<Done>,
    stop: &crate::stop::Stop,
    retrying: Retrying,
) {
    let mut containers: Vec<Option<(Box<dyn MapInstance>, u64)>> = stages.iter().map(|_| None).collect();
    while let Ok(w) = rx.recv() {
        let mut calls = Vec::new();
        let mut batch = w.batch;
        let mut result = Ok(());
        // Stopping, a batch not started is left for the resume.
        if stop.is_stopped() {
            let done = Done { seq: w.seq, result: Err(None), segments: w.segments, queued: w.queued, worker, calls };
            if tx.send(done).is_err() {
                return;
            }
            continue;
        }
        if batch.num_rows() > 0 {
            for (i, stage) in stages.iter().enumerate() {
                match call_map(i, stage, &mut containers[i], &batch, w.seq, stop, retrying, &mut calls) {
                    Ok(out) => batch = out,
                    Err(e) => {
                        let at = describe(&w.segments);
                        result = Err(e.map(|e| EngineError::Stream(format!("stage `{}`, {at}: {e}", stage.name))));
                        break;
                    }
                }
            }
        }
        let done =
            Done { seq: w.seq, result: result.map(|()| batch), segments: w.segments, queued: w.queued, worker, calls };
        if tx.send(done).is_err() {
            return;
        }
    }
}

/// How a map invocation is bounded and retried: the platform's deadline,
/// retries and backoff (the shared policy's, with the run's seed).
#[derive(Debug, Clone, Copy)]
struct Retrying {
    timeout: Option<Duration>,
    retries: u32,
    backoff: Duration,
    seed: u64,
}

/// One map stage's invocation on a batch, retried as the platform says
/// (each attempt noted in `calls`); its output as one batch. `Err(None)`:
/// the stream stopped before a retry, which is left for the resume.
#[allow(clippy::too_many_arguments)]
fn call_map(
    index: usize,
    stage: &CompiledStage,
    container: &mut Option<(Box<dyn MapInstance>, u64)>,
    batch: &RecordBatch,
    seq: u64,
    stop: &crate::stop::Stop,
    retrying: Retrying,
    calls: &mut Vec<Call>,
) -> Result<RecordBatch, Option<FunctionError>> {
    let Retrying { timeout, retries, .. } = retrying;
    let mut attempt = 1;
    loop {
        let cold = container.is_none();
        if cold {
            let id = CONTAINERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *container = Some((stage.function.init().map_err(Some)?, id));
        }
        let (instance, id) = container.as_mut().expect("made above");
        let started = Instant::now();
        let mut inv = Invocation::plain(&stage.name, seq);
        inv.attempt = attempt;
        inv.deadline = timeout.map(|t| started + t);
        let called = instance.call(&inv, vec![batch.clone()]).and_then(|out| {
            let schema = stage.function.output_schema();
            arrow_select::concat::concat_batches(&schema, &out).map_err(|e| FunctionError::permanent(e.to_string()))
        });
        calls.push(Call {
            stage: index,
            attempt,
            container: *id,
            cold,
            started,
            finished: Instant::now(),
            records_in: batch.num_rows() as u64,
            records_out: called.as_ref().map_or(0, |b| b.num_rows() as u64),
            bytes_in: batch.get_array_memory_size() as u64,
            bytes_out: called.as_ref().map_or(0, |b| b.get_array_memory_size() as u64),
            error: called.as_ref().err().map(|e| e.message.clone()),
        });
        if instance.spent() {
            *container = None;
        }
        match called {
            Ok(out) => return Ok(out),
            Err(e) if !e.permanent && attempt <= retries => {
                // A failed container is not used again.
                *container = None;
                let wait = crate::policy::backoff(retrying.backoff, attempt, retrying.seed, Step::map(index), seq);
                let wait = wait.max(e.retry_after.unwrap_or_default());
                attempt += 1;
                if !stop.sleep(wait) {
                    return Err(None);
                }
            }
            Err(e) => return Err(Some(e)),
        }
    }
}

/// Which file and record row `row` of a batch of `rows` rows is, when the
/// rows are the segments' records one to one.
fn locate_row(segments: &[Segment], rows: usize, row: usize) -> Option<String> {
    if segments.iter().map(|s| s.rows).sum::<usize>() != rows {
        return None;
    }
    let mut first = 0;
    for s in segments {
        if row < first + s.rows {
            let record = s.consumed - (s.rows - (row - first)) as u64 + 1;
            return Some(format!("{}, record {record}", s.file));
        }
        first += s.rows;
    }
    None
}

/// Where a batch's records came from, for messages.
fn describe(segments: &[Segment]) -> String {
    let parts: Vec<String> = (segments.iter().filter(|s| s.rows > 0))
        .map(|s| {
            let first = s.consumed - s.rows as u64 + 1;
            format!("{} records {first}..{}", s.file, s.consumed)
        })
        .collect();
    format!("batch of {}", parts.join(", "))
}

/// Opens `slot`'s part file `NAME-NNNNNN` in `dir` if none is open.
fn open_part<'w>(
    slot: &'w mut Option<(Writer, PathBuf, u64)>,
    dir: &Path,
    name: &str,
    number: u64,
    format: Format,
    schema: &SchemaRef,
) -> Result<&'w mut Writer, EngineError> {
    if slot.is_none() {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let temp = dir.join(format!(".{name}-{number:06}.tmp"));
        let writer =
            Writer::create(&temp, format, schema.clone(), &CsvOptions::default()).map_err(EngineError::Output)?;
        *slot = Some((writer, temp, number));
    }
    Ok(&mut slot.as_mut().expect("opened above").0)
}

/// Finishes a part and renames it into place; returns its rows.
fn finish_part(
    writer: Writer,
    temp: &Path,
    dir: &Path,
    name: &str,
    number: u64,
    format: Format,
) -> Result<u64, EngineError> {
    let rows = writer.finish().map_err(EngineError::Output)?;
    let target = dir.join(format!("{name}-{number:06}.{}", format.extension()));
    place(temp, &target)?;
    Ok(rows)
}

/// Writes `batches` as the file `NAME.EXT` of `dir`, whole or not at all.
fn commit_file(
    dir: &Path,
    name: &str,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), EngineError> {
    let temp = dir.join(format!(".{name}.tmp"));
    let mut writer =
        Writer::create(&temp, format, schema.clone(), &CsvOptions::default()).map_err(EngineError::Output)?;
    for b in batches {
        writer.write(b).map_err(EngineError::Output)?;
    }
    writer.finish().map_err(EngineError::Output)?;
    place(&temp, &dir.join(format!("{name}.{}", format.extension())))
}

/// Fsyncs `temp` and renames it to `target` (replacing a file of the same
/// name: the same records, written again by a replay).
fn place(temp: &Path, target: &Path) -> Result<(), EngineError> {
    std::fs::File::open(temp).and_then(|f| f.sync_all()).map_err(|e| EngineError::io(temp, e))?;
    std::fs::rename(temp, target).map_err(|e| EngineError::io(target, e))?;
    checkpoint::sync_dir(target.parent().unwrap_or(Path::new(".")))
}

/// A line on stderr; a stream whose stderr is gone goes on.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
