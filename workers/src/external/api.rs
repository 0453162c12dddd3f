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
//! event is unanswered), 404 for other paths.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

/// One event for the runtime.
pub(crate) struct Event {
    pub(crate) id: String,
    pub(crate) deadline_ms: u64,
    pub(crate) trace: String,
    pub(crate) body: Bytes,
}

/// What the server tells the sandbox's owner about the init phase.
pub(crate) enum Signal {
    /// The runtime asked for its first event: init is over.
    Ready,
    /// The runtime reported an init error.
    InitError(String),
}

/// How an invocation ended, as the runtime reported it.
pub(crate) enum Outcome {
    /// The response body.
    Response(Bytes),
    /// A function error: its type and message.
    Error { kind: String, message: String },
    /// A body over the payload limit.
    TooLarge,
}

enum Phase {
    Init,
    Ready,
    Invoking { id: String, delivered: bool, reply: tokio::sync::oneshot::Sender<Outcome> },
}

struct State {
    phase: Phase,
}

/// One sandbox's Runtime API.
pub(crate) struct Api {
    state: Mutex<State>,
    events: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Event>>,
    signals: tokio::sync::mpsc::UnboundedSender<Signal>,
    payload_limit: u64,
    function_arn: String,
}

type Reply = Response<Full<Bytes>>;

impl Api {
    /// A new API, and the sender its events come from.
    pub(crate) fn new(
        signals: tokio::sync::mpsc::UnboundedSender<Signal>,
        payload_limit: u64,
        function: &str,
    ) -> (Arc<Api>, tokio::sync::mpsc::UnboundedSender<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let api = Api {
            state: Mutex::new(State { phase: Phase::Init }),
            events: tokio::sync::Mutex::new(rx),
            signals,
            payload_limit,
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function}"),
        };
        (Arc::new(api), tx)
    }

    /// Starts an invocation: the next event delivered answers to `reply`.
    pub(crate) fn begin(&self, id: &str, reply: tokio::sync::oneshot::Sender<Outcome>) {
        let mut st = self.state.lock().expect("not poisoned");
        st.phase = Phase::Invoking { id: id.to_string(), delivered: false, reply };
    }

    /// Serves connections from `listener` until the task is aborted.
    pub(crate) async fn serve(self: Arc<Api>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let api = self.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_string();
        let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
            return error(StatusCode::NOT_FOUND, "NotFound", &format!("no route for {path}"));
        };
        let method = req.method().clone();
        match (rest, rest.strip_prefix("invocation/")) {
            ("invocation/next", _) => match method {
                Method::GET => self.next().await,
                _ => not_allowed(),
            },
            ("init/error", _) => match method {
                Method::POST => self.init_error(req).await,
                _ => not_allowed(),
            },
            (_, Some(inv)) => match inv.split_once('/') {
                Some((id, "response")) if method == Method::POST => self.answer(id, req, false).await,
                Some((id, "error")) if method == Method::POST => self.answer(id, req, true).await,
                Some((_, "response" | "error")) => not_allowed(),
                _ => error(StatusCode::NOT_FOUND, "NotFound", &format!("no route for {path}")),
            },
            _ => error(StatusCode::NOT_FOUND, "NotFound", &format!("no route for {path}")),
        }
    }

    async fn next(&self) -> Reply {
        {
            let mut st = self.state.lock().expect("not poisoned");
            match st.phase {
                Phase::Init => {
                    st.phase = Phase::Ready;
                    let _ = self.signals.send(Signal::Ready);
                }
                Phase::Invoking { delivered: true, .. } => {
                    return transition("Invoking", "Next");
                }
                _ => {}
            }
        }
        let mut events = self.events.lock().await;
        let Some(event) = events.recv().await else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", "the sandbox is shutting down");
        };
        drop(events);
        if let Phase::Invoking { id, delivered, .. } = &mut self.state.lock().expect("not poisoned").phase
            && *id == event.id
        {
            *delivered = true;
        }
        Response::builder()
            .status(StatusCode::OK)
            .header("Content-Type", "application/json")
            .header("Lambda-Runtime-Aws-Request-Id", &event.id)
            .header("Lambda-Runtime-Deadline-Ms", event.deadline_ms.to_string())
            .header("Lambda-Runtime-Invoked-Function-Arn", &self.function_arn)
            .header("Lambda-Runtime-Trace-Id", &event.trace)
            .body(Full::new(event.body))
            .expect("a valid response")
    }

    async fn init_error(&self, req: Request<Incoming>) -> Reply {
        let kind = header(&req, "Lambda-Runtime-Function-Error-Type");
        let body = match self.body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let mut st = self.state.lock().expect("not poisoned");
        if !matches!(st.phase, Phase::Init) {
            return transition(if matches!(st.phase, Phase::Ready) { "Ready" } else { "Invoking" }, "InitError");
        }
        st.phase = Phase::Ready;
        let (kind, message) = error_report(kind, &body);
        let _ = self.signals.send(Signal::InitError(format!("{kind}: {message}")));
        accepted()
    }

    async fn answer(&self, id: &str, req: Request<Incoming>, failed: bool) -> Reply {
        if !self.current(id) {
            return invalid_id(id);
        }
        let kind = header(&req, "Lambda-Runtime-Function-Error-Type");
        let body = self.body(req).await;
        let mut st = self.state.lock().expect("not poisoned");
        // The invocation may have been abandoned while the body came in.
        let reply = match std::mem::replace(&mut st.phase, Phase::Ready) {
            Phase::Invoking { id: current, reply, .. } if current == id => reply,
            other => {
                st.phase = other;
                return invalid_id(id);
            }
        };
        drop(st);
        match body {
            Err(r) => {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    let _ = reply.send(Outcome::TooLarge);
                }
                r
            }
            Ok(body) => {
                let outcome = if failed {
                    let (kind, message) = error_report(kind, &body);
                    Outcome::Error { kind, message }
                } else {
                    Outcome::Response(body)
                };
                let _ = reply.send(outcome);
                accepted()
            }
        }
    }

    /// Whether `id` is the invocation in progress (delivered, unanswered).
    fn current(&self, id: &str) -> bool {
        matches!(&self.state.lock().expect("not poisoned").phase, Phase::Invoking { id: c, delivered: true, .. } if c == id)
    }

    /// Reads a request body, up to the payload limit.
    async fn body(&self, req: Request<Incoming>) -> Result<Bytes, Reply> {
        let limit = self.payload_limit;
        let declared = req.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        match Limited::new(req.into_body(), limit as usize).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
            Err(e) => Err(error(StatusCode::BAD_REQUEST, "InvalidRequest", &e.to_string())),
        }
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
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

fn json_reply(status: StatusCode, body: serde_json::Value) -> Reply {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn error(status: StatusCode, kind: &str, message: &str) -> Reply {
    json_reply(status, serde_json::json!({ "errorMessage": message, "errorType": kind }))
}

fn accepted() -> Reply {
    json_reply(StatusCode::ACCEPTED, serde_json::json!({ "status": "OK" }))
}

fn not_allowed() -> Reply {
    error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed")
}

fn invalid_id(id: &str) -> Reply {
    error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        &format!("invalid request ID `{id}`: unknown or already answered"),
    )
}

fn too_large(limit: u64) -> Reply {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!("Exceeded maximum allowed payload size ({limit} bytes)."),
    )
}

fn transition(from: &str, to: &str) -> Reply {
    error(
        StatusCode::FORBIDDEN,
        "InvalidStateTransition",
        &format!("State transition from {from} to {to} failed for runtime. Error: State transition is not allowed"),
    )
}
