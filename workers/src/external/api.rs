//! The AWS Lambda Runtime API (version 2018-06-01), served on a loopback
//! port for one sandbox — one worker process — as Lambda serves it inside
//! each execution environment:
//!
//! - `GET /2018-06-01/runtime/invocation/next`: the next event (long poll),
//!   with the headers `Lambda-Runtime-Aws-Request-Id`,
//!   `Lambda-Runtime-Deadline-Ms`, `Lambda-Runtime-Invoked-Function-Arn`
//!   and `Lambda-Runtime-Trace-Id`. The first call ends the init phase.
//! - `POST /2018-06-01/runtime/invocation/{id}/response`: the result; 202.
//! - `POST /2018-06-01/runtime/invocation/{id}/error`: a function error,
//!   a JSON body with `errorMessage`, `errorType` and `stackTrace`; 202.
//! - `POST /2018-06-01/runtime/init/error`: the function could not start.
//!
//! Status codes follow the service: 400 for an unknown or already answered
//! request id (nothing changes), 413 for a body over the payload limit
//! (the invocation fails), 403 for a call that is not valid in the
//! runtime's state (an init error after init, a second `next` while an
//! event is unanswered), 404 for other paths, 405 for a wrong method.
//!
//! The server is blocking and runs on the thread that invokes the sandbox,
//! only while it waits for the process ([`Api::turn`]). A runtime talks to
//! it over one keep-alive connection, so while there is exactly one
//! connection the server reads it directly: a warm invocation costs four
//! system calls on this side (write the event, read the response, write
//! the 202, read the next `next`). Once a runtime holds two connections at
//! once it waits on all of them with poll(2). Requests are parsed with
//! `httparse`; bodies come with a `Content-Length` or chunked.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The longest a blocking read or write waits before the owner gets to
/// check its process, deadline and cancellation.
pub(crate) const POLL: Duration = Duration::from_millis(10);
/// How long a runtime may take to read a response before its connection
/// is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 << 10;

/// How an invocation ended, as the runtime reported it.
pub(crate) enum Outcome {
    /// The response body.
    Response(Vec<u8>),
    /// A function error: its type and message.
    Error { kind: String, message: String },
    /// A body over the payload limit.
    TooLarge,
}

/// What a turn of the server saw.
pub(crate) enum Happened {
    /// The runtime asked for its first event: init is over.
    Ready,
    /// The runtime reported an init error: its type and message.
    InitError(String),
    /// The invocation in progress was answered.
    Answered(Outcome),
}

/// One event for the runtime.
pub(crate) struct Event<'a> {
    pub(crate) id: &'a str,
    pub(crate) deadline_ms: u64,
    pub(crate) trace: &'a str,
    pub(crate) body: &'a [u8],
}

enum Phase {
    Init,
    Ready,
    Invoking { id: String, delivered: bool },
}

/// One connection from the runtime.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    /// A `next` request waits on this connection for an event.
    waiting: bool,
    /// Close once the waiting `next` has its event.
    close_after: bool,
    /// `100 Continue` was sent for the request being read.
    continued: bool,
    /// Closed by the runtime, or to be dropped.
    dead: bool,
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    error_type: Option<String>,
    body: Body,
    close: bool,
}

enum Body {
    Complete(Vec<u8>),
    TooLarge,
}

enum Parsed {
    Incomplete { expect_continue: bool },
    Request(Request, usize),
    Bad(String),
}

/// One sandbox's Runtime API.
pub(crate) struct Api {
    listener: TcpListener,
    conns: Vec<Conn>,
    phase: Phase,
    /// The current invocation's event as a whole HTTP response, until a
    /// `next` request takes it.
    pending: Option<Vec<u8>>,
    payload_limit: u64,
    function_arn: String,
    /// The runtime has held more than one connection at once.
    multi: bool,
    scratch: Box<[u8]>,
}

impl Api {
    /// A Runtime API on a new loopback port, for the function `function`.
    pub(crate) fn bind(payload_limit: u64, function: &str) -> io::Result<Api> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        Ok(Api {
            listener,
            conns: Vec::new(),
            phase: Phase::Init,
            pending: None,
            payload_limit,
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function}"),
            multi: false,
            scratch: vec![0; 64 << 10].into_boxed_slice(),
        })
    }

    /// The port the runtime connects to.
    pub(crate) fn port(&self) -> io::Result<u16> {
        Ok(self.listener.local_addr()?.port())
    }

    /// Starts an invocation: the next `next` request gets `event`, and the
    /// answer for its id ends it.
    pub(crate) fn begin(&mut self, event: &Event<'_>) {
        let mut head = Vec::with_capacity(event.body.len() + 512);
        head.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(event.body.len()).as_bytes());
        head.extend_from_slice(b"\r\nlambda-runtime-aws-request-id: ");
        head.extend_from_slice(event.id.as_bytes());
        head.extend_from_slice(b"\r\nlambda-runtime-deadline-ms: ");
        head.extend_from_slice(itoa::Buffer::new().format(event.deadline_ms).as_bytes());
        head.extend_from_slice(b"\r\nlambda-runtime-invoked-function-arn: ");
        head.extend_from_slice(self.function_arn.as_bytes());
        head.extend_from_slice(b"\r\nlambda-runtime-trace-id: ");
        head.extend_from_slice(event.trace.as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        head.extend_from_slice(event.body);
        self.pending = Some(head);
        self.phase = Phase::Invoking { id: event.id.to_string(), delivered: false };
    }

    /// Serves requests until something happens or `until` passes (a read
    /// may overrun it by up to [`POLL`]). An error means the listener
    /// failed: the sandbox cannot go on.
    pub(crate) fn turn(&mut self, until: Instant) -> io::Result<Option<Happened>> {
        loop {
            let happened = self.handle_buffered();
            // A dropped connection tells the runtime it is closed.
            self.conns.retain(|c| !c.dead);
            if happened.is_some() {
                return Ok(happened);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            if self.conns.len() == 1 && !self.multi {
                // The usual case: one keep-alive connection, read directly.
                if !self.read(0) {
                    self.accept()?;
                    if Instant::now() >= until {
                        return Ok(None);
                    }
                }
            } else {
                self.wait(until - now)?;
            }
        }
    }

    /// Waits on the listener and every connection with poll(2), then
    /// reads what is ready and accepts what is waiting.
    fn wait(&mut self, left: Duration) -> io::Result<()> {
        let ms = u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX);
        let (listening, ready) = {
            let mut fds = Vec::with_capacity(self.conns.len() + 1);
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            fds.extend(self.conns.iter().map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)));
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds[1..].iter().map(ready).collect::<Vec<_>>())
        };
        for (i, ready) in ready.into_iter().enumerate() {
            if ready {
                self.read(i);
            }
        }
        self.conns.retain(|c| !c.dead);
        if listening {
            self.accept()?;
        }
        Ok(())
    }

    /// Reads what connection `i` has (blocking up to [`POLL`]); false when
    /// nothing came.
    fn read(&mut self, i: usize) -> bool {
        let conn = &mut self.conns[i];
        match conn.stream.read(&mut self.scratch) {
            Ok(0) => conn.dead = true,
            Ok(n) => {
                conn.buf.extend_from_slice(&self.scratch[..n]);
                return true;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(_) => conn.dead = true,
        }
        true
    }

    /// Accepts the connections waiting on the listener.
    fn accept(&mut self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(POLL))?;
                    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
                    self.multi |= self.conns.iter().any(|c| !c.dead);
                    self.conns.push(Conn {
                        stream,
                        buf: Vec::new(),
                        waiting: false,
                        close_after: false,
                        continued: false,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Handles the complete requests already read, and hands the pending
    /// event to a waiting `next`.
    fn handle_buffered(&mut self) -> Option<Happened> {
        for i in 0..self.conns.len() {
            loop {
                self.deliver();
                let conn = &mut self.conns[i];
                if conn.dead || conn.waiting || conn.buf.is_empty() {
                    break;
                }
                match parse(&conn.buf, self.payload_limit) {
                    Parsed::Incomplete { expect_continue } => {
                        if expect_continue && !conn.continued {
                            conn.continued = true;
                            send(conn, b"HTTP/1.1 100 Continue\r\n\r\n");
                        }
                        break;
                    }
                    Parsed::Bad(message) => {
                        let reply = error(400, "InvalidRequest", &message, true);
                        send(conn, &reply);
                        conn.dead = true;
                    }
                    Parsed::Request(req, used) => {
                        conn.buf.drain(..used);
                        conn.continued = false;
                        let close = req.close || matches!(req.body, Body::TooLarge);
                        let (reply, happened) = self.handle(i, req);
                        let conn = &mut self.conns[i];
                        if let Some(reply) = reply {
                            send(conn, &reply);
                        }
                        if close {
                            if conn.waiting {
                                conn.close_after = true;
                            } else {
                                conn.dead = true;
                            }
                        }
                        if happened.is_some() {
                            self.deliver();
                            return happened;
                        }
                    }
                }
            }
        }
        self.deliver();
        None
    }

    /// Writes the pending event to a connection waiting for it.
    fn deliver(&mut self) {
        if self.pending.is_none() {
            return;
        }
        let Some(conn) = self.conns.iter_mut().find(|c| c.waiting && !c.dead) else { return };
        let event = self.pending.take().expect("checked");
        conn.waiting = false;
        if send(conn, &event) {
            conn.dead |= conn.close_after;
            if let Phase::Invoking { delivered, .. } = &mut self.phase {
                *delivered = true;
            }
        } else {
            self.pending = Some(event);
        }
    }

    /// One request: the reply to write now (none for a `next` that waits),
    /// and what happened.
    fn handle(&mut self, conn: usize, mut req: Request) -> (Option<Vec<u8>>, Option<Happened>) {
        let close = req.close;
        let path = std::mem::take(&mut req.path);
        let path = path.split('?').next().unwrap_or_default();
        let not_found = || error(404, "NotFound", &format!("no route for {path}"), close);
        let not_allowed = || error(405, "MethodNotAllowed", "method not allowed", close);
        let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
            return (Some(not_found()), None);
        };
        let post = req.method == "POST";
        match (rest, rest.strip_prefix("invocation/")) {
            ("invocation/next", _) if req.method == "GET" => self.next(conn, close),
            ("invocation/next", _) => (Some(not_allowed()), None),
            ("init/error", _) if post => self.init_error(req),
            ("init/error", _) => (Some(not_allowed()), None),
            (_, Some(inv)) => match inv.split_once('/') {
                Some((id, "response")) if post => self.answer(id, req, false),
                Some((id, "error")) if post => self.answer(id, req, true),
                Some((_, "response" | "error")) => (Some(not_allowed()), None),
                _ => (Some(not_found()), None),
            },
            _ => (Some(not_found()), None),
        }
    }

    fn next(&mut self, conn: usize, close: bool) -> (Option<Vec<u8>>, Option<Happened>) {
        let mut happened = None;
        match self.phase {
            Phase::Init => {
                self.phase = Phase::Ready;
                happened = Some(Happened::Ready);
            }
            Phase::Invoking { delivered: true, .. } => return (Some(transition("Invoking", "Next", close)), None),
            _ => {}
        }
        self.conns[conn].waiting = true;
        (None, happened)
    }

    fn init_error(&mut self, req: Request) -> (Option<Vec<u8>>, Option<Happened>) {
        let Body::Complete(body) = req.body else { return (Some(too_large(self.payload_limit)), None) };
        if !matches!(self.phase, Phase::Init) {
            let from = if matches!(self.phase, Phase::Ready) { "Ready" } else { "Invoking" };
            return (Some(transition(from, "InitError", req.close)), None);
        }
        self.phase = Phase::Ready;
        let (kind, message) = error_report(req.error_type, &body);
        (Some(accepted(req.close)), Some(Happened::InitError(format!("{kind}: {message}"))))
    }

    fn answer(&mut self, id: &str, req: Request, failed: bool) -> (Option<Vec<u8>>, Option<Happened>) {
        if !matches!(&self.phase, Phase::Invoking { id: current, delivered: true } if current == id) {
            return (Some(invalid_id(id, req.close)), None);
        }
        self.phase = Phase::Ready;
        match req.body {
            Body::TooLarge => (Some(too_large(self.payload_limit)), Some(Happened::Answered(Outcome::TooLarge))),
            Body::Complete(body) => {
                let outcome = if failed {
                    let (kind, message) = error_report(req.error_type, &body);
                    Outcome::Error { kind, message }
                } else {
                    Outcome::Response(body)
                };
                (Some(accepted(req.close)), Some(Happened::Answered(outcome)))
            }
        }
    }
}

/// Writes all of `bytes`; false (and the connection dead) when it fails.
fn send(conn: &mut Conn, bytes: &[u8]) -> bool {
    let ok = conn.stream.write_all(bytes).is_ok();
    conn.dead |= !ok;
    ok
}

/// Parses one request from the start of `buf`.
fn parse(buf: &[u8], limit: u64) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Bad(format!("the request head is over {MAX_HEAD} bytes"));
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete { expect_continue: false },
        Err(e) => return Parsed::Bad(format!("a malformed request: {e}")),
    };
    let (mut length, mut chunked, mut expect_continue, mut error_type) = (None, false, false, None);
    let mut close = req.version == Some(0);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse::<u64>() {
                Ok(n) => length = Some(n),
                Err(_) => return Parsed::Bad(format!("a bad content-length `{value}`")),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            close = value.contains("close") || (close && !value.contains("keep-alive"));
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("lambda-runtime-function-error-type") {
            error_type = Some(value.to_string());
        }
    }
    let method = req.method.unwrap_or_default().to_string();
    let path = req.path.unwrap_or_default().to_string();
    let request = |body, close| Request { method, path, error_type, body, close };
    let incomplete = Parsed::Incomplete { expect_continue };
    if chunked {
        let mut body = Vec::new();
        let mut at = head;
        loop {
            let (start, size) = match httparse::parse_chunk_size(&buf[at..]) {
                Ok(httparse::Status::Complete((n, size))) => (at + n, size),
                Ok(httparse::Status::Partial) => return incomplete,
                Err(_) => return Parsed::Bad("a malformed chunk size".to_string()),
            };
            if size == 0 {
                // Trailers, if any, end with an empty line.
                let rest = &buf[start..];
                let end = if rest.starts_with(b"\r\n") {
                    2
                } else {
                    match memchr::memmem::find(rest, b"\r\n\r\n") {
                        Some(i) => i + 4,
                        None => return incomplete,
                    }
                };
                return Parsed::Request(request(Body::Complete(body), close), start + end);
            }
            if body.len() as u64 + size > limit {
                return Parsed::Request(request(Body::TooLarge, true), buf.len());
            }
            let end = start + size as usize;
            if buf.len() < end + 2 {
                return incomplete;
            }
            body.extend_from_slice(&buf[start..end]);
            at = end + 2;
        }
    }
    let length = length.unwrap_or(0);
    if length > limit {
        return Parsed::Request(request(Body::TooLarge, true), buf.len());
    }
    let end = head + length as usize;
    if buf.len() < end {
        return incomplete;
    }
    Parsed::Request(request(Body::Complete(buf[head..end].to_vec()), close), end)
}

/// The type and message of an error report: its JSON body's `errorType`
/// and `errorMessage` (the header's type if the body has none), or the
/// body as text.
fn error_report(header: Option<String>, body: &[u8]) -> (String, String) {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| json.as_ref().and_then(|j| j.get(k)).and_then(|v| v.as_str()).map(str::to_string);
    let kind = field("errorType").or(header).unwrap_or_else(|| "Unhandled".to_string());
    let message = field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    (kind, message)
}

/// A whole JSON response.
fn json_reply(status: u16, body: &str, close: bool) -> Vec<u8> {
    let reason = match status {
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        _ => "Internal Server Error",
    };
    let connection = if close { "connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{connection}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn error(status: u16, kind: &str, message: &str, close: bool) -> Vec<u8> {
    json_reply(status, &serde_json::json!({ "errorMessage": message, "errorType": kind }).to_string(), close)
}

fn accepted(close: bool) -> Vec<u8> {
    json_reply(202, r#"{"status":"OK"}"#, close)
}

fn invalid_id(id: &str, close: bool) -> Vec<u8> {
    error(400, "InvalidRequestID", &format!("invalid request ID `{id}`: unknown or already answered"), close)
}

fn too_large(limit: u64) -> Vec<u8> {
    error(413, "RequestEntityTooLarge", &format!("Exceeded maximum allowed payload size ({limit} bytes)."), true)
}

fn transition(from: &str, to: &str, close: bool) -> Vec<u8> {
    error(
        403,
        "InvalidStateTransition",
        &format!("State transition from {from} to {to} failed for runtime. Error: State transition is not allowed"),
        close,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(buf: &[u8]) -> (Request, usize) {
        match parse(buf, 100) {
            Parsed::Request(r, n) => (r, n),
            Parsed::Incomplete { .. } => panic!("incomplete"),
            Parsed::Bad(m) => panic!("bad: {m}"),
        }
    }

    fn body(r: &Request) -> &[u8] {
        match &r.body {
            Body::Complete(b) => b,
            Body::TooLarge => panic!("too large"),
        }
    }

    #[test]
    fn parses_length_and_chunked_bodies_and_pipelined_requests() {
        let two = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n";
        let (r, n) = request(two);
        assert_eq!((r.method.as_str(), r.path.as_str(), body(&r), r.close), ("POST", "/a", &b"abc"[..], false));
        let (r, m) = request(&two[n..]);
        assert_eq!((r.method.as_str(), body(&r), n + m), ("GET", &b""[..], two.len()));

        let chunked = b"POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (r, n) = request(chunked);
        assert_eq!((body(&r), n), (&b"abcde"[..], chunked.len()));
        for cut in 0..chunked.len() {
            assert!(matches!(parse(&chunked[..cut], 100), Parsed::Incomplete { .. }), "cut at {cut}");
        }
    }

    #[test]
    fn knows_closing_continuing_oversized_and_malformed_requests() {
        let (r, _) = request(b"GET / HTTP/1.0\r\n\r\n");
        assert!(r.close);
        let (r, _) = request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!r.close);
        let (r, _) = request(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(r.close);
        let head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        assert!(matches!(parse(head, 100), Parsed::Incomplete { expect_continue: true }));
        let (r, _) = request(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n");
        assert!(matches!(r.body, Body::TooLarge) && r.close);
        let big = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", 101);
        assert!(matches!(parse(big.as_bytes(), 100), Parsed::Request(Request { body: Body::TooLarge, .. }, _)));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 100), Parsed::Bad(_)));
        assert!(matches!(parse(b"\x01\x02 nonsense\r\n\r\n", 100), Parsed::Bad(_)));
    }

    #[test]
    fn error_reports_prefer_the_body_then_the_header() {
        let body = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":[]}"#;
        assert_eq!(error_report(Some("H".into()), body), ("ValueError".into(), "boom".into()));
        assert_eq!(error_report(Some("H".into()), b"plain text\n"), ("H".into(), "plain text".into()));
        assert_eq!(error_report(None, b"{}"), ("Unhandled".into(), "{}".into()));
    }
}
