//! Containers: a worker slot's initialised function, called inline, or —
//! when invocations have a deadline — on a thread of its own, so that an
//! invocation past its deadline can be abandoned: the function sees the
//! deadline in its [`Invocation`] (and should stop), its late result is
//! discarded, and the container is replaced. A hanging function never
//! hangs the job.
//!
//! A container's start is the function's `init` (its cold start); with
//! `emulate`, the platform's modelled start time is slept first, drawn from
//! the container's id so that a run's cold starts are reproducible.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use fanout_datasets::Split;
use fanout_workers::shuffle::ShuffleTo;
use fanout_workers::{FunctionError, Invocation, MapInstance, Piece, ReduceInstance};

use crate::chaos::Fault;
use crate::compile::CompiledStage;
use crate::step::{Step, StepKind};
use crate::stop::Stop;

/// The error of an invocation cancelled because its twin (a straggler's
/// backup, or the straggler) finished first; the report tells these from
/// failures by it.
pub(crate) const CANCELLED: &str = "cancelled: another run of the task finished first";

/// A function's per-container state.
pub(crate) enum Instance {
    Map(Box<dyn MapInstance>),
    Reduce(Box<dyn ReduceInstance>),
}

impl Instance {
    /// Records the last call read itself.
    fn records_read(&self) -> Option<u64> {
        match self {
            Instance::Map(f) => f.records_read(),
            Instance::Reduce(_) => None,
        }
    }

    /// Whether the container is gone (its process died or was killed).
    fn spent(&self) -> bool {
        match self {
            Instance::Map(f) => f.spent(),
            Instance::Reduce(f) => f.spent(),
        }
    }

    /// One invocation with `fault` applied, panics caught.
    fn call(&mut self, inv: &Invocation<'_>, fault: Fault, batches: Vec<RecordBatch>) -> Reply {
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| match fault {
            Fault::None | Fault::Straggle(_) => match self {
                Instance::Map(f) => f.call(inv, batches),
                Instance::Reduce(f) => f.call(inv, batches),
            },
            Fault::Fail => Err(FunctionError::transient("chaos: injected failure")),
            Fault::Panic => panic!("chaos: injected panic"),
            Fault::Timeout => unreachable!("handled by the container"),
        }));
        if let Fault::Straggle(slowdown) = fault {
            std::thread::sleep(started.elapsed().mul_f64(slowdown - 1.0));
        }
        match result {
            Ok(r) => Reply { result: r, panicked: self.spent(), read: self.records_read() },
            Err(payload) => Reply {
                result: Err(FunctionError::transient(panic_message(payload.as_ref()))),
                panicked: true,
                read: None,
            },
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => format!("panicked: {s}"),
        (_, Some(s)) => format!("panicked: {s}"),
        _ => "panicked".to_string(),
    }
}

/// What an invocation returned, and whether its container is spent.
pub(crate) struct Reply {
    pub(crate) result: Result<Vec<RecordBatch>, FunctionError>,
    /// A panicked, abandoned or spent container is not reused.
    pub(crate) panicked: bool,
    /// Records the function read itself (a function that reads its split).
    pub(crate) read: Option<u64>,
}

pub(crate) struct Call {
    task: u64,
    attempt: u32,
    deadline: Option<Instant>,
    fault: Fault,
    batches: Vec<RecordBatch>,
    split: Option<Split>,
    pieces: Option<Arc<[Piece]>>,
    shuffle_to: Option<ShuffleTo>,
    cancel: Arc<AtomicBool>,
}

/// What an invocation reads or writes itself, besides its batches: its
/// split, its partition's pieces, or where to write its output.
#[derive(Clone, Copy, Default)]
pub(crate) struct Refs<'a> {
    pub(crate) split: Option<&'a Split>,
    pub(crate) pieces: Option<&'a [Piece]>,
    pub(crate) shuffle_to: Option<&'a ShuffleTo>,
}

/// A container: inline, or on its own thread.
pub(crate) enum Container {
    Inline { id: u64, stage: String, instance: Instance },
    Thread { id: u64, calls: Sender<Call>, replies: Receiver<Reply> },
}

/// Starts container `id` for `step` of `stage`: the modelled start time
/// (for the standard normal `draw`, see
/// [`cold_start_draw`](crate::policy::cold_start_draw)) slept when the
/// platform emulates one, then the function's `init`. A failed init is the
/// function's error, as `init: ...`. The modelled start ends early, as
/// [`CANCELLED`], once `cancelled` says so (another run of the task
/// finished first), as the simulator cancels it.
pub(crate) fn cold_start(
    id: u64,
    draw: f64,
    stage: &CompiledStage,
    step: Step,
    platform: &fanout_jobs::PlatformPlan,
    stop: &Stop,
    cancelled: &dyn Fn() -> bool,
) -> Result<Container, FunctionError> {
    if platform.emulate && !sleep_unless(stop, platform.containers.cold_start.sample(draw), cancelled) {
        return Err(FunctionError::transient(CANCELLED));
    }
    let init = match step.kind {
        StepKind::Reduce => stage.function.init_reduce().expect("a keyed stage reduces").map(Instance::Reduce),
        _ => stage.function.init().map(Instance::Map),
    };
    // Said once: a function's own "init error: ..." needs no prefix.
    let instance = init.map_err(|e| match e.message.starts_with("init") {
        true => e,
        false => FunctionError { message: format!("init: {}", e.message), ..e },
    })?;
    // With a deadline or backups, a container runs on its own thread so
    // that a late or losing invocation can be abandoned.
    let threaded = platform.timeout.is_some() || platform.backups;
    Ok(Container::start(id, &stage.name, instance, threaded))
}

impl Container {
    /// Starts a container for `stage`; with `threaded`, on its own thread.
    pub(crate) fn start(id: u64, stage: &str, instance: Instance, threaded: bool) -> Container {
        if !threaded {
            return Container::Inline { id, stage: stage.to_string(), instance };
        }
        let (calls, inbox) = crossbeam_channel::bounded::<Call>(1);
        let (outbox, replies) = crossbeam_channel::bounded::<Reply>(1);
        let name = stage.to_string();
        let mut instance = instance;
        std::thread::Builder::new()
            .name(format!("container-{id}"))
            .spawn(move || {
                // Ends when the worker drops the container (or it panicked).
                for c in inbox {
                    let inv = Invocation {
                        stage: &name,
                        task: c.task,
                        attempt: c.attempt,
                        deadline: c.deadline,
                        split: c.split.as_ref(),
                        cancel: Some(&c.cancel),
                        pieces: c.pieces.as_deref(),
                        shuffle_to: c.shuffle_to.as_ref(),
                    };
                    let reply = instance.call(&inv, c.fault, c.batches);
                    let panicked = reply.panicked;
                    if outbox.send(reply).is_err() || panicked {
                        break;
                    }
                }
            })
            .expect("a container thread starts");
        Container::Thread { id, calls, replies }
    }

    /// The container's id.
    pub(crate) fn id(&self) -> u64 {
        match self {
            Container::Inline { id, .. } | Container::Thread { id, .. } => *id,
        }
    }

    /// One invocation. A threaded container's invocation is abandoned when
    /// it passes its `timeout`, or as soon as `cancelled` says so (another
    /// run of the task finished first, or the run stops); an inline one is
    /// told through `stopped`, the run's stop flag, which it may watch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call(
        &mut self,
        task: u64,
        attempt: u32,
        timeout: Option<Duration>,
        fault: Fault,
        batches: Vec<RecordBatch>,
        refs: Refs<'_>,
        stopped: &AtomicBool,
        cancelled: &dyn Fn() -> bool,
    ) -> Reply {
        let deadline = timeout.map(|t| Instant::now() + t);
        if fault == Fault::Timeout {
            // An injected hang costs what a real one does: the whole deadline.
            let t = timeout.unwrap_or_default();
            std::thread::sleep(t);
            return Reply {
                result: Err(FunctionError::transient(format!(
                    "timed out after {} (injected by chaos)",
                    humantime::format_duration(t)
                ))),
                panicked: true,
                read: None,
            };
        }
        match self {
            Container::Inline { stage, instance, .. } => {
                let Refs { split, pieces, shuffle_to } = refs;
                let inv =
                    Invocation { stage, task, attempt, deadline, split, cancel: Some(stopped), pieces, shuffle_to };
                instance.call(&inv, fault, batches)
            }
            Container::Thread { calls, replies, .. } => {
                let (split, pieces, shuffle_to) =
                    (refs.split.cloned(), refs.pieces.map(Arc::from), refs.shuffle_to.cloned());
                let cancel = Arc::new(AtomicBool::new(false));
                let call =
                    Call { task, attempt, deadline, fault, batches, split, pieces, shuffle_to, cancel: cancel.clone() };
                if calls.send(call).is_err() {
                    return dead();
                }
                // An abandoned invocation is told, so that it stops (an
                // external one kills its process).
                let abandon = |reply: Reply| {
                    cancel.store(true, Relaxed);
                    reply
                };
                loop {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        let timed_out = FunctionError::transient(format!(
                            "timed out after {}",
                            humantime::format_duration(timeout.expect("a deadline has a timeout"))
                        ));
                        // A function that watches its deadline (an external
                        // one kills its process) gets a moment to say so;
                        // a late success is discarded all the same.
                        return match replies.recv_timeout(GRACE) {
                            Ok(Reply { result: Err(e), panicked, .. }) => {
                                Reply { result: Err(e), panicked, read: None }
                            }
                            Ok(Reply { result: Ok(_), panicked, .. }) => {
                                Reply { result: Err(timed_out), panicked, read: None }
                            }
                            Err(_) => abandon(Reply { result: Err(timed_out), panicked: true, read: None }),
                        };
                    }
                    let wait = deadline.map_or(POLL, |d| (d - now).min(POLL));
                    match replies.recv_timeout(wait) {
                        Ok(reply) => return reply,
                        Err(RecvTimeoutError::Disconnected) => return dead(),
                        Err(RecvTimeoutError::Timeout) if cancelled() => {
                            return abandon(Reply {
                                result: Err(FunctionError::transient(CANCELLED)),
                                panicked: true,
                                read: None,
                            });
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                }
            }
        }
    }
}

/// Sleeps for `d`, or until the run stops or `cancelled` says so (looked
/// at every [`POLL`]); whether it slept it all.
pub(crate) fn sleep_unless(stop: &Stop, d: Duration, cancelled: &dyn Fn() -> bool) -> bool {
    let until = Instant::now() + d;
    loop {
        if cancelled() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        if !stop.sleep(left.min(POLL)) {
            return false;
        }
    }
}

/// How often a waiting worker checks whether its invocation was cancelled.
const POLL: Duration = Duration::from_millis(5);
/// How long a worker waits past a deadline for the function's own answer
/// before it abandons the container.
const GRACE: Duration = Duration::from_millis(100);

fn dead() -> Reply {
    Reply { result: Err(FunctionError::transient("the container stopped")), panicked: true, read: None }
}
