//! The fanout engine: it compiles a validated job against its data and
//! runs it — splits fanned out to worker slots with bounded concurrency,
//! each task a chain of invocations, keyed stages shuffled by key, the
//! output gathered, sorted, limited and committed atomically — and records
//! every invocation.
//!
//! See `engine/README.md` for the execution model.

mod chaos;
mod clock;
mod compile;
mod container;
mod error;
mod flight;
mod gather;
mod inputs;
mod journal;
mod lines;
mod options;
mod policy;
mod progress;
pub mod records;
pub mod report;
pub(crate) mod run;
mod run_dir;
mod scratch;
mod shuffle;
pub mod simulate;
mod sink;
mod source;
mod stats;
mod step;
mod stop;
mod stream;
mod summary;

pub use chaos::{Chaos, Fault};
pub use clock::{Clock, ManualClock, SystemClock};
pub use compile::{Compiled, CompiledStage, Phase, Sink, Tasks, compile};
pub use error::{CompileError, EngineError, TaskFailure};
pub use gather::OutputInfo;
pub use options::{Report, RunFailure, RunOptions, Until};
pub use progress::{InFlight, Progress, SlotGauge, StageProgress};
pub use records::InvocationRecord;
pub use run::{CWD, finished_run, run, running};
pub use stats::StageStats;
pub use step::{Step, StepKind};
pub use stop::{Interrupt, Stop};
pub use stream::plan_stream;
pub use summary::{
    Cost, FailedTask, InputSummary, Invocations, LagSample, Latency, StageSummary, StreamSummary, Summary,
};
