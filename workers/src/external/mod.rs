//! Functions outside this process: `exec` (one process per invocation,
//! records on stdin, result on stdout) and `lambda` (worker processes that
//! speak the AWS Lambda Runtime API). Both plan into the same [`Planned`]
//! shape as the builtins, so the engine's containers, deadlines, retries
//! and records apply to them unchanged.
//!
//! A keyed external stage shuffles its input unchanged (the map-side step
//! passes records through) and calls the function once per partition.

mod api;
pub mod codec;
mod exec;
mod lambda;

use std::io::Read;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use fanout_datasets::Format;
use fanout_jobs::{EventMode, ExternalPlan, IoFormat};

use crate::function::{FunctionError, Invocation, MapInstance, Planned, ReduceInstance};
use exec::Exec;
use lambda::{LambdaSpec, Sandbox};

/// Which backend runs an external function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A process per invocation.
    Exec,
    /// Lambda Runtime API worker processes.
    Lambda,
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

/// Plans an external function: resolves its io formats and output schema
/// and checks that they suit the stage's input.
pub fn plan(backend: Backend, x: &ExternalPlan, ctx: &ExternalContext<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
    let input = ctx.input.clone();
    let params = serde_json::Value::Object(ctx.params.clone()).to_string();
    let keyed = ctx.key.is_some();
    if keyed && x.event != EventMode::Records {
        return Err(FunctionError::permanent("a keyed stage gets its partitions as records: remove event"));
    }
    let io = x.io.unwrap_or_else(|| codec::default_io(if keyed { None } else { ctx.input_format }, &input));
    let output_format = x.output.unwrap_or(io);
    let output = match (&x.schema, backend, output_format) {
        (Some(s), _, _) => s.clone(),
        (None, Backend::Exec, IoFormat::Lines) => Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)])),
        (None, _, _) => input.clone(),
    };
    let kind = match backend {
        Backend::Exec => {
            if io == IoFormat::Lines && (input.fields().len() != 1 || input.field(0).data_type() != &DataType::Utf8) {
                return Err(FunctionError::permanent(format!(
                    "io = \"lines\" needs one utf8 column, and this stage's input is {}: use csv, jsonl or arrow",
                    codec::columns(&input)
                )));
            }
            // A first stage whose io is the input's own format gets the
            // split's bytes as they are in the file, as GNU parallel's
            // --pipepart passes them (csv: standard dialect with a header).
            let plain_csv =
                ctx.csv.header && ctx.csv.delimiter == b',' && ctx.csv.quote == b'"' && ctx.csv.escape.is_none();
            let raw = !keyed
                && matches!(
                    (ctx.input_format, io),
                    (Some(Format::Text), IoFormat::Lines)
                        | (Some(Format::Jsonl), IoFormat::Jsonl)
                        | (Some(Format::Csv), IoFormat::Csv)
                )
                && (ctx.input_format != Some(Format::Csv) || plain_csv);
            Kind::Exec(Arc::new(Exec {
                raw: raw.then(|| exec::Raw {
                    csv: (ctx.input_format == Some(Format::Csv)).then_some(ctx.csv),
                    headers: Default::default(),
                }),
                command: x.command.clone(),
                program: resolve(&x.command[0]),
                env: x.env.clone(),
                cwd: x.cwd.clone(),
                io,
                output: output_format,
                input_schema: input.clone(),
                output_schema: output.clone(),
                params,
            }))
        }
        Backend::Lambda => Kind::Lambda(Arc::new(LambdaSpec {
            command: x.command.clone(),
            env: x.env.clone(),
            cwd: x.cwd.clone(),
            handler: x.handler.clone(),
            event: x.event,
            stage: ctx.stage.to_string(),
            input_schema: input.clone(),
            output_schema: output.clone(),
            input_format: ctx.input_format,
            csv_header: ctx.csv_header,
            params,
            payload_limit: ctx.payload_limit,
            memory_limit: ctx.memory_limit,
            memory_mb: ctx.memory_mb,
        })),
    };
    Ok(Arc::new(External { kind, input, output, keyed }))
}

enum Kind {
    Exec(Arc<Exec>),
    Lambda(Arc<LambdaSpec>),
}

struct External {
    kind: Kind,
    input: SchemaRef,
    output: SchemaRef,
    keyed: bool,
}

impl External {
    fn instance(&self) -> Result<Instance, FunctionError> {
        Ok(match &self.kind {
            // A scratch file for the processes' stderr; a pipe if none.
            Kind::Exec(e) => Instance::Exec(e.clone(), tempfile::tempfile().ok(), None),
            Kind::Lambda(spec) => Instance::Lambda(Box::new(Sandbox::start(spec.clone())?)),
        })
    }
}

impl Planned for External {
    fn output_schema(&self) -> SchemaRef {
        if self.keyed { self.input.clone() } else { self.output.clone() }
    }

    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError> {
        if self.keyed {
            return Ok(Box::new(PassThrough));
        }
        Ok(Box::new(self.instance()?))
    }

    fn reduce_schema(&self) -> Option<SchemaRef> {
        self.keyed.then(|| self.output.clone())
    }

    fn init_reduce(&self) -> Option<Result<Box<dyn ReduceInstance>, FunctionError>> {
        self.keyed.then(|| self.instance().map(|i| Box::new(i) as Box<dyn ReduceInstance>))
    }

    fn reads_split(&self) -> bool {
        match &self.kind {
            Kind::Lambda(s) => s.event == EventMode::Split && !self.keyed,
            Kind::Exec(e) => e.raw.is_some(),
        }
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

/// A container of an external function: nothing for exec (each invocation
/// is a new process), a live worker process for lambda.
enum Instance {
    /// The function, a scratch file for stderr, the records its last call
    /// read itself.
    Exec(Arc<Exec>, Option<std::fs::File>, Option<u64>),
    Lambda(Box<Sandbox>),
}

impl Instance {
    fn invoke(&mut self, inv: &Invocation<'_>, input: &[RecordBatch]) -> Result<Vec<RecordBatch>, FunctionError> {
        match self {
            Instance::Exec(e, stderr, read) => e.call(inv, input, stderr.as_mut(), read),
            Instance::Lambda(s) => s.call(inv, input),
        }
    }

    fn is_spent(&self) -> bool {
        matches!(self, Instance::Lambda(s) if s.spent)
    }
}

impl MapInstance for Instance {
    fn call(&mut self, inv: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        self.invoke(inv, &input)
    }

    fn spent(&self) -> bool {
        self.is_spent()
    }

    fn records_read(&self) -> Option<u64> {
        match self {
            Instance::Exec(_, _, read) => *read,
            Instance::Lambda(_) => None,
        }
    }
}

impl ReduceInstance for Instance {
    fn call(&mut self, inv: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        self.invoke(inv, &input)
    }

    fn spent(&self) -> bool {
        self.is_spent()
    }
}

/// The program of a command: a name is looked up on `PATH` once (a spawn
/// would search it every time); a path is kept as it is.
fn resolve(program: &str) -> std::path::PathBuf {
    if !program.contains('/')
        && let Some(path) = std::env::var_os("PATH")
        && let Some(found) = std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
    {
        return found;
    }
    std::path::PathBuf::from(program)
}

/// How a process ended, for messages: `exited with exit status: 3`, or
/// `was killed by signal 9 (SIGKILL)`.
fn ended(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(s) => {
            let name = nix::sys::signal::Signal::try_from(s).map_or("unknown", |s| s.as_str());
            format!("was killed by signal {s} ({name})")
        }
        None => format!("exited with {status}"),
    }
}

/// Kills a process group (a process started as its group's leader, and
/// every process it started).
fn kill_group(pid: u32) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

/// The end of a process's output, for error messages.
#[derive(Default)]
pub(crate) struct Tail {
    bytes: Vec<u8>,
}

/// Bytes of output kept.
pub(crate) const TAIL_BYTES: usize = 8 * 1024;
/// Lines of output shown.
const TAIL_LINES: usize = 20;

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * TAIL_BYTES {
            self.bytes.drain(..self.bytes.len() - TAIL_BYTES);
        }
    }

    /// Reads `r` to its end, keeping the tail.
    fn drain(r: impl Read) -> Tail {
        let tail = Mutex::new(Tail::default());
        Tail::drain_into(r, &tail);
        tail.into_inner().expect("not poisoned")
    }

    /// Reads `r` to its end into a shared tail.
    fn drain_into(mut r: impl Read, tail: &Mutex<Tail>) {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = r.read(&mut buf) {
            tail.lock().expect("not poisoned").push(&buf[..n]);
        }
    }

    /// The last lines, trimmed.
    fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(TAIL_BYTES);
        let text = String::from_utf8_lossy(&self.bytes[start..]);
        let lines: Vec<&str> = text.trim_end().lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}
