//! A task's run on a slot: its chain of steps, each an invocation on the
//! slot's container for the step (started cold if there is none), retried
//! on transient failures after a backoff, within the platform's deadline;
//! a task that fails for good is tolerated or fails the job; a task with a
//! twin (a straggler's backup) is decided by the first run to finish.

use std::time::Instant;

use arrow_array::RecordBatch;
use fanout_datasets::Split;
use fanout_workers::FunctionError;
use fanout_workers::shuffle::{is_pieces, pieces_of};

use super::Shared;
use super::slot::Slot;
use super::task::{Limit, Task};
use crate::chaos::Fault;
use crate::compile::Phase;
use crate::container::{Refs, cold_start, sleep_unless};
use crate::error::{EngineError, TaskFailure};
use crate::flight::Ended;
use crate::policy::{self, cold_start_draw};
use crate::records::{InvocationRecord, Recorder};
use crate::source::Input;
use crate::step::{Step, StepKind};

/// Runs task `t` of phase `index` on `slot`, and sends its output on (to
/// the slot's outputs for the phase's sink, and to the journal).
pub(super) fn run_task(
    shared: &Shared<'_>,
    index: usize,
    phase: &Phase,
    slot: &mut Slot,
    recorder: &mut Recorder<'_>,
    t: Task,
) -> Result<(), EngineError> {
    let Task { id: task, mut input, queued, backup } = t;
    // Without backups each task runs once: nothing to track.
    let tracked = shared.plan.platform.backups;
    if tracked {
        // A backup of a partition needs its batches: take them now.
        input = shared.sources[index].shareable(input)?;
        if !shared.flight.start(task, &input, backup, shared.clock.now()) {
            return Ok(());
        }
    }
    // What this run read of the input: counted once the run decides its
    // task (a twin's reading is not read twice).
    let mut read = Read::default();
    let run = TaskRun { shared, index, phase, task, input: &input, queued, backup };
    let ran = run_steps(run, slot, recorder, &mut read);
    let out = match ran {
        // The first result of a task wins; a straggler's late twin is dropped.
        Ok(_) if tracked && shared.flight.finish(task, shared.clock.now()) == Ended::Dropped => return Ok(()),
        Ok(out) => Ok(out),
        Err(EngineError::Task(f)) => {
            // A run that fails while its twin still runs leaves the task
            // to the twin: a task fails only when all its runs have.
            if tracked && shared.flight.fail(task) == Ended::Dropped {
                return Ok(());
            }
            // The run is stopping (a signal, or another task failed the
            // job): this task was cancelled, not failed. It is neither
            // listed nor journaled, and a resume runs it again.
            if shared.failed() {
                return Ok(());
            }
            Err(f)
        }
        Err(e) => return Err(e),
    };
    // This run decided its task: what it read counts, bad records too
    // (rejected now, before the task is journaled).
    slot.counts.input_records += read.records;
    slot.counts.input_bytes += read.bytes;
    let bad = read.bad.iter().map(|b| b.records).sum::<u64>();
    if bad > 0 {
        if let Some(p) = shared.progress.first() {
            p.bad.fetch_add(bad, std::sync::atomic::Ordering::Relaxed);
        }
        shared.bad.decided(task, &read.bad)?;
    }
    let out = match out {
        Ok(out) => out,
        Err(f) if shared.failures.tolerate(&f) => Vec::new(),
        // A tolerated failure contributes no output; another fails the job.
        Err(f) => return Err(EngineError::Task(f)),
    };
    if let Some(journal) = &shared.journal {
        let counts = (read.records, bad);
        journal.record(&mut slot.journaled, index, task, counts, shared.sinks[index].schema(), &out)?;
        // The task's invocation records reach the log before the task is
        // journaled, so that a resumed run's report misses none of them.
        recorder.take_into(&mut slot.journaled.batch.records);
    }
    // Outputs wait for the end of the task group: one hand-over to the
    // sink per group, not per task.
    slot.outputs.push((task, out));
    Ok(())
}

/// What a run of a task read of the input (a split; nothing for a
/// partition).
#[derive(Debug, Default)]
struct Read {
    /// Records: as loaded, or as a function that read its split said.
    records: u64,
    /// The split's bytes.
    bytes: u64,
    /// The split's records that could not be read.
    bad: Vec<fanout_datasets::BadRecord>,
}

/// A run of a task: what its steps need to know besides the slot.
#[derive(Clone, Copy)]
struct TaskRun<'t, 's> {
    shared: &'t Shared<'s>,
    /// Its phase, and the phase's index.
    index: usize,
    phase: &'t Phase,
    task: u64,
    input: &'t Input,
    /// When it was queued.
    queued: Instant,
    /// Whether it is a straggler's backup.
    backup: bool,
}

/// Runs a task's steps, each invocation retried on transient failures;
/// returns the output, and says in `read` what it read of the input.
fn run_steps(
    run: TaskRun<'_, '_>,
    slot: &mut Slot,
    recorder: &mut Recorder<'_>,
    read: &mut Read,
) -> Result<Vec<RecordBatch>, EngineError> {
    let TaskRun { shared, index, phase, task, input, queued, backup } = run;
    let source = shared.sources[index].as_ref();
    let split = input.split();
    // Reads the task's input, noting a split as read.
    let load = |slot: &mut Slot, read: &mut Read| {
        let mut loaded = source.load(input, &mut slot.files)?;
        if split.is_some() {
            read.records = loaded.batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            read.bytes = loaded.bytes;
            read.bad = std::mem::take(&mut loaded.bad);
        }
        Ok::<_, EngineError>(loaded)
    };
    if phase.steps.is_empty() {
        return Ok(load(slot, read)?.batches);
    }
    let compiled = shared.compiled;
    let platform = &shared.plan.platform;
    let mut data: Option<Vec<RecordBatch>> = None;
    let mut queued_at = queued;
    // With a function outside the process in the task, a step's progress
    // is shown as it ends, not once the task group has.
    let external = phase.steps.iter().any(|s| compiled.stages[s.stage].external);
    for &step in &phase.steps {
        let stage = &compiled.stages[step.stage];
        let limit = shared.limits[step.stage].as_ref();
        // A stage with a concurrency of its own: the first attempt waits
        // for a permit before it reads its input. The read is part of the
        // invocation; the wait is not (a platform neither starts nor bills
        // a function its concurrency limit holds back).
        let mut permit = limit.map(Limit::permit);
        let started = shared.clock.now();
        // The first step over a split passes it on (a function may read it
        // itself instead of being sent records).
        let first = data.is_none();
        let own_split = if first { split } else { None };
        // So does the first over a partition in object storage (whose
        // function reads the pieces itself).
        let own_pieces = input.pieces().filter(|_| first && stage.function.reads_shuffle());
        // A remote map step may write the next stage's shuffle itself.
        let writer = shared.writers[index].as_ref().filter(|w| w.step == step);
        let (batches, bytes_in) = match data.take() {
            Some(d) => {
                let bytes = d.iter().map(|b| b.get_array_memory_size() as u64).sum();
                (d, bytes)
            }
            None if own_split.is_some() && stage.function.reads_split() => {
                let bytes = own_split.map_or(0, Split::bytes);
                read.bytes = bytes;
                (Vec::new(), bytes)
            }
            None if let Some(pieces) = own_pieces => (Vec::new(), pieces.iter().map(|p| p.length).sum()),
            // Bad input fails the task at once: a retry would read the same.
            None => {
                let loaded =
                    load(slot, read).map_err(|e| task_error(&stage.name, step, task, input, 1, e.to_string()))?;
                (loaded.batches, loaded.bytes)
            }
        };
        let mut records_in: u64 = match own_pieces {
            Some(pieces) => pieces.iter().map(|p| p.records).sum(),
            None => records(&batches),
        };
        let mut attempt = 1;
        let mut began = Some(started);
        loop {
            let held = permit.take().or_else(|| limit.map(Limit::permit));
            let began = began.take().unwrap_or_else(|| shared.clock.now());
            // A backup draws its own faults.
            let draw = policy::chaos_attempt(attempt, backup);
            slot.gauge.running.store(step.stage + 1, std::sync::atomic::Ordering::Relaxed);
            let to = writer.map(|w| w.scratch.shuffle_to(task, attempt, backup));
            let refs = Refs { split: own_split, pieces: own_pieces, shuffle_to: to.as_ref() };
            let mut call = invoke(run, slot, step, attempt, draw, batches.clone(), refs);
            // A function that answered with its records instead: they are
            // written here.
            if let (Some(w), Some(to), Ok(out)) = (writer, &to, &mut call.result)
                && !(out.len() == 1 && is_pieces(&out[0]))
            {
                let written = w.scratch.write(&to.path, std::mem::take(out));
                call.result = written.map(|b| vec![b]).map_err(|e| FunctionError::transient(e.to_string()));
            }
            slot.gauge.running.store(0, std::sync::atomic::Ordering::Relaxed);
            // A function that read its split itself may say how many records.
            if let Some(n) = call.read {
                records_in = n;
                read.records = n;
            }
            let finished = shared.clock.now();
            drop(held);
            let (status, error, bytes_out, records_out) = match &call.result {
                Ok(out) => ("ok", None, out.iter().map(|b| b.get_array_memory_size() as u64).sum(), records(out)),
                Err(e) => ("error", Some(e.message.as_str()), 0, 0),
            };
            let billed = platform.pricing.billed(finished.saturating_duration_since(began));
            recorder.record(
                step.index(),
                &InvocationRecord {
                    stage: &stage.name,
                    phase: step.kind.name(),
                    task,
                    attempt,
                    backup,
                    worker: slot.id,
                    container: call.container,
                    cold: call.cold,
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
            match call.result {
                Ok(out) => {
                    if step.kind != StepKind::Combine {
                        slot.counts.stages[step.stage].add(bytes_in, records_out);
                        if external {
                            slot.counts.publish(shared);
                        }
                    }
                    data = Some(out);
                    break;
                }
                // Another run of the task finished first: this one's result
                // would be dropped anyway.
                Err(_) if platform.backups && shared.flight.is_finished(task) => return Ok(Vec::new()),
                Err(e) if !e.permanent && attempt <= platform.retries && !shared.failed() => {
                    // A host that said when to come back (Retry-After) is
                    // not asked sooner.
                    let wait = policy::backoff(platform.backoff, attempt, shared.seed, step, task);
                    slot.gauge.retrying.store(step.stage + 1, std::sync::atomic::Ordering::Relaxed);
                    // The wait ends early once another run of the task has
                    // finished (this one's result would be dropped).
                    let twin_done = || platform.backups && shared.flight.is_finished(task);
                    sleep_unless(&shared.stop, wait.max(e.retry_after.unwrap_or_default()), &twin_done);
                    slot.gauge.retrying.store(0, std::sync::atomic::Ordering::Relaxed);
                    if twin_done() {
                        return Ok(Vec::new());
                    }
                    queued_at = shared.clock.now();
                    attempt += 1;
                }
                Err(e) => return Err(task_error(&stage.name, step, task, input, attempt, e.message)),
            }
        }
    }
    Ok(data.unwrap_or_default())
}

/// The records in `batches`: their rows, or the records of the pieces a
/// batch of pieces names (a map output written to object storage).
fn records(batches: &[RecordBatch]) -> u64 {
    let pieces = |b: &RecordBatch| pieces_of(b).iter().map(|(_, p)| p.records).sum::<u64>();
    batches.iter().map(|b| if is_pieces(b) { pieces(b) } else { b.num_rows() as u64 }).sum()
}

/// What one invocation came to.
struct Call {
    /// The container that ran it.
    container: u64,
    /// Whether it was started for this invocation.
    cold: bool,
    result: Result<Vec<RecordBatch>, FunctionError>,
    /// Records the function read itself, when it reads its split.
    read: Option<u64>,
}

/// One invocation on the slot's container for `step` (started cold if the
/// slot has none), with chaos applied.
fn invoke(
    run: TaskRun<'_, '_>,
    slot: &mut Slot,
    step: Step,
    attempt: u32,
    draw: u32,
    batches: Vec<RecordBatch>,
    refs: Refs<'_>,
) -> Call {
    let TaskRun { shared, task, .. } = run;
    let stage = &shared.compiled.stages[step.stage];
    let platform = &shared.plan.platform;
    let at = step.index();
    let model = &platform.containers;
    // An idle container past its keep-alive has been retired.
    slot.retire(at, model.keep_alive, shared.clock.now());
    // A threaded container's invocation is abandoned once another run of
    // its task has finished, or the run stops.
    let tracked = platform.backups;
    let cancelled = || shared.failed() || (tracked && shared.flight.is_finished(task));
    let cold = slot.containers[at].is_none();
    if cold {
        let id = shared.counters.next_container();
        let draw = cold_start_draw(slot.id, at, slot.cold_starts[at], 0);
        slot.cold_starts[at] += 1;
        match cold_start(id, draw, stage, step, platform, &shared.stop, &cancelled) {
            Ok(container) => slot.containers[at] = Some(container),
            Err(e) => return Call { container: id, cold: true, result: Err(e), read: None },
        }
    }
    if platform.emulate {
        shared.stop.sleep(model.overhead);
    }
    let fault = shared.chaos.map_or(Fault::None, |c| c.draw(step.stage, step.kind as usize, task, draw));
    let container = slot.containers[at].as_mut().expect("started");
    let id = container.id();
    let reply = container.call(task, attempt, platform.timeout, fault, batches, refs, shared.stop.flag(), &cancelled);
    if model.keep_alive.is_some() {
        slot.last_used[at] = shared.clock.now();
    }
    if reply.panicked {
        // A panicked or abandoned container is not reused.
        slot.containers[at] = None;
    }
    Call { container: id, cold, result: reply.result, read: reply.read }
}

/// A task's failure at `step`.
fn task_error(stage: &str, step: Step, task: u64, input: &Input, attempt: u32, message: String) -> EngineError {
    EngineError::Task(Box::new(TaskFailure {
        stage: stage.to_string(),
        phase: step.kind,
        task,
        attempt,
        input: input.describe(),
        message,
    }))
}
