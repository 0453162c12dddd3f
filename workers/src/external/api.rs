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
//! This module holds those rules only: the HTTP/1.1 underneath them
//! (connections, parsing, bodies, replies) is [`crate::http1`]'s. The
//! server is blocking and runs on the thread that invokes the sandbox,
//! only while it waits for the process ([`Api::turn`]). A runtime talks to
//! it over one keep-alive connection, so while there is exactly one
//! connection the server reads it directly: a warm invocation costs four
//! system calls on this side (write the event, read the response, write
//! the 202, read the next `next`). Once a runtime holds two connections at
//! once it waits on all of them with poll(2).

use std::io;
use std::time::Instant;

use crate::http1::{Body, ConnId, Received, Reply, Request, Server};

pub(crate) use crate::http1::POLL;

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
pub(crate) struct Event {
    pub(crate) id: String,
    pub(crate) deadline_ms: u64,
    pub(crate) trace: String,
    pub(crate) body: Vec<u8>,
}

enum Phase {
    Init,
    Ready,
    Invoking { id: String, delivered: bool },
}

/// One sandbox's Runtime API.
pub(crate) struct Api {
    server: Server,
    phase: Phase,
    /// The current invocation's event, until a `next` request takes it.
    pending: Option<Event>,
    /// The connections whose `next` request waits for an event.
    waiting: Vec<ConnId>,
    payload_limit: u64,
    function_arn: String,
}

impl Api {
    /// A Runtime API on a new loopback port, for the function `function`.
    pub(crate) fn bind(payload_limit: u64, function: &str) -> io::Result<Api> {
        Ok(Api {
            server: Server::bind("127.0.0.1:0", payload_limit)?,
            phase: Phase::Init,
            pending: None,
            waiting: Vec::new(),
            payload_limit,
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function}"),
        })
    }

    /// The port the runtime connects to.
    pub(crate) fn port(&self) -> io::Result<u16> {
        Ok(self.server.local_addr()?.port())
    }

    /// Starts an invocation: the next `next` request gets `event`, and the
    /// answer for its id ends it.
    pub(crate) fn begin(&mut self, event: Event) {
        self.phase = Phase::Invoking { id: event.id.clone(), delivered: false };
        self.pending = Some(event);
    }

    /// Serves requests until something happens or `until` passes (a read
    /// may overrun it by up to [`POLL`]). An error means the listener
    /// failed: the sandbox cannot go on.
    pub(crate) fn turn(&mut self, until: Instant) -> io::Result<Option<Happened>> {
        loop {
            self.deliver();
            let happened = match self.server.next(until)? {
                None => return Ok(None),
                Some(Received::Malformed(conn, message)) => {
                    self.error(conn, 400, "InvalidRequest", &message);
                    None
                }
                Some(Received::Request(req)) => self.handle(req),
            };
            if happened.is_some() {
                self.deliver();
                return Ok(happened);
            }
        }
    }

    /// Writes the pending event to a connection waiting for it, the
    /// earliest connection first.
    fn deliver(&mut self) {
        let Some(event) = &self.pending else { return };
        while let Some(first) = self.waiting.iter().enumerate().min_by_key(|(_, c)| **c).map(|(i, _)| i) {
            let conn = self.waiting.swap_remove(first);
            let mut deadline = itoa::Buffer::new();
            let headers = [
                ("content-type", "application/json"),
                ("lambda-runtime-aws-request-id", event.id.as_str()),
                ("lambda-runtime-deadline-ms", deadline.format(event.deadline_ms)),
                ("lambda-runtime-invoked-function-arn", self.function_arn.as_str()),
                ("lambda-runtime-trace-id", event.trace.as_str()),
            ];
            if self.server.reply(conn, &Reply { status: 200, headers: &headers, body: &event.body }) {
                self.pending = None;
                if let Phase::Invoking { delivered, .. } = &mut self.phase {
                    *delivered = true;
                }
                return;
            }
        }
    }

    /// One request: replies to it now (or, for a `next` that waits, once
    /// there is an event), and says what happened.
    fn handle(&mut self, mut req: Request) -> Option<Happened> {
        let conn = req.conn;
        let body = std::mem::replace(&mut req.body, Body::Complete(Vec::new()));
        let error_type = req.header("lambda-runtime-function-error-type");
        let path = req.path().split('?').next().unwrap_or_default();
        let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
            self.error(conn, 404, "NotFound", &format!("no route for {path}"));
            return None;
        };
        let (get, post) = (req.method() == "GET", req.method() == "POST");
        match (rest, rest.strip_prefix("invocation/")) {
            ("invocation/next", _) if get => self.next(conn),
            ("init/error", _) if post => self.init_error(conn, error_type, body),
            ("invocation/next" | "init/error", _) => self.not_allowed(conn),
            (_, Some(inv)) => match inv.split_once('/') {
                Some((id, "response")) if post => self.answer(conn, id, error_type, body, false),
                Some((id, "error")) if post => self.answer(conn, id, error_type, body, true),
                Some((_, "response" | "error")) => self.not_allowed(conn),
                _ => {
                    self.error(conn, 404, "NotFound", &format!("no route for {path}"));
                    None
                }
            },
            _ => {
                self.error(conn, 404, "NotFound", &format!("no route for {path}"));
                None
            }
        }
    }

    fn next(&mut self, conn: ConnId) -> Option<Happened> {
        let mut happened = None;
        match self.phase {
            Phase::Init => {
                self.phase = Phase::Ready;
                happened = Some(Happened::Ready);
            }
            Phase::Invoking { delivered: true, .. } => {
                self.transition(conn, "Invoking", "Next");
                return None;
            }
            _ => {}
        }
        self.waiting.push(conn);
        happened
    }

    fn init_error(&mut self, conn: ConnId, error_type: Option<&str>, body: Body) -> Option<Happened> {
        let Body::Complete(body) = body else {
            self.too_large(conn);
            return None;
        };
        if !matches!(self.phase, Phase::Init) {
            let from = if matches!(self.phase, Phase::Ready) { "Ready" } else { "Invoking" };
            self.transition(conn, from, "InitError");
            return None;
        }
        self.phase = Phase::Ready;
        let (kind, message) = error_report(error_type, &body);
        self.accepted(conn);
        Some(Happened::InitError(format!("{kind}: {message}")))
    }

    fn answer(
        &mut self,
        conn: ConnId,
        id: &str,
        error_type: Option<&str>,
        body: Body,
        failed: bool,
    ) -> Option<Happened> {
        if !matches!(&self.phase, Phase::Invoking { id: current, delivered: true } if current == id) {
            let message = format!("invalid request ID `{id}`: unknown or already answered");
            self.error(conn, 400, "InvalidRequestID", &message);
            return None;
        }
        self.phase = Phase::Ready;
        match body {
            Body::TooLarge => {
                self.too_large(conn);
                Some(Happened::Answered(Outcome::TooLarge))
            }
            Body::Complete(body) => {
                let outcome = if failed {
                    let (kind, message) = error_report(error_type, &body);
                    Outcome::Error { kind, message }
                } else {
                    Outcome::Response(body)
                };
                // The 202 is written before the outcome is returned.
                self.accepted(conn);
                Some(Happened::Answered(outcome))
            }
        }
    }

    /// A JSON reply.
    fn json(&mut self, conn: ConnId, status: u16, body: &str) {
        let headers = [("content-type", "application/json")];
        self.server.reply(conn, &Reply { status, headers: &headers, body: body.as_bytes() });
    }

    fn error(&mut self, conn: ConnId, status: u16, kind: &str, message: &str) {
        self.json(conn, status, &serde_json::json!({ "errorMessage": message, "errorType": kind }).to_string());
    }

    fn accepted(&mut self, conn: ConnId) {
        self.json(conn, 202, r#"{"status":"OK"}"#);
    }

    fn not_allowed(&mut self, conn: ConnId) -> Option<Happened> {
        self.error(conn, 405, "MethodNotAllowed", "method not allowed");
        None
    }

    fn too_large(&mut self, conn: ConnId) {
        let message = format!("Exceeded maximum allowed payload size ({} bytes).", self.payload_limit);
        self.error(conn, 413, "RequestEntityTooLarge", &message);
    }

    fn transition(&mut self, conn: ConnId, from: &str, to: &str) {
        let message =
            format!("State transition from {from} to {to} failed for runtime. Error: State transition is not allowed");
        self.error(conn, 403, "InvalidStateTransition", &message);
    }
}

/// The type and message of an error report: its JSON body's `errorType`
/// and `errorMessage` (the header's type if the body has none), or the
/// body as text.
fn error_report(header: Option<&str>, body: &[u8]) -> (String, String) {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| json.as_ref().and_then(|j| j.get(k)).and_then(|v| v.as_str()).map(str::to_string);
    let kind = field("errorType").or(header.map(str::to_string)).unwrap_or_else(|| "Unhandled".to_string());
    let message = field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    (kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reports_prefer_the_body_then_the_header() {
        let body = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":[]}"#;
        assert_eq!(error_report(Some("H"), body), ("ValueError".into(), "boom".into()));
        assert_eq!(error_report(Some("H"), b"plain text\n"), ("H".into(), "plain text".into()));
        assert_eq!(error_report(None, b"{}"), ("Unhandled".into(), "{}".into()));
    }
}
