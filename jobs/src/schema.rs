//! The job file as written: serde types that mirror the TOML (or JSON)
//! exactly, with unknown keys rejected. Meaning is checked later, when a
//! [`JobFile`] is validated into a [`Plan`](crate::Plan).

use serde::{Deserialize, Serialize};

use crate::units::{Duration, Size, SizeRange};

/// A job file: input → stages → output, plus platform settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The job's name, shown in reports (default: the file's stem).
    pub name: Option<String>,
    /// Where the records come from.
    pub input: InputSpec,
    /// The stages, in order.
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageSpec>,
    /// Where the result goes.
    pub output: OutputSpec,
    /// `[stream]`: how a stream input is batched and windowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamSpec>,
    /// Where and how invocations run.
    #[serde(default)]
    pub platform: PlatformSpec,
    /// `[storage]`: how to reach object storage (`endpoint`, `region`,
    /// `allow_http`, credentials, ...), over the standard environment.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub storage: std::collections::BTreeMap<String, Setting>,
}

/// A setting's value: text, a number or a boolean.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Setting {
    /// true or false.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Text.
    Text(String),
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::Bool(b) => write!(f, "{b}"),
            Setting::Int(i) => write!(f, "{i}"),
            Setting::Text(t) => f.write_str(t),
        }
    }
}

/// `[input]`: files or a generator, their format and how to split them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// A file, directory or glob, or a list of them.
    pub path: Option<Paths>,
    /// A synthetic input instead of `path`.
    pub generate: Option<GenerateSpec>,
    /// A stream instead of `path`: records as they arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamSourceSpec>,
    /// text | csv | jsonl | parquet | arrow (default: by extension).
    pub format: Option<String>,
    /// Target split size (default 16MiB), or a range of them for a
    /// calibration run ("64KiB..4MiB").
    pub chunk_size: Option<SizeRange>,
    /// csv: whether files start with a header (default true).
    pub header: Option<bool>,
    /// csv: field delimiter, one byte (default ",", or tab for .tsv).
    pub delimiter: Option<String>,
    /// csv: quote byte (default `"`).
    pub quote: Option<String>,
    /// csv: escape byte inside quotes (default: none, quotes are doubled).
    pub escape: Option<String>,
    /// csv, jsonl: columns as "name:type"; default: inferred from a sample.
    pub schema: Option<Vec<String>>,
    /// csv, jsonl: records sampled to infer the schema (default 1000).
    pub infer_rows: Option<usize>,
    /// fail | skip | reject: what to do with a record that cannot be read
    /// (default fail).
    pub on_bad_record: Option<String>,
    /// With skip or reject: the most bad records tolerated, a count (100)
    /// or a percentage ("0.1%") of the records read.
    pub max_bad_records: Option<CountOrText>,
    /// text: utf-8 (default) or utf-8-lossy (invalid bytes replaced).
    pub encoding: Option<String>,
}

/// `input.stream`: where a stream's records come from. Exactly one source
/// is named.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSourceSpec {
    /// A local directory: each file renamed into it is read once, in
    /// order of arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Standard input: lines of text or JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
    /// An HTTP ingest endpoint: the address it listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A Kinesis data stream, by name or ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinesis: Option<String>,
    /// An SQS queue, by its URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<String>,
    /// A Redis server (`redis://HOST:PORT`), with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// The Redis stream's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// kinesis, sqs: the AWS region (default: the stream ARN's, the queue
    /// URL's, or `AWS_REGION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// kinesis, redis: where a new run starts reading: `trim_horizon` (the
    /// oldest record kept; the default) or `latest` (records added after
    /// it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// sqs: how long a received message stays hidden from other consumers
    /// before it is spooled and deleted (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_timeout: Option<Duration>,
    /// redis: the consumer group (default: the job's name), made if
    /// missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// redis: how long another consumer's entry stays pending, unacknowledged,
    /// before this one claims it (XAUTOCLAIM; default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_after: Option<Duration>,
    /// redis: the entry field that holds the record (default: the entry's
    /// fields, as one JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `[stream]`: a stream's batching, windows and checkpoints, named as
/// Lambda's event-source mappings name them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// The most records in a batch (one invocation per stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// The longest a batch waits to fill (MaximumBatchingWindowInSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_window: Option<Duration>,
    /// The window a keyed stage aggregates over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
    /// How late an event may come after the newest seen and still count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_lateness: Option<Duration>,
    /// How often the checkpoint is written, and a map-only stream's
    /// output committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<Duration>,
    /// Split a batch whose function fails in two, and each half again,
    /// down to the record that fails (BisectBatchOnFunctionError).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bisect_on_error: Option<bool>,
    /// Batches of one Kinesis shard in flight at once (1 to 10; default
    /// 1: a shard's batches one after another) — ParallelizationFactor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelization: Option<usize>,
    /// Records of a service (Kinesis, SQS, Redis) older than this when
    /// received — by the service's own time for them — are set aside in
    /// the run directory's `expired/` instead (MaximumRecordAgeInSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_age: Option<Duration>,
    /// Where the records of a batch that fails go, so the stream goes on:
    /// `"rejects"` (the run directory's `rejects/`) or `{ sqs = "URL" }`.
    /// Without it, a failing batch stops the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailureSpec>,
}

/// `[stream] on_failure`: where failed records go.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OnFailureSpec {
    /// `"rejects"`.
    Named(String),
    /// `{ sqs = "URL" }`.
    Queue {
        /// The queue's URL.
        sqs: String,
    },
}

/// `stream.window`: tumbling, sliding or session windows, over an
/// event-time field or over the time records arrive.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Tumbling windows of this length, back to back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tumbling: Option<Duration>,
    /// Sliding windows of this length, one starting `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding: Option<Duration>,
    /// How often a sliding window starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
    /// Session windows: a key's records with less than this gap between
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Duration>,
    /// The event-time field (RFC 3339 text, or epoch seconds or
    /// milliseconds); none: the time each record arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// A number, or a string such as a percentage.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CountOrText {
    /// A whole number.
    Count(u64),
    /// Text.
    Text(String),
}

/// One path or a list of them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Paths {
    /// A single file, directory or glob.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Paths {
    /// The paths as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Paths::One(p) => vec![p.clone()],
            Paths::Many(ps) => ps.clone(),
        }
    }
}

/// `[input.generate]`: a deterministic synthetic input.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSpec {
    /// text | csv | jsonl | parquet.
    pub kind: String,
    /// About this many bytes.
    pub size: Option<Size>,
    /// Exactly this many records.
    pub rows: Option<u64>,
    /// The seed (default 1).
    pub seed: Option<u64>,
}

/// `[[stage]]`: one function applied to every split (map) or to every
/// partition of its keyed input (reduce).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage's name (default: the function's name).
    pub name: Option<String>,
    /// A builtin function's name, or a table naming an external one.
    pub function: FunctionSpec,
    /// The function's parameters.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Makes the stage keyed: its input is shuffled by these columns.
    pub key: Option<Vec<String>>,
    /// Partitions of a keyed stage (default: the concurrency).
    pub partitions: Option<usize>,
    /// In-flight invocations of this stage (default: the platform's).
    pub concurrency: Option<usize>,
}

/// A function reference: a builtin by name, or an external function.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum FunctionSpec {
    /// A builtin, by name.
    Builtin(String),
    /// An external function.
    External(Box<FunctionTable>),
}

/// `function = { exec = [...] }` and its siblings: an external function.
/// One key names its kind and holds what the kind runs (`exec = [argv]`,
/// `lambda = [argv]`); the settings below apply to every kind; the kind
/// may accept more keys of its own (exec: `io`, `output`; lambda:
/// `event`, `handler`). Which kinds and keys exist is up to the function
/// catalog, so they are checked at validation, each error at its key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FunctionTable {
    /// The columns the function returns, as "name:type" (default: the
    /// kind's, e.g. `line` for exec's lines output, else the stage's input
    /// columns).
    pub schema: Option<Vec<String>>,
    /// Environment variables for the function's processes: strings, or
    /// numbers and booleans as written (`DELAY = 0.3` is `0.3`).
    #[serde(default, deserialize_with = "env_values")]
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// The working directory of the function's processes.
    pub cwd: Option<String>,
    /// The kind's key and the kind's own settings, as written.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// An `env` table's values as the strings a process gets: a number or a
/// boolean is written as TOML (and `--set`) has it.
fn env_values<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::collections::BTreeMap<String, String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let table: Option<std::collections::BTreeMap<String, Scalar>> = Option::deserialize(d)?;
    Ok(table.map(|t| {
        t.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Scalar::Text(s) => s,
                    Scalar::Int(i) => i.to_string(),
                    Scalar::Float(f) => f.to_string(),
                    Scalar::Bool(b) => b.to_string(),
                };
                (k, v)
            })
            .collect()
    }))
}

/// `[output]`: where and how the result is written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The output file.
    pub path: String,
    /// csv | jsonl | parquet | arrow (default: by extension).
    pub format: Option<String>,
    /// Sort columns; a leading "-" sorts descending.
    #[serde(default)]
    pub sort: Vec<String>,
    /// Keep only the first rows.
    pub limit: Option<u64>,
    /// "error" (default): fail if the output exists; "overwrite": replace it.
    pub mode: Option<String>,
    /// A stream's HTTP sink: each file committed is also POSTed to this
    /// URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<String>,
}

/// A cold start: a fixed duration, or a lognormal distribution.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ColdStartSpec {
    /// Always this long.
    Fixed(Duration),
    /// Lognormal.
    LogNormal {
        /// The median.
        median: Duration,
        /// The spread of the log (default 0.5).
        sigma: Option<f64>,
    },
}

/// `[platform]`: where invocations run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSpec {
    /// local | aws-lambda | gcp-functions | azure-functions (default local).
    pub preset: Option<String>,
    /// In-flight invocations (default: the number of cores).
    pub concurrency: Option<usize>,
    /// Memory of each container, for billing (e.g. "1769MB").
    pub memory: Option<Size>,
    /// How long an invocation may run before it is abandoned (default: the
    /// preset's limit; none for local).
    pub timeout: Option<Duration>,
    /// A new container's start: "300ms", or { median = "250ms", sigma = 0.5 }
    /// (lognormal); default: the preset's.
    pub cold_start: Option<ColdStartSpec>,
    /// How long an idle container lives before it is retired (default: the
    /// preset's; local: for ever).
    pub keep_alive: Option<Duration>,
    /// The platform's own time per invocation (default: the preset's).
    pub invocation_overhead: Option<Duration>,
    /// Inject the modelled cold starts and overheads into this run (default false).
    pub emulate: Option<bool>,
    /// Back up straggling tasks (default: true on FaaS presets, false on local).
    pub backups: Option<bool>,
    /// A task straggles when it runs this many times its phase's median (default 3).
    pub backup_after: Option<f64>,
    /// Backups start once this fraction of a phase's tasks is done (default 0.9).
    pub backup_when_done: Option<f64>,
    /// Retries of a failed invocation (default 2; bad input is not retried).
    pub retries: Option<u32>,
    /// The first retry's delay, doubled for each later one, with jitter (default "100ms").
    pub backoff: Option<Duration>,
    /// Failed tasks tolerated, as a percentage of their phase's tasks (default: none).
    pub tolerated_failure_percent: Option<f64>,
    /// Failed tasks tolerated, as a count (default: none).
    pub tolerated_failure_count: Option<u64>,
    /// Price of one request in dollars (default: the preset's).
    pub price_per_request: Option<f64>,
    /// Price of one GB-second in dollars (default: the preset's).
    pub price_per_gb_second: Option<f64>,
    /// Billed durations round up to this (default: the preset's).
    pub billing_granularity: Option<Duration>,
    /// The largest event or response of an invocation (default: the
    /// preset's; local: Lambda's 6 MB).
    pub payload_limit: Option<Size>,
}
