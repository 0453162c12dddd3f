//! The coordinator of a phase: it starts a thread per slot, takes the
//! phase's tasks from its source, sends them to the slots in groups through
//! a bounded channel (backpressure: at most about 3 × the slots' tasks
//! exist at once), takes tasks an earlier run journaled from the journal
//! instead, and, when the platform has backups, sends a backup of each
//! straggler until the phase's tasks are decided.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::Shared;
use super::slot::Slot;
use super::task::Task;
use crate::compile::Phase;
use crate::policy;
use crate::progress::StageProgress;
use crate::records::Recorder;
use crate::source::Input;
use crate::step::StepKind;

/// Time a slot spent on its tasks so far in the phase (each on a cache
/// line of its own: only its slot writes it).
#[repr(align(128))]
#[derive(Default)]
pub(super) struct Busy {
    nanos: AtomicU64,
    tasks: AtomicU64,
}

impl Busy {
    /// The slot spent `took` on `tasks` tasks.
    pub(super) fn add(&self, took: Duration, tasks: u64) {
        self.nanos.fetch_add(took.as_nanos() as u64, Relaxed);
        self.tasks.fetch_add(tasks, Relaxed);
    }

    fn reset(&self) {
        self.nanos.store(0, Relaxed);
        self.tasks.store(0, Relaxed);
    }
}

/// How many tasks the next message carries, given the time slots spent
/// on their tasks so far ([`policy::group_size`]).
pub(super) fn group_size(busy: &[Busy]) -> usize {
    let (mut nanos, mut tasks) = (0, 0);
    for b in busy {
        nanos += b.nanos.load(Relaxed);
        tasks += b.tasks.load(Relaxed);
    }
    policy::group_size(nanos, tasks)
}

/// Runs phase `index`'s tasks on the slots; returns the number of tasks.
pub(super) fn run_phase(shared: &Shared<'_>, index: usize, phase: &Phase, slots: &mut [(Slot, Recorder<'_>)]) -> u64 {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Task>>(slots.len() * policy::LISTED_AHEAD_PER_SLOT);
    shared.flight.reset();
    for b in &shared.busy {
        b.reset();
    }
    // Slots still running this phase's tasks (see `Slot::run_phase`).
    let running = (Mutex::new(slots.len()), Condvar::new());
    let mut count = 0;
    std::thread::scope(|scope| {
        for (slot, recorder) in slots.iter_mut() {
            let (rx, running) = (rx.clone(), &running);
            scope.spawn(move || slot.run_phase(shared, index, phase, recorder, &rx, running));
        }
        drop(rx);
        // Should the coordinator panic, the run stops (invocations in
        // flight are cancelled, their processes killed) and the channel
        // closes as the panic unwinds, so that the slots end and the
        // scope can join them: the panic then goes on, and nothing hangs.
        let tx = tx;
        let _stop = StopOnPanic(shared);
        count = produce(shared, index, phase, &tx);
    });
    count
}

/// Stops the run when dropped by a panic's unwinding.
struct StopOnPanic<'a, 'b>(&'a Shared<'b>);

impl Drop for StopOnPanic<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop.stop();
        }
    }
}

/// A test hook: with `FANOUT_TEST_PANIC=TASK:FILE` in its environment,
/// the coordinator panics as it is about to hand out task TASK of the
/// first phase, once FILE exists (a function writes it when it runs).
/// The tests check that a panic in the coordinator leaves no process of
/// the job behind.
fn test_panic(index: usize, task: u64) {
    if index != 0 {
        return;
    }
    let Ok(spec) = std::env::var("FANOUT_TEST_PANIC") else { return };
    let Some((at, file)) = spec.split_once(':') else { return };
    if at.parse() != Ok(task) {
        return;
    }
    while !std::path::Path::new(file).exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("FANOUT_TEST_PANIC: the coordinator panics at task {task}");
}

/// Sends phase `index`'s tasks to the slots, then backs up stragglers
/// until they are decided; returns the number of tasks.
fn produce(shared: &Shared<'_>, index: usize, phase: &Phase, tx: &Sender<Vec<Task>>) -> u64 {
    let source = shared.sources[index].as_ref();
    // The stages whose progress counts this phase's tasks (a combine is
    // counted with its reduce).
    let counted: Vec<&Arc<StageProgress>> =
        (phase.steps.iter()).filter(|s| s.kind != StepKind::Combine).map(|s| &shared.progress[s.stage]).collect();
    let set_total = |n: u64, known: bool| {
        for p in &counted {
            p.total.store(n, Relaxed);
            if known {
                p.total_known.store(true, Relaxed);
            }
        }
    };
    if let Some(n) = source.total() {
        set_total(n, true);
        // A shuffle's partitions: progress by tasks, not the input's bytes.
        for p in &counted {
            p.total_bytes.store(u64::MAX, Relaxed);
        }
    }
    let handed = |n: usize| {
        for p in &counted {
            p.sent.fetch_add(n as u64, Relaxed);
        }
    };
    let external = phase.steps.iter().any(|s| shared.compiled.stages[s.stage].external);
    let alone = policy::tasks_alone(source.grouped(), shared.plan.platform.backups, external);
    let (mut count, mut sent) = (0, 0);
    let mut group = Vec::new();
    let mut bytes = 0;
    for task in source.tasks() {
        if shared.failed() {
            break;
        }
        let (id, input) = match task {
            Ok(t) => t,
            Err(e) => {
                shared.fail(e);
                break;
            }
        };
        count += 1;
        // The running total, for the progress display: not at every
        // task, to keep off the slots' cache lines.
        if source.total().is_none() && count % 64 == 1 {
            set_total(count, false);
        }
        if resumed(shared, index, id, &input, &counted) {
            continue;
        }
        test_panic(index, id);
        sent += 1;
        bytes += input.split().map_or(0, fanout_datasets::Split::bytes);
        group.push(Task { id, input, queued: shared.clock.now(), backup: false });
        let most = if alone { 1 } else { group_size(&shared.busy) };
        if group.len() >= most || bytes >= policy::GROUP_BYTES {
            handed(group.len());
            let _ = tx.send(std::mem::take(&mut group));
            bytes = 0;
        }
    }
    if !group.is_empty() {
        handed(group.len());
        let _ = tx.send(group);
    }
    set_total(count, true);
    // Until every task sent is decided, back up the stragglers.
    backups(shared, tx, sent);
    count
}

/// Takes task `task` of phase `index` from the journal, if an earlier run
/// completed it, and sends its output on as if it had just run. A split
/// task's input counts as read, as it was before the resume.
fn resumed(shared: &Shared<'_>, index: usize, task: u64, input: &Input, counted: &[&Arc<StageProgress>]) -> bool {
    let Some(journal) = &shared.journal else { return false };
    let sink = shared.sinks[index];
    let done = match journal.completed(index, task, sink.schema()) {
        Ok(None) => return false,
        Ok(Some(done)) => done,
        Err(e) => {
            shared.fail(e);
            return true;
        }
    };
    shared.counters.resumed.fetch_add(1, Relaxed);
    let bytes = input.split().map_or(0, fanout_datasets::Split::bytes);
    if input.split().is_some() {
        shared.counters.input_bytes.fetch_add(bytes, Relaxed);
        shared.counters.input_records.fetch_add(done.input_records, Relaxed);
        shared.bad.resumed(done.bad_records);
        if let Some(p) = shared.progress.first() {
            p.bad.fetch_add(done.bad_records, Relaxed);
        }
    }
    for p in counted {
        p.finish_task(bytes, 0);
    }
    let sent = shared.sources[index].skip(input).and_then(|()| sink.push(&mut vec![(task, done.batches)]));
    if let Err(e) = sent {
        shared.fail(e);
    }
    true
}

/// Until the `sent` tasks of the phase are decided, backs up its
/// stragglers (when the platform has backups). Tasks taken from the
/// journal were never sent, and are not waited for.
fn backups(shared: &Shared<'_>, tx: &Sender<Vec<Task>>, sent: u64) {
    let p = &shared.plan.platform;
    while p.backups && !shared.failed() && shared.flight.finished() < sent {
        let now = shared.clock.now();
        for (task, input) in shared.flight.stragglers(sent, p.backup_when_done, p.backup_after, now) {
            shared.counters.backups.fetch_add(1, Relaxed);
            let _ = tx.send(vec![Task { id: task, input, queued: now, backup: true }]);
        }
        shared.stop.sleep(Duration::from_millis(5));
    }
}
