//! One container of a lambda function: a worker process and the Runtime
//! API it talks to ([`super::api`]), served by the thread that invokes it.
//! Its init phase lasts from spawn to its first
//! `GET .../invocation/next`; an init error fails the stage with the
//! function's own message. A process past its deadline is killed (with
//! its process group) and the attempt fails; a crashed one fails its
//! attempt; either way the container is spent and the next invocation
//! starts a new one.

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;

use crate::external::Container;
use crate::external::api::{Api, Event, Happened, Outcome, POLL};
use crate::external::event::{EventMode, EventSpec, records_read};
use crate::external::process::{self, Tail, ended};
use crate::function::{FunctionError, Invocation};

/// A lambda function's settings, shared by its sandboxes.
pub(crate) struct LambdaSpec {
    pub(crate) command: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<std::path::PathBuf>,
    pub(crate) handler: String,
    pub(crate) stage: String,
    /// Its events and responses.
    pub(crate) events: EventSpec,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) memory_mb: u64,
}

/// How long a new process may take to ask for its first event (Lambda's
/// init phase limit).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

static SANDBOXES: AtomicU64 = AtomicU64::new(0);

/// How waiting for an invocation's answer ended.
enum Waited {
    Outcome(Outcome),
    Stopped,
    Expired,
    Exited(std::process::ExitStatus),
}

/// A live worker process and its Runtime API.
pub(crate) struct Sandbox {
    spec: Arc<LambdaSpec>,
    child: Child,
    /// The sandbox's Runtime API, served by the thread that invokes it,
    /// only while it waits for the process: no hand-off between threads
    /// on the way to the function and back.
    api: Api,
    logs: Arc<Mutex<Tail>>,
    /// The response decoder, kept from one invocation to the next.
    decoder: Option<arrow_json::reader::Decoder>,
    id: u64,
    seq: u64,
    /// The process died or was killed: the container must be replaced.
    spent: bool,
    /// The records the function said it read from its split, last call.
    read: Option<u64>,
}

impl Sandbox {
    /// Starts a process and waits for its init phase to end.
    pub(crate) fn start(spec: Arc<LambdaSpec>) -> Result<Sandbox, FunctionError> {
        let io = |e: std::io::Error| FunctionError::transient(format!("runtime API: {e}"));
        let api = Api::bind(spec.events.payload_limit, &spec.stage).map_err(io)?;
        let id = SANDBOXES.fetch_add(1, Relaxed);
        let child = spawn(&spec, api.port().map_err(io)?, id)?;
        let logs = Arc::new(Mutex::new(Tail::default()));
        let mut sandbox = Sandbox { spec, child, api, logs, decoder: None, id, seq: 0, spent: false, read: None };
        let pipes = [
            sandbox.child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            sandbox.child.stderr.take().map(|p| Box::new(p) as _),
        ];
        for pipe in pipes.into_iter().flatten() {
            let logs = sandbox.logs.clone();
            std::thread::spawn(move || Tail::drain_into(pipe, &logs));
        }
        let started = Instant::now();
        let outcome = loop {
            match sandbox.api.turn(Instant::now() + POLL) {
                Ok(Some(Happened::Ready)) => break Ok(()),
                Ok(Some(Happened::InitError(message))) => break Err(Err(format!("init error: {message}"))),
                Ok(Some(Happened::Answered(_))) => {}
                Ok(None) => {
                    if let Ok(Some(status)) = sandbox.child.try_wait() {
                        break Err(Ok(Some(status)));
                    }
                    if started.elapsed() > INIT_TIMEOUT {
                        break Err(Ok(None));
                    }
                }
                Err(e) => break Err(Err(format!("the runtime API failed: {e}"))),
            }
        };
        match outcome {
            Ok(()) => Ok(sandbox),
            Err(failure) => {
                sandbox.spent = true;
                let program = &sandbox.spec.command[0];
                Err(match failure {
                    Err(message) => FunctionError::permanent(sandbox.with_logs(message)),
                    Ok(Some(status)) => FunctionError::permanent(
                        sandbox.with_logs(format!("`{program}` {} before asking for its first event", ended(status))),
                    ),
                    Ok(None) => FunctionError::transient(sandbox.with_logs(format!(
                        "init timed out: no request for an event within {}",
                        humantime::format_duration(INIT_TIMEOUT)
                    ))),
                })
            }
        }
    }

    /// One invocation.
    fn invoke(&mut self, inv: &Invocation<'_>, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>, FunctionError> {
        self.read = None;
        let body = self.spec.events.event(inv, batches)?;
        self.seq += 1;
        let id = request_id(self.id, self.seq);
        let now = Instant::now();
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let left = inv.deadline.map_or(Duration::from_secs(900), |d| d.saturating_duration_since(now));
        let trace = trace_id(epoch, self.id, self.seq);
        self.api.begin(Event { id, deadline_ms: (epoch + left).as_millis() as u64, trace, body });
        let waited = loop {
            let until = Instant::now() + POLL;
            match self.api.turn(inv.deadline.map_or(until, |d| d.min(until))) {
                // The 202 is written before the outcome is returned.
                Ok(Some(Happened::Answered(outcome))) => break Waited::Outcome(outcome),
                Ok(Some(_)) => {}
                Ok(None) if inv.expired() => break Waited::Expired,
                Ok(None) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        break Waited::Exited(status);
                    }
                }
                Err(_) => break Waited::Stopped,
            }
        };
        match waited {
            Waited::Outcome(Outcome::Response(body)) => self.records(&body),
            Waited::Outcome(Outcome::Error { kind, message }) => {
                Err(FunctionError::transient(self.memory(format!("{kind}: {message}"))))
            }
            Waited::Outcome(Outcome::TooLarge) => Err(FunctionError::permanent(format!(
                "the response is over the payload limit of {} bytes (platform.payload_limit)",
                self.spec.events.payload_limit
            ))),
            Waited::Stopped => {
                self.spent = true;
                Err(FunctionError::transient("the sandbox stopped"))
            }
            Waited::Expired => {
                self.kill();
                if inv.cancelled() {
                    return Err(FunctionError::transient("cancelled; the process was killed"));
                }
                let took = humantime::format_duration(Duration::from_millis(now.elapsed().as_millis() as u64));
                Err(FunctionError::transient(self.with_logs(format!(
                    "timed out: past its deadline {took} after its event was sent; the process was killed"
                ))))
            }
            Waited::Exited(status) => {
                self.spent = true;
                let program = &self.spec.command[0];
                let message = format!("`{program}` {} during the invocation", ended(status));
                Err(FunctionError::transient(self.memory(self.with_logs(message))))
            }
        }
    }

    /// The response's records as batches of the declared schema (and what
    /// a function that read its split says it read).
    fn records(&mut self, body: &[u8]) -> Result<Vec<RecordBatch>, FunctionError> {
        let batches = self.spec.events.records(body, &mut self.decoder)?;
        if self.spec.events.event != EventMode::Records {
            self.read = records_read(body);
        }
        Ok(batches)
    }

    /// Marks an error as out of memory when it looks like one and the
    /// process had a memory limit.
    fn memory(&self, message: String) -> String {
        let Some(limit) = self.spec.memory_limit else { return message };
        let logs = self.logs.lock().expect("not poisoned").text();
        let markers = ["MemoryError", "memory allocation of", "out of memory", "Cannot allocate memory", "bad_alloc"];
        if markers.iter().any(|m| message.contains(m) || logs.contains(m)) {
            format!("out of memory: the function passed its limit of {} MB (platform.memory); {message}", limit >> 20)
        } else {
            message
        }
    }

    fn with_logs(&self, message: String) -> String {
        self.logs.lock().expect("not poisoned").under(message, "output")
    }

    fn kill(&mut self) {
        self.spent = true;
        process::kill_container(self.child.id());
    }
}

impl Container for Sandbox {
    fn call(&mut self, inv: &Invocation<'_>, input: &[RecordBatch]) -> Result<Vec<RecordBatch>, FunctionError> {
        self.invoke(inv, input)
    }

    fn spent(&self) -> bool {
        self.spent
    }

    fn records_read(&self) -> Option<u64> {
        self.read
    }
}

impl Drop for Sandbox {
    /// The container's shutdown: SIGTERM, a grace period, then a kill.
    fn drop(&mut self) {
        process::shut_down(&mut self.child);
    }
}

/// Starts the worker process with Lambda's environment.
fn spawn(spec: &LambdaSpec, port: u16, id: u64) -> Result<Child, FunctionError> {
    let program = &spec.command[0];
    let root = match &spec.cwd {
        Some(d) => std::path::absolute(d),
        None => std::env::current_dir(),
    }
    .map_err(|e| FunctionError::transient(format!("the working directory: {e}")))?;
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let cannot_start = |e: std::io::Error| FunctionError::permanent(format!("cannot start `{program}`: {e}"));
    let mut cmd = process::command(program.as_ref(), &spec.command[1..], spec.cwd.as_deref(), spec.memory_limit)
        .map_err(cannot_start)?;
    cmd.env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("_HANDLER", &spec.handler)
        .env("AWS_LAMBDA_FUNCTION_NAME", &spec.stage)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", spec.memory_mb.to_string())
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", spec.stage))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("{}/[$LATEST]{id:032x}", date[..10].replace('-', "/")))
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .env("AWS_EXECUTION_ENV", "AWS_Lambda_fanout")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("LAMBDA_TASK_ROOT", &root)
        .env("LAMBDA_RUNTIME_DIR", &root)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    process::spawn(cmd).map_err(cannot_start)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A request id shaped like Lambda's (a version 4 UUID).
fn request_id(sandbox: u64, seq: u64) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let a = mix(sandbox.rotate_left(40) ^ seq ^ nanos);
    let b = mix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// An X-Ray trace header shaped like Lambda's.
fn trace_id(epoch: Duration, sandbox: u64, seq: u64) -> String {
    let a = mix(sandbox ^ seq.rotate_left(32));
    let b = mix(a);
    format!("Root=1-{:08x}-{:08x}{:016x};Parent={:016x};Sampled=0", epoch.as_secs(), a >> 32, b, mix(b))
}
