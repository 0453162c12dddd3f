//! A stream's workers: the map stages run on each batch, in containers of
//! the worker's own, retried and backed off as the platform says; every
//! invocation noted for the coordinator to record.

use std::time::Instant;

use arrow_array::RecordBatch;
use fanout_workers::FunctionError;

use super::feed::Work;
use super::source::Segment;
use crate::chaos::Fault;
use crate::compile::CompiledStage;
use crate::container::{Container, Refs, cold_start};
use crate::error::EngineError;
use crate::step::{Step, StepKind};

/// A batch back from the workers: its map stages' output, or why not
/// (`None`: it was not started, the stream stopping).
pub(super) struct Done {
    pub(super) seq: u64,
    pub(super) result: Result<RecordBatch, Option<EngineError>>,
    /// Records whose invocation failed, set aside (`on_failure`).
    pub(super) failed: Vec<Failed>,
    pub(super) segments: Vec<Segment>,
    /// When it was handed to the workers.
    pub(super) queued: Instant,
    /// The worker that ran it.
    pub(super) worker: usize,
    /// Its map stages' invocations, failed attempts included.
    pub(super) calls: Vec<Call>,
}

/// Records a stage failed on, set aside for `on_failure`.
pub(super) struct Failed {
    /// The records, as the stage got them.
    pub(super) records: RecordBatch,
    /// The stage, by name.
    pub(super) stage: String,
    /// Why it failed.
    pub(super) error: String,
    /// Where each record came from, where the stage got them as read.
    pub(super) sources: Vec<Option<String>>,
}

/// What a worker does with a batch whose function fails.
#[derive(Debug, Clone, Copy)]
pub(super) struct OnError {
    /// Split it down to the records that fail.
    pub(super) bisect: bool,
    /// Set the records that fail aside, and go on.
    pub(super) set_aside: bool,
}

/// One invocation of a function, as a worker or the coordinator saw it.
#[derive(Debug, Clone)]
pub(super) struct Call {
    /// The stage, by index.
    pub(super) stage: usize,
    pub(super) attempt: u32,
    pub(super) container: u64,
    pub(super) cold: bool,
    pub(super) started: Instant,
    pub(super) finished: Instant,
    pub(super) records_in: u64,
    pub(super) records_out: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) error: Option<String>,
}

impl Call {
    /// A first attempt of stage `stage` in `container`, begun at `started`
    /// on `input` (rows and bytes) and ending now with `out`.
    pub(super) fn ended(
        stage: usize,
        container: u64,
        cold: bool,
        started: Instant,
        input: (u64, u64),
        out: &Result<Vec<RecordBatch>, FunctionError>,
    ) -> Call {
        let sum = |f: fn(&RecordBatch) -> u64| out.as_ref().map_or(0, |o| o.iter().map(f).sum());
        Call {
            stage,
            attempt: 1,
            container,
            cold,
            started,
            finished: Instant::now(),
            records_in: input.0,
            records_out: sum(|b| b.num_rows() as u64),
            bytes_in: input.1,
            bytes_out: sum(|b| b.get_array_memory_size() as u64),
            error: out.as_ref().err().map(|e| e.message.clone()),
        }
    }
}

/// Numbers the containers (function instances) of a stream.
pub(super) static CONTAINERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A worker: runs the map stages on each batch it takes, in containers
/// of its own, and sends the result back.
pub(super) fn work(
    worker: usize,
    stages: &[CompiledStage],
    rx: &crossbeam_channel::Receiver<Work>,
    tx: &crossbeam_channel::Sender<Done>,
    stop: &crate::stop::Stop,
    retrying: Retrying<'_>,
    on_error: OnError,
) {
    let containers: Vec<Slot> = stages.iter().map(|_| Slot::default()).collect();
    let mut run = Stages { worker, stages, containers, stop, retrying, on_error };
    while let Ok(w) = rx.recv() {
        let mut calls = Vec::new();
        let mut failed = Vec::new();
        // Stopping, a batch not started is left for the resume.
        if stop.is_stopped() {
            let done =
                Done { seq: w.seq, result: Err(None), failed, segments: w.segments, queued: w.queued, worker, calls };
            if tx.send(done).is_err() {
                return;
            }
            continue;
        }
        let result = match w.batch.num_rows() {
            0 => Ok(w.batch),
            rows => {
                let mut out = Vec::new();
                let mut at = Batch { seq: w.seq, segments: &w.segments, rows, calls: &mut calls, failed: &mut failed };
                run.from(0, w.batch.clone(), 0, &mut at, &mut out).and_then(|()| {
                    let schema = stages.last().map_or_else(|| w.batch.schema(), |s| s.function.output_schema());
                    arrow_select::concat::concat_batches(&schema, &out)
                        .map_err(|e| Some(EngineError::Stream(format!("joining a bisected batch: {e}"))))
                })
            }
        };
        let done = Done { seq: w.seq, result, failed, segments: w.segments, queued: w.queued, worker, calls };
        if tx.send(done).is_err() {
            return;
        }
    }
}

/// A worker's map stages, their containers, and what it does when they
/// fail.
struct Stages<'a> {
    worker: usize,
    stages: &'a [CompiledStage],
    containers: Vec<Slot>,
    stop: &'a crate::stop::Stop,
    retrying: Retrying<'a>,
    on_error: OnError,
}

/// The batch a worker is on: what its invocations and failures are noted
/// in.
struct Batch<'a> {
    seq: u64,
    segments: &'a [Segment],
    /// Its records.
    rows: usize,
    calls: &'a mut Vec<Call>,
    failed: &'a mut Vec<Failed>,
}

impl Stages<'_> {
    /// Runs stages `from..` on `batch` (starting at row `offset` of the
    /// batch read, while the rows are the records read one to one), its
    /// output added to `out`. A failing invocation, with bisection, is
    /// tried again on each half of its input, down to a single record; the
    /// records that still fail are set aside, or stop the stream.
    fn from(
        &mut self,
        from: usize,
        mut batch: RecordBatch,
        offset: usize,
        at: &mut Batch<'_>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), Option<EngineError>> {
        for i in from..self.stages.len() {
            let stage = &self.stages[i];
            let slot = &mut self.containers[i];
            let called = call_map((self.worker, i), stage, slot, &batch, at.seq, self.stop, self.retrying, at.calls);
            let error = match called {
                Ok(next) => {
                    batch = next;
                    continue;
                }
                Err(None) => return Err(None),
                Err(Some(e)) => e,
            };
            let rows = batch.num_rows();
            if self.on_error.bisect && rows > 1 {
                let half = rows / 2;
                self.from(i, batch.slice(0, half), offset, at, out)?;
                return self.from(i, batch.slice(half, rows - half), offset + half, at, out);
            }
            // Located by file and record while the rows are the records read.
            let sources: Vec<Option<String>> = match i {
                0 => (0..rows).map(|r| locate_row(at.segments, at.rows, offset + r)).collect(),
                _ => vec![None; rows],
            };
            let whose = match &sources[..] {
                [Some(one)] => one.clone(),
                _ => describe(at.segments),
            };
            if self.on_error.set_aside {
                at.failed.push(Failed { records: batch, stage: stage.name.clone(), error: error.message, sources });
                return Ok(());
            }
            return Err(Some(EngineError::Stream(format!("stage `{}`, {whose}: {error}", stage.name))));
        }
        out.push(batch);
        Ok(())
    }
}

/// How a map invocation runs: the platform (its deadline, retries,
/// backoff, containers, emulation), chaos, and the run's seed for the
/// shared policy's draws.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retrying<'a> {
    pub(super) platform: &'a fanout_jobs::PlatformPlan,
    pub(super) chaos: Option<crate::chaos::Chaos>,
    pub(super) seed: u64,
}

/// A worker's container for one stage, and what the container model
/// needs of it.
#[derive(Default)]
pub(super) struct Slot {
    container: Option<Container>,
    /// When it was last used (its keep-alive counts from there).
    last_used: Option<Instant>,
    /// Containers started so far (the cold starts' draws).
    cold_starts: u32,
}

/// One map stage's invocation on a batch, in the worker's container for
/// the stage (started cold when there is none, or the last has been idle
/// past the keep-alive: the platform's modelled start slept first with
/// `emulate`), with the platform's deadline and chaos, retried as the
/// platform says (each attempt noted in `calls`); its output as one batch.
/// `Err(None)`: the stream stopped before a retry, which is left for the
/// resume.
#[allow(clippy::too_many_arguments)]
pub(super) fn call_map(
    (worker, index): (usize, usize),
    stage: &CompiledStage,
    slot: &mut Slot,
    batch: &RecordBatch,
    seq: u64,
    stop: &crate::stop::Stop,
    retrying: Retrying<'_>,
    calls: &mut Vec<Call>,
) -> Result<RecordBatch, Option<FunctionError>> {
    let platform = retrying.platform;
    let model = &platform.containers;
    let step = Step::map(index);
    let mut attempt = 1;
    loop {
        let now = Instant::now();
        if slot.last_used.is_some_and(|used| crate::policy::expired(used, model.keep_alive, now)) {
            slot.container = None;
        }
        let cold = slot.container.is_none();
        let started = Instant::now();
        let (id, reply) = match slot.container.as_mut() {
            Some(c) => (c.id(), None),
            None => {
                let id = CONTAINERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let draw = crate::policy::cold_start_draw(worker, index, slot.cold_starts, 0);
                slot.cold_starts += 1;
                match cold_start(id, draw, stage, step, platform, stop, &|| false) {
                    Ok(c) => {
                        slot.container = Some(c);
                        (id, None)
                    }
                    Err(e) => (id, Some(Err(e))),
                }
            }
        };
        let result = match reply {
            Some(failed) => failed,
            None => {
                if platform.emulate {
                    stop.sleep(model.overhead);
                }
                let fault = retrying.chaos.map_or(Fault::None, |c| c.draw(index, StepKind::Map as usize, seq, attempt));
                let container = slot.container.as_mut().expect("started above");
                let reply = container.call(
                    seq,
                    attempt,
                    platform.timeout,
                    fault,
                    vec![batch.clone()],
                    Refs::default(),
                    stop.flag(),
                    &|| false,
                );
                slot.last_used = Some(Instant::now());
                if reply.panicked {
                    // A panicked, abandoned or spent container is not reused.
                    slot.container = None;
                }
                reply.result.and_then(|out| {
                    let schema = stage.function.output_schema();
                    arrow_select::concat::concat_batches(&schema, &out)
                        .map_err(|e| FunctionError::permanent(e.to_string()))
                })
            }
        };
        calls.push(Call {
            stage: index,
            attempt,
            container: id,
            cold,
            started,
            finished: Instant::now(),
            records_in: batch.num_rows() as u64,
            records_out: result.as_ref().map_or(0, |b| b.num_rows() as u64),
            bytes_in: batch.get_array_memory_size() as u64,
            bytes_out: result.as_ref().map_or(0, |b| b.get_array_memory_size() as u64),
            error: result.as_ref().err().map(|e| e.message.clone()),
        });
        match result {
            Ok(out) => return Ok(out),
            Err(e) if !e.permanent && attempt <= platform.retries => {
                // A failed container is not used again.
                slot.container = None;
                let wait = crate::policy::backoff(platform.backoff, attempt, retrying.seed, step, seq);
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
pub(super) fn locate_row(segments: &[Segment], rows: usize, row: usize) -> Option<String> {
    if segments.iter().map(|s| s.rows).sum::<usize>() != rows {
        return None;
    }
    let mut first = 0;
    for s in segments {
        if row < first + s.rows {
            let record = s.consumed - (s.rows - (row - first)) as u64 + 1;
            return Some(format!("{}, record {record}", s.shown()));
        }
        first += s.rows;
    }
    None
}

/// Where a batch's records came from, for messages.
pub(super) fn describe(segments: &[Segment]) -> String {
    let parts: Vec<String> = (segments.iter().filter(|s| s.rows > 0))
        .map(|s| {
            let first = s.consumed - s.rows as u64 + 1;
            format!("{} records {first}..{}", s.shown(), s.consumed)
        })
        .collect();
    format!("batch of {}", parts.join(", "))
}
