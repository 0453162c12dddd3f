//! The function model: a stage's function is planned once (parameters and
//! schemas checked), initialised once per container (its cold start), and
//! called once per invocation.
//!
//! - [`Builtin`]: a registered function, by name. [`Builtin::plan`] checks a
//!   stage's parameters against its input schema (at validate time) and
//!   returns the [`Planned`] function.
//! - [`Planned`]: knows its output schema; [`Planned::init`] builds a
//!   [`MapInstance`], the per-container state (a compiled regex, a parsed
//!   predicate, scratch buffers), as Lambda's init phase runs once per
//!   container.
//! - [`MapInstance::call`]: one invocation — all batches of one task in,
//!   batches out. Stateless across invocations, as a FaaS function must be.
//! - Keyed stages: the planned function also gives a map-side combiner
//!   ([`Planned::init`], run per split) and a [`ReduceInstance`] per key
//!   partition ([`Planned::init_reduce`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde_json::{Map, Value};

/// What an invocation knows about itself.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// The stage's name.
    pub stage: &'a str,
    /// The task: a split index for map stages, a partition for keyed ones.
    pub task: u64,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// When the invocation must have finished, if it has a deadline.
    pub deadline: Option<Instant>,
    /// The input split, for the first step of a task over the input (a
    /// function may read it itself: see [`Planned::reads_split`]).
    pub split: Option<&'a fanout_datasets::Split>,
    /// Set when the engine abandons the invocation (another run of the
    /// task finished first, or the deadline passed).
    pub cancel: Option<&'a AtomicBool>,
    /// A reduce invocation's partition as pieces in object storage, when
    /// its stage shuffles through there (see [`Planned::reads_shuffle`]):
    /// the function reads them itself and is called with no batches.
    pub pieces: Option<&'a [Piece]>,
    /// A map invocation whose output is shuffled through object storage:
    /// a function that can ([`Planned::writes_shuffle`]) partitions its
    /// output and writes it there itself, answering with the pieces.
    pub shuffle_to: Option<&'a ShuffleTo>,
}

/// What a map invocation is asked to do with its output when its records
/// are shuffled through object storage: partition them by `key` into
/// `partitions` and write them as the object `path`, answering with the
/// pieces (`{"pieces": [[partition, offset, length, records], ...]}`)
/// instead of the records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShuffleTo {
    /// The key columns, by name.
    pub key: Vec<String>,
    /// How many partitions.
    pub partitions: usize,
    /// The object to write.
    pub path: String,
}

/// A piece of a shuffle partition in object storage: `length` bytes at
/// `offset` of the object `path`, holding `records` records as JSON lines
/// (one object per line, as an event's `records` are written), the output
/// of one map task for one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Piece {
    /// The object's URL.
    pub path: String,
    /// Where the piece starts in the object.
    pub offset: u64,
    /// Its length in bytes.
    pub length: u64,
    /// The records it holds.
    pub records: u64,
}

impl<'a> Invocation<'a> {
    /// The first attempt at `task` of `stage`, with no deadline and nothing
    /// to read or write itself: a function called directly.
    pub fn plain(stage: &'a str, task: u64) -> Self {
        Invocation {
            stage,
            task,
            attempt: 1,
            deadline: None,
            split: None,
            cancel: None,
            pieces: None,
            shuffle_to: None,
        }
    }

    /// Whether the deadline has passed or the invocation was cancelled: a
    /// long-running function should check this and stop, since the engine
    /// has abandoned the invocation and will discard its result.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d) || self.cancelled()
    }

    /// Whether the engine cancelled the invocation.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Why an invocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// What went wrong.
    pub message: String,
    /// Whether retrying cannot help (bad input, a bug in the parameters).
    pub permanent: bool,
    /// The least wait before a retry, when the function's host said
    /// (an HTTP `Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl FunctionError {
    /// A failure that a retry might not repeat.
    pub fn transient(message: impl Into<String>) -> Self {
        FunctionError { message: message.into(), permanent: false, retry_after: None }
    }

    /// A failure that a retry would repeat.
    pub fn permanent(message: impl Into<String>) -> Self {
        FunctionError { message: message.into(), permanent: true, retry_after: None }
    }

    /// The same failure, to be retried no sooner than `after`.
    pub fn retry_after(self, after: Option<std::time::Duration>) -> Self {
        FunctionError { retry_after: after, ..self }
    }
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FunctionError {}

impl From<arrow_schema::ArrowError> for FunctionError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        FunctionError::permanent(e.to_string())
    }
}

/// A stage's function as the job names it, before planning.
#[derive(Debug, Clone, Copy)]
pub struct StageSpec<'a> {
    /// The function's parameters.
    pub params: &'a Map<String, Value>,
    /// The schema of the stage's input.
    pub input: &'a SchemaRef,
    /// The key columns of a keyed stage.
    pub key: Option<&'a [String]>,
}

/// A registered function.
pub trait Builtin: Send + Sync {
    /// Its documentation and parameter specs.
    fn info(&self) -> &'static crate::catalog::FunctionInfo;

    /// Checks the stage's parameters against its input and plans the
    /// function. Errors here are reported at validate time.
    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError>;
}

/// A planned function: parameters checked, schemas known.
pub trait Planned: Send + Sync {
    /// The schema of what a map invocation returns (for a keyed stage, of
    /// what the map-side combiner returns).
    fn output_schema(&self) -> SchemaRef;

    /// A container's init: builds the per-container state of a map
    /// invocation (for a keyed stage, of the map-side combiner).
    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError>;

    /// For keyed stages: the schema of what a reduce invocation returns.
    fn reduce_schema(&self) -> Option<SchemaRef> {
        None
    }

    /// For keyed stages: a container's init for reduce invocations.
    fn init_reduce(&self) -> Option<Result<Box<dyn ReduceInstance>, FunctionError>> {
        None
    }

    /// Whether the function reads its split itself: the engine then reads
    /// nothing and calls it with no batches and [`Invocation::split`] set.
    fn reads_split(&self) -> bool {
        false
    }

    /// For keyed stages: whether the reduce function runs remotely and can
    /// read its partition from object storage itself. With a scratch
    /// prefix set (`[storage] scratch`), the engine then writes the
    /// shuffle there and calls the function with [`Invocation::pieces`]
    /// instead of records.
    fn reads_shuffle(&self) -> bool {
        false
    }

    /// For map stages: whether the function runs remotely and may write
    /// its output to object storage itself when the next stage shuffles
    /// there ([`Invocation::shuffle_to`]). It answers with the pieces, as
    /// a batch of the shuffle's pieces schema, or
    /// with its records, which the engine then writes.
    fn writes_shuffle(&self) -> bool {
        false
    }

    /// The input columns the function reads, by name, when its output
    /// depends on no others: a first stage's input is then read for those
    /// columns only (the rest are not parsed). None: every column.
    fn input_columns(&self) -> Option<Vec<String>> {
        None
    }
}

/// A planned function that reads only `columns` of its input.
pub(crate) struct ReadsOnly {
    pub(crate) inner: Arc<dyn Planned>,
    pub(crate) columns: Vec<String>,
}

impl Planned for ReadsOnly {
    fn output_schema(&self) -> SchemaRef {
        self.inner.output_schema()
    }

    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError> {
        self.inner.init()
    }

    fn reduce_schema(&self) -> Option<SchemaRef> {
        self.inner.reduce_schema()
    }

    fn init_reduce(&self) -> Option<Result<Box<dyn ReduceInstance>, FunctionError>> {
        self.inner.init_reduce()
    }

    fn input_columns(&self) -> Option<Vec<String>> {
        Some(self.columns.clone())
    }
}

/// The per-container state of a map function.
pub trait MapInstance: Send {
    /// One invocation: every batch of one task, in order.
    fn call(&mut self, inv: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError>;

    /// Whether the container is gone (its process died or was killed): the
    /// next invocation then starts a new one, cold.
    fn spent(&self) -> bool {
        false
    }

    /// For a function that reads its split itself: how many records the
    /// last call read, if it knows (the engine, which read nothing, counts
    /// them as the invocation's input).
    fn records_read(&self) -> Option<u64> {
        None
    }
}

/// The per-container state of a reduce function.
pub trait ReduceInstance: Send {
    /// One invocation: every batch of one key partition (rows of one key
    /// are all in the same partition).
    fn call(&mut self, inv: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError>;

    /// Whether the container is gone: see [`MapInstance::spent`].
    fn spent(&self) -> bool {
        false
    }
}

/// A planned function that applies the same per-batch map to every batch:
/// the shape of most builtins.
pub(crate) struct PerBatch<F> {
    pub(crate) schema: SchemaRef,
    pub(crate) make: F,
}

impl<F, I> Planned for PerBatch<F>
where
    F: Fn() -> Result<I, FunctionError> + Send + Sync,
    I: FnMut(&Invocation<'_>, &RecordBatch) -> Result<RecordBatch, FunctionError> + Send + 'static,
{
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError> {
        Ok(Box::new(Each((self.make)()?)))
    }
}

/// Pins a per-batch closure's type to the higher-ranked signature that
/// [`PerBatch`] needs (closures returned from closures do not infer it).
pub(crate) fn per_batch<I>(f: I) -> I
where
    I: FnMut(&Invocation<'_>, &RecordBatch) -> Result<RecordBatch, FunctionError>,
{
    f
}

struct Each<I>(I);

impl<I> MapInstance for Each<I>
where
    I: FnMut(&Invocation<'_>, &RecordBatch) -> Result<RecordBatch, FunctionError> + Send,
{
    fn call(&mut self, inv: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        input.iter().map(|b| (self.0)(inv, b)).collect()
    }
}
