//! Functions outside this process. Each kind is a [`Backend`], in a file
//! of its own, registered once in the [`Registry`](crate::Registry):
//!
//! - `exec` ([`Exec`]): one process per invocation, records on stdin,
//!   result on stdout;
//! - `lambda` ([`Lambda`]): worker processes that speak the AWS Lambda
//!   Runtime API, each a container (`sandbox.rs`, `api.rs`);
//! - `http` ([`Http`]): functions behind HTTP endpoints (`http.rs`);
//! - `aws_lambda` ([`AwsLambda`]): functions on AWS Lambda, called with the
//!   Invoke API and SigV4 (`aws_lambda.rs`, on the http backend's client).
//!
//! A backend says which keys its function tables take, checks them for
//! `fanout validate` (through the jobs crate's
//! [`FunctionCatalog`](fanout_jobs::FunctionCatalog), which the registry
//! implements), and plans them into the same [`Planned`] shape as the
//! builtins, so the engine's containers, deadlines, retries and records
//! apply to them unchanged. A new kind is one file implementing
//! [`Backend`] and one [`Registry::register_backend`](crate::Registry::register_backend).
//!
//! A keyed external stage shuffles its input unchanged (the map-side step
//! passes records through) and calls the function once per partition.

mod api;
mod aws_lambda;
pub mod codec;
mod event;
mod exec;
mod http;
mod lambda;
mod process;
mod sandbox;
mod settings;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_datasets::Format;
use fanout_jobs::{Environment, ExternalCheck, ExternalChecked, ExternalRef};

use crate::function::{FunctionError, Invocation, MapInstance, Planned, ReduceInstance};

pub use aws_lambda::AwsLambda;
pub use exec::Exec;
pub use http::Http;
pub use lambda::Lambda;

/// A kind of function outside the process: how job files name it, which
/// settings it takes and how they are checked, and how it is planned.
pub trait Backend: Send + Sync {
    /// The key that names the kind in a function table: `exec`, `lambda`.
    fn kind(&self) -> &str;

    /// The keys its function tables accept besides its own and those of
    /// every kind ([`fanout_jobs::COMMON_KEYS`]: `schema`, `env`, `cwd`).
    fn keys(&self) -> &[&str] {
        &[]
    }

    /// Checks a function table of this kind for `fanout validate`: its
    /// settings, and (through `env`) that what it runs can be found. Each
    /// problem names its field in the table, which validation turns into
    /// a `file:line:col`. Also names the stage when the job does not.
    fn check(&self, function: &ExternalCheck<'_>, env: &dyn Environment) -> ExternalChecked;

    /// Plans a validated function of this kind for its stage: resolves its
    /// formats and output schema and checks that they suit the stage's
    /// input.
    fn plan(&self, function: &ExternalRef, ctx: &ExternalContext<'_>) -> Result<Arc<dyn Planned>, FunctionError>;
}

/// What planning an external function needs besides its job settings.
#[derive(Debug, Clone)]
pub struct ExternalContext<'a> {
    /// The stage's name.
    pub stage: &'a str,
    /// The schema of the stage's input.
    pub input: &'a SchemaRef,
    /// The input's format when the stage reads the input's splits (the
    /// first stage); `None` for a stage fed by another.
    pub input_format: Option<Format>,
    /// Whether csv input files start with a header.
    pub csv_header: bool,
    /// The csv input's dialect (for passing its bytes as they are).
    pub csv: fanout_datasets::CsvOptions,
    /// Key columns of a keyed stage.
    pub key: Option<&'a [String]>,
    /// The stage's params, passed to the function.
    pub params: &'a serde_json::Map<String, serde_json::Value>,
    /// The largest event or response, in bytes.
    pub payload_limit: u64,
    /// The memory limit of each worker process, in bytes.
    pub memory_limit: Option<u64>,
    /// The platform's memory setting, in MB.
    pub memory_mb: u64,
}

impl ExternalContext<'_> {
    /// The stage's params as JSON text.
    fn params_json(&self) -> String {
        serde_json::Value::Object(self.params.clone()).to_string()
    }

    /// How the stage's events are made (`event`: what they carry) and its
    /// responses of `output` read.
    fn events(&self, event: event::EventMode, output: SchemaRef) -> event::EventSpec {
        event::EventSpec {
            event,
            input_schema: self.input.clone(),
            output_schema: output,
            input_format: self.input_format,
            csv_header: self.csv_header,
            params: self.params_json(),
            key: self.key.map(<[String]>::to_vec),
            payload_limit: self.payload_limit,
        }
    }
}

/// A planned external function of one kind: how its containers start.
trait Launch: Send + Sync {
    /// A container's init (its cold start).
    fn start(self: Arc<Self>) -> Result<Box<dyn Container>, FunctionError>;

    /// Whether a map invocation reads its split itself (see
    /// [`Planned::reads_split`]).
    fn reads_split(&self) -> bool;

    /// Whether the function runs on another host, which reads a shuffle's
    /// pieces from object storage itself (see [`Planned::reads_shuffle`]).
    fn remote(&self) -> bool {
        false
    }
}

/// A container of an external function: a scratch file for exec (each
/// invocation is a new process), a live worker process for lambda.
trait Container: Send {
    /// One invocation.
    fn call(&mut self, inv: &Invocation<'_>, input: &[RecordBatch]) -> Result<Vec<RecordBatch>, FunctionError>;

    /// The container is gone and must be replaced.
    fn spent(&self) -> bool {
        false
    }

    /// Records the last call read itself, if it read its split.
    fn records_read(&self) -> Option<u64> {
        None
    }
}

/// An external function planned for its stage, of any kind: a map stage
/// calls it per split; a keyed stage passes records through on the map
/// side and calls it per partition.
fn planned(function: Arc<dyn Launch>, input: SchemaRef, output: SchemaRef, keyed: bool) -> Arc<dyn Planned> {
    Arc::new(External { function, input, output, keyed })
}

struct External {
    function: Arc<dyn Launch>,
    input: SchemaRef,
    output: SchemaRef,
    keyed: bool,
}

impl Planned for External {
    fn output_schema(&self) -> SchemaRef {
        if self.keyed { self.input.clone() } else { self.output.clone() }
    }

    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError> {
        if self.keyed {
            return Ok(Box::new(PassThrough));
        }
        Ok(Box::new(Instance(self.function.clone().start()?)))
    }

    fn reduce_schema(&self) -> Option<SchemaRef> {
        self.keyed.then(|| self.output.clone())
    }

    fn init_reduce(&self) -> Option<Result<Box<dyn ReduceInstance>, FunctionError>> {
        self.keyed.then(|| self.function.clone().start().map(|c| Box::new(Instance(c)) as Box<dyn ReduceInstance>))
    }

    fn reads_split(&self) -> bool {
        !self.keyed && self.function.reads_split()
    }

    fn reads_shuffle(&self) -> bool {
        self.keyed && self.function.remote()
    }

    fn writes_shuffle(&self) -> bool {
        !self.keyed && self.function.remote()
    }
}

/// The map side of a keyed external stage: records go to the shuffle as
/// they are.
struct PassThrough;

impl MapInstance for PassThrough {
    fn call(&mut self, _: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        Ok(input)
    }
}

/// A container, as a map or reduce instance.
struct Instance(Box<dyn Container>);

impl MapInstance for Instance {
    fn call(&mut self, inv: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        self.0.call(inv, &input)
    }

    fn spent(&self) -> bool {
        self.0.spent()
    }

    fn records_read(&self) -> Option<u64> {
        self.0.records_read()
    }
}

impl ReduceInstance for Instance {
    fn call(&mut self, inv: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        self.0.call(inv, &input)
    }

    fn spent(&self) -> bool {
        self.0.spent()
    }
}
