//! A stream's coordinator: the batches taken back in their order, their
//! records put in windows (lateness and the watermark decided here, on one
//! thread, so that a replay decides the same), windows reduced and
//! committed, parts and late records written, checkpoints taken, every
//! invocation recorded, and the summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_datasets::{Format, Writer};
use fanout_jobs::{Plan, StreamPlan, WindowKind};
use fanout_workers::{Invocation, MapInstance, ReduceInstance};
use hdrhistogram::Histogram;

mod progress;

use super::checkpoint::{self, State};
use super::failed::SetAside;
use super::feed::{End, Gates, Quiet, Start, Work, feed};
use super::output::{commit_file, finish_part, open_part};
use super::session;
use super::sink::Sinks;
use super::source::{self, DirSource, Segment};
use super::spool::{Spool, SpoolState};
use super::window;
use super::worker::{CONTAINERS, Call, Done, OnError, Retrying, locate_row, work};
use crate::compile::CompiledStage;
use crate::error::EngineError;
use crate::options::{RunOptions, Until};
use crate::records::{InvocationRecord, Recorder};
use crate::step::Step;
use crate::summary::LagSample;

/// A window's state besides its partials: when its records arrived (for
/// the latency at commit).
#[derive(Default)]
pub(super) struct Arrivals(BTreeMap<i64, u64>);

/// The coordinator's state.
pub(super) struct Stream<'a> {
    pub(super) recorder: Recorder<'a>,
    /// When the stream started: records' times count from here.
    pub(super) origin: Instant,
    /// The reduce's and combiner's containers.
    pub(super) containers: (u64, u64),
    pub(super) plan: &'a Plan,
    pub(super) sp: &'a StreamPlan,
    pub(super) stages: &'a [CompiledStage],
    /// The keyed last stage, when there is one.
    pub(super) keyed: Option<&'a CompiledStage>,
    pub(super) output_schema: SchemaRef,
    pub(super) run_dir: PathBuf,
    pub(super) state: State,
    pub(super) partials: BTreeMap<i64, Vec<RecordBatch>>,
    pub(super) arrivals: BTreeMap<i64, Arrivals>,
    pub(super) combine: Option<Box<dyn MapInstance>>,
    pub(super) reduce: Option<Box<dyn ReduceInstance>>,
    /// The part being written (map-only output) and the late records'.
    pub(super) part: Option<(Writer, PathBuf, u64)>,
    pub(super) late: Option<(Writer, PathBuf, u64)>,
    /// Where records a function failed on go (`on_failure`).
    set_aside: Option<SetAside>,
    /// Where committed files go besides the output directory.
    pub(super) sinks: Option<Sinks>,
    /// When the last progress line was said, with the records in and rows
    /// out then.
    said: Option<(Instant, u64, u64)>,
    /// The stream over time.
    lag: Vec<LagSample>,
    /// Arrivals of the rows in `part`.
    pub(super) part_arrivals: Arrivals,
    pub(super) latency: Histogram<u64>,
    pub(super) stop: Arc<crate::stop::Stop>,
    pub(super) live: bool,
    /// The spool directory the source reads, when fanout spools the
    /// input itself (standard input): its files go once checkpointed.
    pub(super) spooled: Option<PathBuf>,
    /// What the spooling tells, when the source is spooled: the
    /// partitions it reads among them.
    input: Option<Arc<SpoolState>>,
    /// What the source asked of its service before this process.
    usage_before: crate::stream::usage::Usage,
}

impl<'a> Stream<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
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
        state.next_reject = state.next_reject.max(1);
        let usage_before = state.usage;
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
            set_aside: sp.on_failure.as_ref().map(|f| SetAside::new(f, run_dir)),
            sinks: None,
            said: None,
            lag: Vec::new(),
            part_arrivals: Arrivals::default(),
            latency: Histogram::new(3).expect("a histogram"),
            stop: opts.stop.clone(),
            live: opts.live,
            spooled: None,
            usage_before,
            input: None,
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
    pub(super) fn run(
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
        let input = spool.map(|s| s.state.clone());
        // A Kinesis shard's lanes (`parallelization`) are its partitions
        // here, each with one batch in flight.
        let gates = sp.parallelization.map(|_| Gates::new(1));
        self.input = input.clone();
        let start = Start { records: self.state.counts.records_in, batch: self.state.counts.batches };
        let on_error = OnError { bisect: self.sp.bisect_on_error, set_aside: self.sp.on_failure.is_some() };
        let retrying = Retrying {
            platform: &self.plan.platform,
            chaos: opts.chaos,
            seed: crate::policy::run_seed(&self.run_dir.to_string_lossy()),
        };
        let quiet = Quiet::default();
        std::thread::scope(|scope| {
            let quiet = &quiet;
            scope.spawn(move || {
                let end = feed(&mut source, sp, (until, start), input.as_deref(), (gates, quiet), &stop, &work_tx);
                drop(work_tx);
                let _ = end_tx.send(end);
            });
            for worker in 0..concurrency {
                let (rx, tx, stop) = (work_rx.clone(), done_tx.clone(), opts.stop.clone());
                scope.spawn(move || work(worker, map_stages, &rx, &tx, &stop, retrying, on_error));
            }
            drop((work_rx, done_tx));
            self.coordinate(&done_rx, &end_rx, quiet)
        })
    }

    /// Takes the batches back in order and applies them, checkpointing as
    /// it goes; at the end, commits what the way it ended calls for.
    fn coordinate(
        &mut self,
        done: &crossbeam_channel::Receiver<Done>,
        end: &crossbeam_channel::Receiver<Result<End, EngineError>>,
        quiet: &Quiet,
    ) -> Result<&'static str, EngineError> {
        let mut next = self.state.counts.batches;
        let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
        let mut last_checkpoint = Instant::now();
        let mut last_line = Instant::now();
        let mut failure: Option<EngineError> = None;
        let mut halted = false;
        let tick = Duration::from_millis(50);
        // Where the stream starts: its rates count from here.
        self.sample();
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
            // A quiet source, every record it took applied: windows of
            // arrival time that ended before it went quiet close.
            if failure.is_none()
                && !halted
                && let Some((seq, at)) = quiet.get()
                && seq == next
                && let Err(e) = self.close_quiet(at)
            {
                self.stop.stop();
                failure = Some(e);
            }
            if failure.is_none() && last_checkpoint.elapsed() >= self.sp.checkpoint_every {
                self.checkpoint()?;
                last_checkpoint = Instant::now();
            }
            if last_line.elapsed() >= Duration::from_secs(1) {
                self.sample();
                if self.live {
                    self.say_progress();
                }
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
                if self.sp.window.as_ref().is_some_and(|w| w.kind == WindowKind::Session) {
                    self.emit_sessions(None)?;
                }
                let starts: Vec<i64> = self.partials.keys().copied().collect();
                for start in starts {
                    self.emit(start)?;
                }
                self.checkpoint()?;
                self.sample();
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
        if let Some(aside) = self.set_aside.as_mut()
            && !d.failed.is_empty()
        {
            aside.add(&d.failed, self.state.next_reject)?;
            self.state.counts.failed += d.failed.iter().map(|f| f.records.num_rows() as u64).sum::<u64>();
        }
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
            // A partition read to its end holds the watermark no more.
            if segment.ends
                && let Some(p) = &segment.partition
            {
                self.state.clock.partitions.remove(p);
            }
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
        // A batch holds one partition's records (the source cuts it so).
        let partition = segments.iter().find_map(|s| s.partition.as_deref()).map(source::shard_of);
        let known = self.input.as_ref().map(|i| i.partitions.lock().expect("not poisoned").clone()).unwrap_or_default();
        if w.kind == WindowKind::Session {
            let mut marks = Vec::with_capacity(times.len());
            for &t in &times {
                marks.push(self.state.clock.mark);
                self.state.clock.advance(t, partition, &known, lateness);
            }
            return self.session_batch(stage, batch, arrivals, &times, &marks);
        }
        let every = w.every().as_millis().max(1) as i64;
        let assigned = self.state.clock.assign(&times, partition, &known, (size, every), lateness);
        self.combine_into(stage, batch, arrivals, &assigned.windows, &assigned.late)?;
        if let Some(mark) = self.state.clock.mark {
            let due: Vec<i64> = self.partials.keys().copied().take_while(|s| s + size <= mark).collect();
            for start in due {
                self.emit(start)?;
            }
        }
        Ok(())
    }

    /// Moves the watermark of arrival-time windows to `at` (less the
    /// allowed lateness), a moment when the source had nothing to read and
    /// every record it had taken was applied: whatever it takes next
    /// arrives later. Commits the windows that closed.
    fn close_quiet(&mut self, at: i64) -> Result<(), EngineError> {
        let Some(w) = self.sp.window.as_ref().filter(|w| w.time.is_none()) else { return Ok(()) };
        if self.keyed.is_none() {
            return Ok(());
        }
        let mark = at - self.sp.allowed_lateness.as_millis() as i64;
        if self.state.clock.mark.is_some_and(|m| m >= mark) {
            return Ok(());
        }
        self.state.clock.mark = Some(mark);
        if w.kind == WindowKind::Session {
            return self.emit_sessions(Some(mark));
        }
        let size = w.size.as_millis().max(1) as i64;
        let due: Vec<i64> = self.partials.keys().copied().take_while(|s| s + size <= mark).collect();
        for start in due {
            self.emit(start)?;
        }
        Ok(())
    }

    /// Runs the combiner over the rows of `batch` that go to each window
    /// (by start, or session id), keeping the partials; the `late` rows go
    /// to the late records.
    fn combine_into(
        &mut self,
        stage: &CompiledStage,
        batch: &RecordBatch,
        arrivals: &[i64],
        windows: &BTreeMap<i64, Vec<u32>>,
        late: &[u32],
    ) -> Result<(), EngineError> {
        for (id, rows) in windows {
            let part = window::take(batch, rows).map_err(|e| self.stage_error(stage, e.to_string()))?;
            let partial = self.call_combine(stage, part)?;
            self.partials.entry(*id).or_default().extend(partial);
            let seen = self.arrivals.entry(*id).or_default();
            for &r in rows {
                *seen.0.entry(arrivals[r as usize]).or_default() += 1;
            }
        }
        if !late.is_empty() {
            let late = window::take(batch, late).map_err(|e| self.stage_error(stage, e.to_string()))?;
            self.write_late(&late)?;
            self.state.counts.late += late.num_rows() as u64;
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
        let call = Call::ended(stage.index, self.containers.0, cold, started, (records_in, bytes_in), &out);
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
        let size = self.sp.window.as_ref().map_or(1, |w| w.size.as_millis().max(1) as i64);
        let batches = self.reduce_window(start, start, size)?;
        let name = format!("window-{}", window::rfc3339(start).replace(':', "-"));
        self.commit_windows(&name, &batches, 1)?;
        self.state.last_window = Some(start);
        Ok(())
    }

    /// Reduces the partials kept under `id` (a window's start, a
    /// session's id) into the rows of the window from `start`, `size_ms`
    /// long; their records' arrivals counted as committed.
    fn reduce_window(&mut self, id: i64, start: i64, size_ms: i64) -> Result<Vec<RecordBatch>, EngineError> {
        let stage = self.keyed.expect("windows belong to a keyed stage");
        let partials = self.partials.remove(&id).unwrap_or_default();
        let arrivals = self.arrivals.remove(&id).unwrap_or_default();
        let cold = self.reduce.is_none();
        if cold {
            let made = stage.function.init_reduce().expect("a keyed stage reduces");
            self.reduce = Some(made.map_err(|e| self.stage_error(stage, e.message))?);
            self.containers.1 = CONTAINERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let records_in: u64 = partials.iter().map(|b| b.num_rows() as u64).sum();
        let bytes_in: u64 = partials.iter().map(|b| b.get_array_memory_size() as u64).sum();
        let inv = Invocation::plain(&stage.name, id as u64);
        let started = Instant::now();
        let reduced = self.reduce.as_mut().expect("made above").call(&inv, partials);
        let call = Call::ended(stage.index, self.containers.1, cold, started, (records_in, bytes_in), &reduced);
        // A window's reduce is task `id` (its start, epoch ms; a session's id).
        self.record(Step::reduce(stage.index), id.max(0) as u64, 0, started, &call)?;
        let reduced = reduced.map_err(|e| self.stage_error(stage, e.message))?;
        self.count_latency(&arrivals);
        let schema = self.output_schema.clone();
        (reduced.iter())
            .map(|b| window::with_window(b, &schema, start, size_ms))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.stage_error(stage, e.to_string()))
    }

    /// Commits `batches`, the rows of `windows` windows, as the file
    /// `name` of the output (none when they hold no row).
    fn commit_windows(&mut self, name: &str, batches: &[RecordBatch], windows: u64) -> Result<(), EngineError> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if rows > 0 {
            let (out, format) = (self.plan.output.path.clone(), self.plan.output.format);
            let path = commit_file(&out, name, format, &self.output_schema, batches)?;
            if let Some(sinks) = self.sinks.as_mut() {
                sinks.deliver(&path)?;
            }
            self.state.counts.rows_out += rows;
            self.state.counts.files += 1;
        }
        self.state.counts.windows += windows;
        Ok(())
    }

    /// Puts a batch's records into their keys' sessions (merging those a
    /// record bridges), and commits the buckets of sessions the watermark
    /// has passed.
    fn session_batch(
        &mut self,
        stage: &CompiledStage,
        batch: &RecordBatch,
        arrivals: &[i64],
        times: &[i64],
        marks: &[Option<i64>],
    ) -> Result<(), EngineError> {
        let gap = self.sp.window.as_ref().map_or(1, |w| w.size.as_millis().max(1) as i64);
        let names = self.plan.stages[stage.index].key.clone().unwrap_or_default();
        let keys = session::row_keys(batch, &names).map_err(|e| self.stage_error(stage, e))?;
        let placed = self.state.sessions.place(times, &keys, marks, gap);
        for (from, into) in &placed.merged {
            let (partials, seen) = (self.partials.remove(from), self.arrivals.remove(from));
            self.partials.entry(*into).or_default().extend(partials.into_iter().flatten());
            let counts = &mut self.arrivals.entry(*into).or_default().0;
            for (at, n) in seen.map(|a| a.0).into_iter().flatten() {
                *counts.entry(at).or_default() += n;
            }
        }
        self.combine_into(stage, batch, arrivals, &placed.sessions, &placed.late)?;
        if let Some(mark) = self.state.clock.mark {
            self.emit_sessions(Some(mark))?;
        }
        Ok(())
    }

    /// Commits the buckets of sessions the watermark `mark` has passed
    /// (none: every session, the stream ending), a file each.
    fn emit_sessions(&mut self, mark: Option<i64>) -> Result<(), EngineError> {
        let gap = self.sp.window.as_ref().map_or(1, |w| w.size.as_millis().max(1) as i64);
        for (bucket, sessions) in self.state.sessions.due(mark, gap) {
            let mut batches = Vec::new();
            for (id, s) in &sessions {
                batches.extend(self.reduce_window(*id, s.start, s.end - s.start)?);
            }
            let name = format!("sessions-{}", window::rfc3339(bucket).replace(':', "-"));
            self.commit_windows(&name, &batches, sessions.len() as u64)?;
            self.state.last_window = Some(bucket);
        }
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
            let format = self.plan.output.format;
            let (rows, path) = finish_part(writer, &temp, &self.plan.output.path, "part", number, format)?;
            if let Some(sinks) = self.sinks.as_mut() {
                sinks.deliver(&path)?;
            }
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
        if let Some(number) = self.set_aside.as_mut().map(SetAside::commit).transpose()?.flatten() {
            self.state.next_reject = number + 1;
        }
        self.recorder.flush()?;
        self.state.number += 1;
        self.state.windows = self.partials.keys().copied().collect();
        self.state.usage = self.usage();
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

    /// What the source has asked of its service, over the run and its
    /// resumes.
    pub(super) fn usage(&self) -> crate::stream::usage::Usage {
        let now = self.input.as_ref().map(|i| *i.usage.lock().expect("not poisoned")).unwrap_or_default();
        self.usage_before.plus(now)
    }

    /// A stage's failure, with the batch it was on.
    fn stage_error(&self, stage: &CompiledStage, message: impl std::fmt::Display) -> EngineError {
        EngineError::Stream(format!("stage `{}`, batch {}: {message}", stage.name, self.state.counts.batches + 1))
    }
}

/// A line on stderr; a stream whose stderr is gone goes on.
pub(super) fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
