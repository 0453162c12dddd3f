//! A function host: the registry's builtins served over HTTP, so that any
//! machine, container platform or FaaS platform can run fanout's
//! functions for the `http` backend of another fanout (`fanout serve`).
//!
//! - `POST /functions/{name}`: the event contract (`{"stage", "task",
//!   "attempt", "params", "records": [...]}`), answered
//!   `{"records": [...]}`. A function's error is 500 (retried by the
//!   caller) or 400 when retrying cannot help, with a body
//!   `{"errorType", "errorMessage"}`.
//! - `POST /2015-03-31/functions/{name}/invocations`: the AWS Lambda
//!   Invoke API, as the SDKs expect it: a function error is 200 with
//!   `X-Amz-Function-Error: Unhandled`; an unknown function is 404
//!   `ResourceNotFoundException`; throttling is 429
//!   `TooManyRequestsException`. Its `X-Amz-Invocation-Type` is
//!   followed: `DryRun` checks the request and answers 204 without
//!   running it; `Event` answers 202 with an empty body at once, then
//!   runs the invocation when a slot is free (not throttled: queued, as
//!   Lambda queues asynchronous invocations), retries a function error
//!   twice, and says on stderr how it ended.
//! - `GET /healthz`: 200 while serving, 503 while draining, with the
//!   invocations running and the concurrency (`{"status": "ok",
//!   "running": 1, "concurrency": 8}`); it needs no token.
//!
//! At most `concurrency` invocations run at once: one more is refused
//! with 429, as Lambda throttles. A body over the payload limit is 413; an
//! unknown function 404. With a token, a request without
//! `Authorization: Bearer TOKEN` is 401. Each connection is served by a
//! thread of its own (keep-alive, requests in order). Once `stop` is set,
//! the host drains: it answers what is in flight, goes on accepting but
//! answers every new request 503 with `Connection: close`, and returns
//! once nothing is in flight.
//!
//! A builtin is planned for the schema its records have (inferred as a
//! jsonl input's is) and the event's params; plans and warm instances are
//! kept per connection for the next invocation of the same function,
//! params and schema.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde_json::value::RawValue;

use crate::external::codec;
use crate::function::{FunctionError, Invocation, MapInstance, StageSpec};
use crate::http1::{Body, Connection, Received, Reply, Request};
use crate::registry::Registry;

/// How a host serves.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Invocations at once; one more is refused (429).
    pub concurrency: usize,
    /// The largest request body, in bytes (413 past it).
    pub payload_limit: u64,
    /// A bearer token every request must carry.
    pub token: Option<String>,
    /// Functions of a job file (exec, lambda, ...), by stage name, served
    /// beside the builtins.
    pub functions: Vec<JobFunction>,
}

/// An external function of a job file, served under its stage's name.
#[derive(Debug, Clone)]
pub struct JobFunction {
    /// The stage's name: the function's name on the host.
    pub name: String,
    /// The function.
    pub function: fanout_jobs::ExternalRef,
    /// The job's platform settings its processes get.
    pub memory_limit: Option<u64>,
    /// The platform's memory setting, in MB.
    pub memory_mb: u64,
    /// The job's `platform.timeout`: each invocation's deadline, past
    /// which its processes are killed and the caller gets a 500.
    pub timeout: Option<std::time::Duration>,
}

/// What a name on the host serves.
enum Served<'a> {
    Builtin(&'a dyn crate::function::Builtin),
    Job(&'a JobFunction, &'a dyn crate::external::Backend),
}

impl Served<'_> {
    /// Plans the function for records of `schema` with `params`.
    fn plan(
        &self,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        schema: &SchemaRef,
        key: Option<&[String]>,
        payload_limit: u64,
    ) -> Result<Arc<dyn crate::function::Planned>, FunctionError> {
        match self {
            Served::Builtin(b) => b.plan(&StageSpec { params, input: schema, key }),
            Served::Job(f, backend) => backend.plan(
                &f.function,
                &crate::external::ExternalContext {
                    stage: name,
                    input: schema,
                    input_format: None,
                    csv_header: true,
                    csv: fanout_datasets::CsvOptions::default(),
                    key,
                    params,
                    payload_limit,
                    memory_limit: f.memory_limit,
                    memory_mb: f.memory_mb,
                },
            ),
        }
    }
}

/// Serves the builtins of `registry` on `listener` until `stop` is set,
/// then drains: what is in flight is answered, new requests are refused.
pub fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    opts: HostOptions,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let shared = Arc::new(Shared {
        registry,
        opts,
        running: AtomicUsize::new(0),
        queued: AtomicUsize::new(0),
        requests: AtomicUsize::new(0),
        stop,
        done: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
    });
    loop {
        // Draining: the host goes on accepting, and answers 503 with
        // `Connection: close` (health checks included), until the
        // invocations in flight have been answered.
        if shared.stop.load(Ordering::Relaxed)
            && shared.running.load(Ordering::Acquire) == 0
            && shared.queued.load(Ordering::Acquire) == 0
        {
            break;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let mine = shared.clone();
                let spawned = std::thread::Builder::new().name("fanout-serve".into()).spawn(move || {
                    let _ = serve_connection(stream, &mine);
                    mine.connections.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    shared.connections.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
            Err(e) => return Err(e),
        }
    }
    drop(listener);
    shared.done.store(true, Ordering::Relaxed);
    // Connections answer what they have and close.
    while shared.connections.load(Ordering::Relaxed) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// What every connection shares.
struct Shared {
    registry: Arc<Registry>,
    opts: HostOptions,
    /// Invocations running now.
    running: AtomicUsize,
    /// `Event` invocations accepted and not yet ended (the drain waits
    /// for them).
    queued: AtomicUsize,
    /// Invocations taken on the Invoke API so far, for their request ids.
    requests: AtomicUsize,
    stop: Arc<AtomicBool>,
    /// The drain is over: idle connections close (until then, a request
    /// on a kept-alive connection gets its 503).
    done: AtomicBool,
    connections: AtomicUsize,
}

/// How long a connection waits for a request before it looks at `stop`.
const IDLE: Duration = Duration::from_millis(50);

/// A planned builtin kept warm on a connection: which function and params
/// it is for, and a decoder of its input's schema.
struct Warm {
    name: String,
    params: String,
    key: Option<Vec<String>>,
    schema: SchemaRef,
    decoder: arrow_json::reader::Decoder,
    instance: Box<dyn MapInstance>,
    /// For a keyed stage's partition: the reduce that follows the
    /// map-side step.
    reduce: Option<Box<dyn crate::function::ReduceInstance>>,
    /// Each invocation's time limit (a job function's `platform.timeout`).
    timeout: Option<std::time::Duration>,
}

impl Warm {
    /// Whether the instance serves function `name` with these params and
    /// key.
    fn serves(&self, name: &str, params: &str, key: &Option<Vec<String>>) -> bool {
        self.name == name && self.params == params && &self.key == key
    }
}

fn serve_connection(stream: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    let mut conn = Connection::new(stream, shared.opts.payload_limit, IDLE)?;
    let mut warm: Option<Warm> = None;
    loop {
        let received = match conn.next() {
            Ok(Some(r)) => r,
            Ok(None) if shared.done.load(Ordering::Relaxed) => return Ok(()),
            Ok(None) => continue,
            Err(_) => return Ok(()),
        };
        let answer = match received {
            Received::Malformed(_, message) => Answer::error(400, "InvalidRequestContentException", &message),
            Received::Request(req) => handle(&req, shared, &mut warm),
        };
        let headers: Vec<(&str, &str)> = answer.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let draining = shared.stop.load(Ordering::Relaxed);
        if !conn.reply(&Reply { status: answer.status, headers: &headers, body: &answer.body }, draining) {
            return Ok(());
        }
    }
}

/// A reply, owned.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, body: Vec<u8>) -> Answer {
        Answer { status, headers: vec![("content-type", "application/json".into())], body }
    }

    /// The host's own error (not the function's), as AWS's services send
    /// one: `{"Type": "User", "message": ...}` with the exception's name in
    /// `x-amzn-ErrorType`.
    fn error(status: u16, kind: &str, message: &str) -> Answer {
        let body = serde_json::json!({ "Type": "User", "message": message });
        let mut a = Answer::json(status, body.to_string().into_bytes());
        a.headers.push(("x-amzn-errortype", kind.to_string()));
        a
    }

    /// A function's error, as Lambda's runtimes report one:
    /// `{"errorType", "errorMessage"}`.
    fn function_error(status: u16, kind: &str, message: &str) -> Answer {
        let body = serde_json::json!({ "errorType": kind, "errorMessage": message });
        Answer::json(status, body.to_string().into_bytes())
    }
}

/// Where a request is going.
enum Route<'a> {
    Health,
    /// A function, by the plain contract or the Lambda Invoke API.
    Function {
        name: &'a str,
        invoke_api: bool,
    },
    Unknown,
}

fn route(req: &Request) -> Route<'_> {
    let path = req.path().split('?').next().unwrap_or_default();
    if path == "/healthz" {
        return Route::Health;
    }
    if let Some(name) = path.strip_prefix("/functions/") {
        return Route::Function { name, invoke_api: false };
    }
    if let Some(name) = path.strip_prefix("/2015-03-31/functions/").and_then(|p| p.strip_suffix("/invocations")) {
        return Route::Function { name, invoke_api: true };
    }
    Route::Unknown
}

/// The function a Lambda Invoke API path names: a name, `name:qualifier`,
/// or a full or partial ARN (`arn:aws:lambda:REGION:ACCOUNT:function:NAME`,
/// `ACCOUNT:function:NAME`), percent-encoded as the SDKs send it.
fn function_name(raw: &str) -> String {
    let decoded = percent_decode(raw);
    let parts: Vec<&str> = decoded.split(':').collect();
    match parts.iter().position(|p| *p == "function") {
        Some(i) => parts.get(i + 1).copied().unwrap_or_default().to_string(),
        None => parts[0].to_string(),
    }
}

/// `text` with `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(req: &Request, shared: &Arc<Shared>, warm: &mut Option<Warm>) -> Answer {
    // Health checks need no token (a platform's probes carry none), and
    // say nothing but the host's state.
    if let (Route::Health, "GET") = (route(req), req.method()) {
        let running = shared.running.load(Ordering::Relaxed).min(shared.opts.concurrency);
        let (status, state) = if shared.stop.load(Ordering::Relaxed) { (503, "draining") } else { (200, "ok") };
        let body = serde_json::json!({ "status": state, "running": running, "concurrency": shared.opts.concurrency });
        return Answer::json(status, body.to_string().into_bytes());
    }
    if let Some(token) = &shared.opts.token {
        let given = req.header("authorization").and_then(|v| v.strip_prefix("Bearer "));
        if given.map(str::trim) != Some(token.as_str()) {
            let mut a = Answer::error(401, "UnauthorizedException", "a bearer token is required");
            a.headers.push(("www-authenticate", "Bearer".into()));
            return a;
        }
    }
    let (name, invoke_api) = match route(req) {
        Route::Function { name, invoke_api } if req.method() == "POST" => {
            (if invoke_api { function_name(name) } else { percent_decode(name) }, invoke_api)
        }
        Route::Unknown => return Answer::error(404, "ResourceNotFoundException", &format!("no route {}", req.path())),
        _ => return Answer::error(405, "MethodNotAllowed", &format!("{} {} is not served", req.method(), req.path())),
    };
    if shared.stop.load(Ordering::Relaxed) {
        return Answer::error(503, "ServiceException", "the host is shutting down");
    }
    let served = match served(shared, &name) {
        Ok(s) => s,
        Err(a) => return a,
    };
    let body = match &req.body {
        Body::Complete(b) => b,
        Body::TooLarge => {
            let limit = shared.opts.payload_limit;
            return Answer::error(413, "RequestTooLargeException", &format!("the event is over {limit} bytes"));
        }
    };
    // A malformed event is the request's fault, whichever way it came:
    // 400, as Lambda answers a payload it cannot take.
    let event = match parse_event(body) {
        Ok(event) => event,
        Err(why) if invoke_api => return Answer::error(400, "InvalidRequestContentException", &why),
        Err(why) => return Answer::function_error(400, "InvalidParameter", &why),
    };
    match req.header("x-amz-invocation-type").filter(|_| invoke_api).map(str::trim) {
        None | Some("RequestResponse") => {}
        // The request is valid and would run: Lambda says so, and runs
        // nothing.
        Some("DryRun") => return Answer { status: 204, headers: Vec::new(), body: Vec::new() },
        Some("Event") => {
            let id = request_id(shared);
            shared.queued.fetch_add(1, Ordering::AcqRel);
            let (mine, body, function, request) = (shared.clone(), body.clone(), name.clone(), id.clone());
            let spawned = std::thread::Builder::new()
                .name("fanout-event".into())
                .spawn(move || run_event(&mine, &function, &body, &request));
            if spawned.is_err() {
                shared.queued.fetch_sub(1, Ordering::AcqRel);
                return Answer::error(500, "ServiceException", "no thread for the invocation");
            }
            return Answer { status: 202, headers: vec![("x-amzn-requestid", id)], body: Vec::new() };
        }
        Some(other) => {
            let message = format!("InvocationType `{other}`: expected RequestResponse, Event or DryRun");
            return Answer::error(400, "InvalidParameterValueException", &message);
        }
    }
    // A slot for the invocation, or 429 as Lambda throttles.
    if shared.running.fetch_add(1, Ordering::AcqRel) >= shared.opts.concurrency {
        shared.running.fetch_sub(1, Ordering::AcqRel);
        let message = format!("Rate Exceeded: {} invocations at once", shared.opts.concurrency);
        return Answer::error(429, "TooManyRequestsException", &message);
    }
    let outcome = invoke_event(&name, &served, event, warm, shared.opts.payload_limit);
    shared.running.fetch_sub(1, Ordering::AcqRel);
    match outcome {
        Ok(body) if invoke_api => {
            let mut a = Answer::json(200, body);
            a.headers.push(("x-amzn-requestid", request_id(shared)));
            a
        }
        Ok(body) => Answer::json(200, body),
        Err(e) if invoke_api => {
            let kind = if e.permanent { "InvalidParameter" } else { "FunctionError" };
            let mut a = Answer::function_error(200, kind, &e.message);
            a.headers.push(("x-amz-function-error", "Unhandled".into()));
            a.headers.push(("x-amzn-requestid", request_id(shared)));
            a
        }
        Err(e) if e.permanent => Answer::function_error(400, "InvalidParameter", &e.message),
        Err(e) => Answer::function_error(500, "FunctionError", &e.message),
    }
}

/// What `name` serves on the host, or the answer that says it serves
/// nothing.
fn served<'a>(shared: &'a Shared, name: &str) -> Result<Served<'a>, Answer> {
    match (shared.registry.get(name), shared.opts.functions.iter().find(|f| f.name == name)) {
        (Some(b), _) => Ok(Served::Builtin(b.as_ref())),
        (None, Some(f)) => match shared.registry.backend(&f.function.kind) {
            Some(backend) => Ok(Served::Job(f, backend.as_ref())),
            None => Err(Answer::error(500, "ServiceException", &format!("no backend for {}", f.function.kind))),
        },
        (None, None) => Err(Answer::error(404, "ResourceNotFoundException", &format!("Function not found: {name}"))),
    }
}

/// A new request id for an invocation on the Invoke API: the host's
/// process and a count, unique while it lives.
fn request_id(shared: &Shared) -> String {
    let n = shared.requests.fetch_add(1, Ordering::Relaxed) + 1;
    format!("{}-{n}", std::process::id())
}

/// Attempts of an `Event` invocation whose function fails, as Lambda's
/// asynchronous invocations (two retries), and the wait before each retry.
const EVENT_ATTEMPTS: u32 = 3;
const EVENT_RETRY_WAIT: Duration = Duration::from_millis(200);

/// Runs an `Event` invocation accepted with 202: waits for a free slot
/// (asynchronous invocations queue rather than throttle), retries a
/// function error, and says on stderr how it ended.
fn run_event(shared: &Shared, name: &str, body: &[u8], id: &str) {
    let mut outcome = Err(FunctionError::transient("not run".to_string()));
    let mut attempts = 0;
    while attempts < EVENT_ATTEMPTS {
        if attempts > 0 {
            std::thread::sleep(EVENT_RETRY_WAIT * attempts);
        }
        attempts += 1;
        while shared.running.fetch_add(1, Ordering::AcqRel) >= shared.opts.concurrency {
            shared.running.fetch_sub(1, Ordering::AcqRel);
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut warm = None;
        outcome = match served(shared, name) {
            Ok(served) => invoke(name, &served, body, &mut warm, shared.opts.payload_limit),
            Err(a) => Err(FunctionError::permanent(String::from_utf8_lossy(&a.body).into_owned())),
        };
        drop(warm);
        shared.running.fetch_sub(1, Ordering::AcqRel);
        match &outcome {
            Err(e) if !e.permanent => continue,
            _ => break,
        }
    }
    let line = match outcome {
        Ok(reply) => {
            let records = serde_json::from_slice::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v["records"].as_array().map(Vec::len))
                .unwrap_or(0);
            format!("Event invocation {id} of {name}: succeeded ({records} records)")
        }
        Err(e) => {
            let tries = if attempts == 1 { "1 attempt".to_string() } else { format!("{attempts} attempts") };
            format!("Event invocation {id} of {name}: failed after {tries}: {}", e.message)
        }
    };
    {
        use std::io::Write;
        let _ = writeln!(io::stderr(), "{line}");
    }
    shared.queued.fetch_sub(1, Ordering::AcqRel);
}

/// An event, as far as the host reads it. With a `key`, the records (or
/// the `shuffle` pieces) are a whole partition of a keyed stage: the
/// function's map side runs over them, then its reduce.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    task: u64,
    #[serde(default = "first")]
    attempt: u32,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    records: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    split: Option<&'a RawValue>,
    #[serde(default)]
    shuffle: Option<crate::shuffle::ShuffleRef>,
    /// A keyed stage's key: the records are a whole partition, reduced.
    #[serde(default)]
    key: Option<Vec<String>>,
    /// Where to write the output, partitioned, instead of answering it.
    #[serde(default)]
    shuffle_to: Option<crate::shuffle::ShuffleTo>,
}

/// One storage for the host's life: its clients keep their connections.
fn storage() -> &'static Arc<fanout_datasets::Storage> {
    static STORAGE: std::sync::OnceLock<Arc<fanout_datasets::Storage>> = std::sync::OnceLock::new();
    STORAGE.get_or_init(Arc::default)
}

fn first() -> u32 {
    1
}

/// Runs function `name` on the event `body`; the reply's body.
fn invoke(
    name: &str,
    served: &Served<'_>,
    body: &[u8],
    warm: &mut Option<Warm>,
    payload_limit: u64,
) -> Result<Vec<u8>, FunctionError> {
    let event = parse_event(body).map_err(FunctionError::permanent)?;
    invoke_event(name, served, event, warm, payload_limit)
}

/// The event in `body`, or what is wrong with it: it must be a JSON
/// object with its records (a list), a split reference or shuffle pieces.
fn parse_event(body: &[u8]) -> Result<Event<'_>, String> {
    const SHAPE: &str = "the event must be a JSON object with \"records\" (a list)";
    // serde would take a list for the struct's fields in order.
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
        return Err(format!("{SHAPE}; this is not an object"));
    }
    let event: Event<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("{SHAPE} (line {}, column {})", e.line(), e.column()),
        _ => format!("the event is not JSON: {e}"),
    })?;
    if event.records.is_none() && event.split.is_none() && event.shuffle.is_none() {
        return Err(format!("{SHAPE}, a \"split\" or \"shuffle\" pieces; it has none"));
    }
    Ok(event)
}

/// Runs function `name` on `event`; the reply's body.
fn invoke_event(
    name: &str,
    served: &Served<'_>,
    mut event: Event<'_>,
    warm: &mut Option<Warm>,
    payload_limit: u64,
) -> Result<Vec<u8>, FunctionError> {
    let params_text = event.params.map_or("{}", RawValue::get);
    if let (Some(split), None) = (event.split, &event.records) {
        let batches = read_split(split.get())?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let Some(schema) = batches.first().map(RecordBatch::schema) else {
            return Ok(b"{\"records\":[],\"records_read\":0}".to_vec());
        };
        let fits = warm.as_ref().is_some_and(|w| w.serves(name, params_text, &event.key) && w.schema == schema);
        if !fits {
            let decoder = decoder(&schema)?;
            *warm = Some(plan(name, served, params_text, &event.key, schema, decoder, payload_limit)?);
        }
        let mut reply = call(warm.as_mut().expect("just made"), &event, name, batches)?;
        // The records it read, for the caller's input count.
        reply.pop();
        reply.extend_from_slice(format!(",\"records_read\":{rows}}}").as_bytes());
        return Ok(reply);
    }
    let lines = match (&event.shuffle, event.records.take()) {
        (Some(shuffle), None) => shuffle.lines(storage())?,
        (_, records) => {
            let records = records.unwrap_or_default();
            let size: usize = records.iter().map(|r| r.get().len() + 1).sum();
            let mut lines = Vec::with_capacity(size);
            for r in &records {
                if !r.get().starts_with('{') {
                    return Err(FunctionError::permanent(format!("a record is not a JSON object: {}", r.get())));
                }
                lines.extend_from_slice(r.get().as_bytes());
                lines.push(b'\n');
            }
            lines
        }
    };
    if lines.is_empty() {
        return Ok(b"{\"records\":[]}".to_vec());
    }
    // The same function and params as last time: the records most likely
    // have the same schema. They are decoded with it strictly (a field it
    // does not have is an error, not dropped), and on any error the
    // schema is inferred again.
    let reused = match warm {
        Some(w) if w.serves(name, params_text, &event.key) => decode(&mut w.decoder, &lines).ok(),
        _ => None,
    };
    let batches = match reused {
        Some(b) => b,
        None => {
            let schema = infer(&lines)?;
            let mut decoder = decoder(&schema)?;
            let batches = decode(&mut decoder, &lines)?;
            *warm = Some(plan(name, served, params_text, &event.key, schema, decoder, payload_limit)?);
            batches
        }
    };
    let called = call(warm.as_mut().expect("just made"), &event, name, batches);
    // A container killed at its deadline, or crashed, is replaced.
    if warm.as_ref().is_some_and(|w| w.instance.spent() || w.reduce.as_ref().is_some_and(|r| r.spent())) {
        *warm = None;
    }
    called
}

/// Plans function `name` for `schema` with the params `params_text`, and
/// starts an instance of it (its cold start).
fn plan(
    name: &str,
    served: &Served<'_>,
    params_text: &str,
    key: &Option<Vec<String>>,
    schema: SchemaRef,
    decoder: arrow_json::reader::Decoder,
    payload_limit: u64,
) -> Result<Warm, FunctionError> {
    let params: serde_json::Map<String, serde_json::Value> = serde_json::from_str(params_text)
        .map_err(|e| FunctionError::permanent(format!("params must be a JSON object: {e}")))?;
    let planned = served.plan(name, &params, &schema, key.as_deref(), payload_limit)?;
    let instance = planned.init()?;
    // A keyed function reduces what its map side made of the partition.
    let reduce = match key {
        Some(_) => Some(planned.init_reduce().ok_or_else(|| {
            FunctionError::permanent(format!("`{name}` is not a keyed function: it has no reduce"))
        })??),
        None => None,
    };
    let (name, params, key) = (name.to_string(), params_text.to_string(), key.clone());
    let timeout = match served {
        Served::Job(f, _) => f.timeout,
        Served::Builtin(_) => None,
    };
    Ok(Warm { name, params, key, schema, decoder, instance, reduce, timeout })
}

/// Calls the warm instance on `batches`; the reply's body.
fn call(w: &mut Warm, event: &Event<'_>, name: &str, batches: Vec<RecordBatch>) -> Result<Vec<u8>, FunctionError> {
    let stage = event.stage.as_deref().unwrap_or(name);
    let deadline = w.timeout.map(|t| std::time::Instant::now() + t);
    let inv = Invocation { attempt: event.attempt, deadline, ..Invocation::plain(stage, event.task) };
    let mut out = w.instance.call(&inv, batches)?;
    if let Some(reduce) = &mut w.reduce {
        out = reduce.call(&inv, out)?;
    }
    if let Some(to) = &event.shuffle_to {
        return crate::shuffle::write_reply(storage(), to, out);
    }
    let mut reply = Vec::with_capacity(64 + out.iter().map(|b| b.get_array_memory_size()).sum::<usize>());
    reply.extend_from_slice(b"{\"records\":");
    codec::json_records(&out, &mut reply).map_err(FunctionError::permanent)?;
    reply.push(b'}');
    Ok(reply)
}

/// A split reference, as the event contract sends one.
#[derive(serde::Deserialize)]
struct SplitRef {
    path: std::path::PathBuf,
    format: String,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    length: Option<u64>,
    #[serde(default)]
    compression: Option<String>,
    #[serde(default)]
    row_groups: Option<[usize; 2]>,
    #[serde(default)]
    batches: Option<[usize; 2]>,
    #[serde(default)]
    header: Option<bool>,
    #[serde(default)]
    columns: Option<Vec<String>>,
}

/// Reads the records of a split reference from a file this host can see
/// (a shared file system) or from object storage (an `s3://` URL, reached
/// as the environment says): the file's schema is inferred as the
/// coordinator's was, and only the referenced columns are read.
fn read_split(json: &str) -> Result<Vec<RecordBatch>, FunctionError> {
    use fanout_datasets::{Dataset, DatasetOptions, Format, InputFile, OpenFiles, Split, SplitRange};
    let storage = storage();
    let bad = |m: String| FunctionError::permanent(format!("the split reference: {m}"));
    let r: SplitRef = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let format: Format = r.format.parse().map_err(|e: fanout_datasets::UnknownFormat| bad(e.to_string()))?;
    let mut opts = DatasetOptions { format: Some(format), storage: storage.clone(), ..DatasetOptions::default() };
    opts.csv.header = r.header.unwrap_or(true);
    if r.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv")) {
        opts.csv.delimiter = b'\t';
    }
    let path = r.path.display().to_string();
    let read = |e: fanout_datasets::Error| FunctionError::permanent(e.to_string());
    let mut dataset = Dataset::open(vec![path.clone()], opts).map_err(read)?;
    if let Some(columns) = &r.columns
        && let Some(projected) = dataset.project(columns).map_err(read)?
    {
        dataset = projected;
    }
    let file = InputFile::open(&path, storage).map_err(read)?;
    let range = match (r.row_groups, r.batches, r.offset, r.length) {
        (Some([start, end]), ..) => SplitRange::RowGroups { start, end, bytes: 0 },
        (_, Some([start, end]), ..) => SplitRange::Batches { start, end, bytes: 0 },
        _ if r.compression.as_deref().is_some_and(|c| c != "none") => SplitRange::Whole,
        (_, _, Some(offset), Some(len)) => SplitRange::Bytes { offset, len },
        _ => return Err(bad("no offset and length, row_groups or batches".into())),
    };
    let split = Split { index: 0, file: std::sync::Arc::new(file), range };
    dataset.read_all_with(&split, &mut OpenFiles::default()).map_err(read)
}

/// The schema of JSON object lines, as a jsonl input's is inferred.
fn infer(lines: &[u8]) -> Result<SchemaRef, FunctionError> {
    fanout_datasets::infer_json_schema(lines, usize::MAX)
        .map(Arc::new)
        .map_err(|m| FunctionError::permanent(format!("the records' schema: {m}")))
}

/// A strict decoder of JSON object lines of `schema`: a field the schema
/// does not have is an error.
fn decoder(schema: &SchemaRef) -> Result<arrow_json::reader::Decoder, FunctionError> {
    fanout_datasets::json_reader(schema.clone())
        .with_batch_size(8192)
        .with_strict_mode(true)
        .build_decoder()
        .map_err(|e| FunctionError::permanent(e.to_string()))
}

/// Decodes JSON object lines (whole ones) with `decoder`.
fn decode(decoder: &mut arrow_json::reader::Decoder, lines: &[u8]) -> Result<Vec<RecordBatch>, FunctionError> {
    let bad = |e: arrow_schema::ArrowError| FunctionError::permanent(format!("the records: {e}"));
    let mut out = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let n = decoder.decode(&lines[at..]).map_err(bad)?;
        at += n;
        match decoder.flush().map_err(bad)? {
            Some(b) => out.push(b),
            None if n == 0 => return Err(FunctionError::permanent("the records: the decoder took no bytes")),
            None => {}
        }
    }
    Ok(out)
}

/// Runs as an AWS Lambda custom runtime (`provided.al2023`): asks the
/// Runtime API at `api` (`AWS_LAMBDA_RUNTIME_API`) for the next event,
/// runs builtin `function` on it and posts the response or the error, for
/// as long as the API answers. An unknown function is an init error.
pub fn lambda_runtime(api: &str, registry: &Registry, function: &str) -> io::Result<()> {
    let base = format!("http://{api}/2018-06-01/runtime");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let failed = |e: ureq::Error| io::Error::other(format!("the Runtime API at {api}: {e}"));
    let Some(builtin) = registry.get(function) else {
        let body = serde_json::json!({
            "errorType": "Runtime.HandlerNotFound",
            "errorMessage": format!("no builtin function `{function}` (the handler names it)"),
        });
        agent
            .post(format!("{base}/init/error"))
            .header("Lambda-Runtime-Function-Error-Type", "Runtime.HandlerNotFound")
            .send(body.to_string().as_bytes())
            .map_err(failed)?;
        return Err(io::Error::other(format!("no builtin function `{function}`")));
    };
    let mut warm = None;
    loop {
        let mut next = agent.get(format!("{base}/invocation/next")).call().map_err(failed)?;
        if !next.status().is_success() {
            return Err(io::Error::other(format!("the Runtime API at {api} answered {}", next.status())));
        }
        let id = next
            .headers()
            .get("lambda-runtime-aws-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let event = next.body_mut().with_config().limit(u64::MAX).read_to_vec().map_err(failed)?;
        match invoke(function, &Served::Builtin(builtin.as_ref()), &event, &mut warm, u64::MAX) {
            Ok(body) => {
                agent.post(format!("{base}/invocation/{id}/response")).send(&body[..]).map_err(failed)?;
            }
            Err(e) => {
                let kind = if e.permanent { "InvalidParameter" } else { "FunctionError" };
                let body = serde_json::json!({ "errorType": kind, "errorMessage": e.message });
                agent
                    .post(format!("{base}/invocation/{id}/error"))
                    .header("Lambda-Runtime-Function-Error-Type", kind)
                    .send(body.to_string().as_bytes())
                    .map_err(failed)?;
            }
        }
    }
}

/// The address `serve` would be reached at from elsewhere: whether it
/// listens beyond the loopback interface (and so needs a token).
pub fn beyond_loopback(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_api_paths_name_their_function() {
        assert_eq!(function_name("word_count"), "word_count");
        assert_eq!(function_name("word_count:PROD"), "word_count");
        assert_eq!(function_name("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Agrep"), "grep");
        assert_eq!(function_name("123456789012:function:select:7"), "select");
        assert_eq!(percent_decode("a%2Fb%zz"), "a/b%zz");
    }

    #[test]
    fn a_warm_instance_sees_fields_its_first_records_did_not_have() {
        let registry = Registry::builtins();
        let served = Served::Builtin(registry.get("sleep").unwrap().as_ref());
        let mut warm = None;
        let first =
            invoke("sleep", &served, br#"{"params":{"ms":0},"records":[{"a":1}]}"#, &mut warm, 1 << 20).unwrap();
        assert_eq!(String::from_utf8(first).unwrap(), r#"{"records":[{"a":1}]}"#);
        let body = br#"{"params":{"ms":0},"records":[{"a":2,"b":"x"},{"a":3}]}"#;
        let second = invoke("sleep", &served, body, &mut warm, 1 << 20).unwrap();
        assert_eq!(String::from_utf8(second).unwrap(), r#"{"records":[{"a":2,"b":"x"},{"a":3,"b":null}]}"#);
        // The same records again: decoded with the warm schema.
        let third = invoke("sleep", &served, body, &mut warm, 1 << 20).unwrap();
        assert!(String::from_utf8(third).unwrap().contains(r#""b":"x""#));
    }
}
