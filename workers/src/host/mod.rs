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
//! thread of its own (keep-alive, requests in order). Once its [`Drain`] begins,
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

use crate::function::FunctionError;
use crate::http1::{Body, Connection, Received, Reply, Request};
use crate::registry::Registry;

mod invoke;
mod runtime;

use invoke::{Served, Warm, invoke, invoke_event, parse_event};
pub use runtime::lambda_runtime;

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

/// A host's drain: set off by [`Drain::begin`] (on a signal), it says
/// what is still in flight, so that a host stopped at once can say what
/// it dropped.
#[derive(Debug, Default)]
pub struct Drain {
    stop: AtomicBool,
    /// Invocations running now.
    running: AtomicUsize,
    /// `Event` invocations accepted and not yet ended (the drain waits
    /// for them).
    queued: AtomicUsize,
}

impl Drain {
    /// A host not draining.
    pub fn new() -> Arc<Drain> {
        Arc::default()
    }

    /// Starts the drain: what is in flight is answered, new requests get
    /// 503, and [`serve`] returns once nothing is in flight.
    pub fn begin(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// What is in flight now: invocations running, and `Event`
    /// invocations accepted (answered 202) that have not ended.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.running.load(Ordering::Acquire), self.queued.load(Ordering::Acquire))
    }
}

/// Serves the builtins of `registry` on `listener` until `drain` begins,
/// then drains: what is in flight is answered, new requests are refused.
pub fn serve(listener: TcpListener, registry: Arc<Registry>, opts: HostOptions, drain: Arc<Drain>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let shared = Arc::new(Shared {
        registry,
        opts,
        requests: AtomicUsize::new(0),
        drain,
        done: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
    });
    loop {
        // Draining: the host goes on accepting, and answers 503 with
        // `Connection: close` (health checks included), until the
        // invocations in flight have been answered.
        if shared.drain.stop.load(Ordering::Relaxed)
            && shared.drain.running.load(Ordering::Acquire) == 0
            && shared.drain.queued.load(Ordering::Acquire) == 0
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
    /// Invocations taken on the Invoke API so far, for their request ids.
    requests: AtomicUsize,
    drain: Arc<Drain>,
    /// The drain is over: idle connections close (until then, a request
    /// on a kept-alive connection gets its 503).
    done: AtomicBool,
    connections: AtomicUsize,
}

/// How long a connection waits for a request before it looks at `stop`.
const IDLE: Duration = Duration::from_millis(50);

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
        let draining = shared.drain.stop.load(Ordering::Relaxed);
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
        let running = shared.drain.running.load(Ordering::Relaxed).min(shared.opts.concurrency);
        let (status, state) = if shared.drain.stop.load(Ordering::Relaxed) { (503, "draining") } else { (200, "ok") };
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
    if shared.drain.stop.load(Ordering::Relaxed) {
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
            shared.drain.queued.fetch_add(1, Ordering::AcqRel);
            let (mine, body, function, request) = (shared.clone(), body.clone(), name.clone(), id.clone());
            let spawned = std::thread::Builder::new()
                .name("fanout-event".into())
                .spawn(move || run_event(&mine, &function, &body, &request));
            if spawned.is_err() {
                shared.drain.queued.fetch_sub(1, Ordering::AcqRel);
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
    if shared.drain.running.fetch_add(1, Ordering::AcqRel) >= shared.opts.concurrency {
        shared.drain.running.fetch_sub(1, Ordering::AcqRel);
        let message = format!("Rate Exceeded: {} invocations at once", shared.opts.concurrency);
        return Answer::error(429, "TooManyRequestsException", &message);
    }
    let outcome = invoke_event(&name, &served, event, warm, shared.opts.payload_limit);
    shared.drain.running.fetch_sub(1, Ordering::AcqRel);
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
        while shared.drain.running.fetch_add(1, Ordering::AcqRel) >= shared.opts.concurrency {
            shared.drain.running.fetch_sub(1, Ordering::AcqRel);
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut warm = None;
        outcome = match served(shared, name) {
            Ok(served) => invoke(name, &served, body, &mut warm, shared.opts.payload_limit),
            Err(a) => Err(FunctionError::permanent(String::from_utf8_lossy(&a.body).into_owned())),
        };
        drop(warm);
        shared.drain.running.fetch_sub(1, Ordering::AcqRel);
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
    shared.drain.queued.fetch_sub(1, Ordering::AcqRel);
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
