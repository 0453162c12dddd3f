//! An HTTP ingest endpoint for a stream: `POST /streams/NAME` with a body
//! of records (JSON or text lines). Its owner decides what becomes of each
//! body ([`Taken`]): accepted (200, once it is stored), refused as
//! malformed (400), failed (500), or refused for now because the stream is behind (429
//! with `Retry-After`), so that a producer slows down instead of fanout
//! buffering without bound. It runs on the owner's thread until told to
//! stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::http1::{Body, Received, Reply, Server};

/// What became of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Stored: this many records will be processed.
    Accepted(u64),
    /// The stream is behind: try again after this long.
    Busy(Duration),
    /// Not records of the stream's format: why.
    Refused(String),
    /// They could not be stored (500): why.
    Failed(String),
}

/// The endpoint, bound.
pub struct Ingest {
    server: Server,
    path: String,
}

impl Ingest {
    /// Listens on `addr` for `POST /streams/NAME` bodies of up to
    /// `max_body` bytes.
    pub fn bind(addr: &str, name: &str, max_body: u64) -> std::io::Result<Ingest> {
        Ok(Ingest { server: Server::bind(addr, max_body)?, path: format!("/streams/{name}") })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Serves until `stop` is set, handing each body to `take`.
    pub fn serve(mut self, stop: &AtomicBool, mut take: impl FnMut(&[u8]) -> Taken) -> std::io::Result<()> {
        let json = [("content-type", "application/json")];
        while !stop.load(Relaxed) {
            let Some(received) = self.server.next(Instant::now() + Duration::from_millis(50))? else { continue };
            let req = match received {
                Received::Request(req) => req,
                Received::Malformed(conn, why) => {
                    let body = error_body(&why);
                    self.server.reply(conn, &Reply { status: 400, headers: &json, body: body.as_bytes() });
                    continue;
                }
            };
            let path = req.path().split('?').next().unwrap_or("");
            let (status, retry, body) = if path != self.path {
                (404, None, error_body(&format!("no stream here: POST records to {}", self.path)))
            } else if req.method() != "POST" {
                (405, None, error_body(&format!("POST records to {}", self.path)))
            } else {
                match &req.body {
                    Body::TooLarge => {
                        (413, None, error_body("the body is larger than the stream takes in one request"))
                    }
                    Body::Complete(bytes) => match take(bytes) {
                        Taken::Accepted(n) => (200, None, format!("{{\"accepted\":{n}}}")),
                        Taken::Busy(after) => {
                            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
                            (
                                429,
                                Some(secs.to_string()),
                                error_body(&format!("the stream is behind; retry after {secs} s")),
                            )
                        }
                        Taken::Refused(why) => (400, None, error_body(&why)),
                        Taken::Failed(why) => (500, None, error_body(&why)),
                    },
                }
            };
            let mut headers = vec![("content-type", "application/json")];
            if let Some(r) = &retry {
                headers.push(("retry-after", r.as_str()));
            }
            self.server.reply(req.conn, &Reply { status, headers: &headers, body: body.as_bytes() });
        }
        Ok(())
    }
}

/// `{"error": why}`.
fn error_body(why: &str) -> String {
    serde_json::json!({ "error": why }).to_string()
}
