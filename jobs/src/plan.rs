//! A validated job: what [`validate`](crate::validate) makes of a job file,
//! every value checked and resolved (formats, schema, defaults), ready to
//! compile against its data and run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fanout_datasets::generator::{Amount, GenSpec};
use fanout_datasets::{DatasetOptions, Format, Storage};
use serde_json::{Map, Value};

use crate::catalog::FunctionRef;
use crate::platform::PlatformPlan;

/// A validated job, ready to plan and run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The job's name.
    pub name: String,
    /// The input.
    pub input: InputPlan,
    /// The stages, in order.
    pub stages: Vec<StagePlan>,
    /// The output.
    pub output: OutputPlan,
    /// The platform.
    pub platform: PlatformPlan,
    /// Object storage: how to reach it, and the requests the run makes
    /// (the input's options hold the same).
    pub storage: Arc<Storage>,
    /// A stream's batching and windows, when the input is a stream.
    pub stream: Option<StreamPlan>,
}

/// A stream input's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSource {
    /// A local directory that files are renamed into.
    Dir(PathBuf),
    /// Objects that appear under an object-storage prefix (a URL ending
    /// in `/`).
    Prefix(String),
    /// Standard input.
    Stdin,
    /// An HTTP ingest endpoint listening on this address.
    Http(String),
    /// A Kinesis data stream.
    Kinesis {
        /// Its name (or ARN).
        stream: String,
        /// Its region.
        region: String,
        /// Where a new run starts reading.
        start: StartAt,
    },
    /// An SQS queue.
    Sqs {
        /// Its URL.
        url: String,
        /// Its region.
        region: String,
        /// How long a received message stays hidden.
        visibility_timeout: std::time::Duration,
    },
    /// A Redis stream, read by a consumer group.
    Redis {
        /// The server, `redis://HOST:PORT`.
        url: String,
        /// The stream's key.
        key: String,
        /// The consumer group.
        group: String,
        /// Where a new group starts reading.
        start: StartAt,
        /// How long another consumer's entry stays pending before it is
        /// claimed.
        claim_after: std::time::Duration,
        /// The entry field holding the record; none: the entry's fields as
        /// one JSON object.
        field: Option<String>,
    },
}

impl StreamSource {
    /// Whether the source is a service fanout receives records from and
    /// spools into its run directory (Kinesis, SQS, Redis, object storage).
    pub fn is_remote(&self) -> bool {
        matches!(
            self,
            StreamSource::Kinesis { .. }
                | StreamSource::Sqs { .. }
                | StreamSource::Redis { .. }
                | StreamSource::Prefix(_)
        )
    }
}

/// Where a new run starts reading a source that keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record kept.
    TrimHorizon,
    /// Records added after the run starts.
    Latest,
}

/// The validated `[stream]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPlan {
    /// The most records in a batch.
    pub batch_size: usize,
    /// The longest a batch waits to fill.
    pub batch_window: std::time::Duration,
    /// The window of the keyed stage, if any.
    pub window: Option<WindowPlan>,
    /// How far behind the newest event an event may come and still count.
    pub allowed_lateness: std::time::Duration,
    /// How often the checkpoint is written.
    pub checkpoint_every: std::time::Duration,
    /// Whether a failing batch is split down to the records that fail.
    pub bisect_on_error: bool,
    /// Where failed records go; none: a failing batch stops the stream.
    pub on_failure: Option<OnFailure>,
    /// Records of a service older than this when received are set aside.
    pub max_record_age: Option<std::time::Duration>,
    /// Batches of one source partition (a Kinesis shard) in flight at
    /// once; none: as many as the workers take (a source without
    /// partitions).
    pub parallelization: Option<usize>,
}

/// Where a stream's failed records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// The run directory's `rejects/`.
    Rejects,
    /// An SQS queue.
    Sqs {
        /// Its URL.
        url: String,
        /// Its region.
        region: String,
    },
}

impl Plan {
    /// Whether the input is a stream.
    pub fn is_stream(&self) -> bool {
        matches!(self.input.source, InputSource::Stream(_))
    }
}

/// A stream's windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPlan {
    /// Tumbling, sliding or session.
    pub kind: WindowKind,
    /// A window's length; a session's gap.
    pub size: std::time::Duration,
    /// The event-time column; none: arrival time.
    pub time: Option<String>,
}

/// The kinds of window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Back to back.
    Tumbling,
    /// One starting every so often, overlapping.
    Sliding {
        /// How often one starts.
        every: std::time::Duration,
    },
    /// Per key: records less than the gap apart.
    Session,
}

impl WindowPlan {
    /// How often a window starts (a tumbling window's length).
    pub fn every(&self) -> std::time::Duration {
        match self.kind {
            WindowKind::Sliding { every } => every,
            WindowKind::Tumbling | WindowKind::Session => self.size,
        }
    }
}

/// Where the records come from.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// Files, directories or globs.
    Paths(Vec<String>),
    /// A generated file, made once and kept in the cache directory.
    Generate(GenSpec),
    /// Records as they arrive.
    Stream(StreamSource),
}

/// The validated input.
#[derive(Debug, Clone)]
pub struct InputPlan {
    /// Paths or a generator.
    pub source: InputSource,
    /// How to split and read it; the format is always set.
    pub options: DatasetOptions,
}

impl InputPlan {
    /// The input paths, generating the input into `cache_dir` first if the
    /// job names a generator (an existing generated file is reused: it is
    /// only ever renamed into place complete).
    pub fn paths(&self, cache_dir: &Path) -> fanout_datasets::Result<Vec<String>> {
        match &self.source {
            InputSource::Paths(p) => Ok(p.clone()),
            InputSource::Generate(spec) => {
                let path = cache_dir.join(generated_name(spec));
                if !path.is_file() {
                    fanout_datasets::generator::generate(spec, &path)?;
                }
                Ok(vec![path.display().to_string()])
            }
            InputSource::Stream(_) => Err(fanout_datasets::Error::Config(
                "a stream input has no files to list: it is read as it arrives".into(),
            )),
        }
    }
}

/// The cache file name of a generated input.
pub fn generated_name(spec: &GenSpec) -> String {
    let amount = match spec.amount {
        Amount::Bytes(b) => format!("{b}b"),
        Amount::Rows(r) => format!("{r}rows"),
    };
    format!("gen-{}-{amount}-seed{}.{}", spec.kind, spec.seed, spec.kind.format().extension())
}

/// A validated stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    /// Its unique name.
    pub name: String,
    /// Its function.
    pub function: FunctionRef,
    /// The function's parameters.
    pub params: Map<String, Value>,
    /// Key columns of a keyed (reduce) stage; `None` for a map stage.
    pub key: Option<Vec<String>>,
    /// Partitions of a keyed stage.
    pub partitions: usize,
    /// In-flight invocations.
    pub concurrency: usize,
}

/// Whether an existing output may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Fail if the output exists.
    Error,
    /// Replace it.
    Overwrite,
}

/// One sort column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The column.
    pub column: String,
    /// Largest first.
    pub descending: bool,
}

/// The validated output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputPlan {
    /// The output file.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Sort order of the gathered rows.
    pub sort: Vec<SortKey>,
    /// Keep only this many rows.
    pub limit: Option<u64>,
    /// What to do if it exists.
    pub mode: OutputMode,
    /// A stream's HTTP sink: the URL each committed file is POSTed to.
    pub post: Option<String>,
}

impl OutputPlan {
    /// Whether a stream's output goes to standard output (`path = "-"`).
    pub fn is_stdout(&self) -> bool {
        self.path.as_os_str() == "-"
    }
}
