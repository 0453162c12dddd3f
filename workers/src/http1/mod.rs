//! A small blocking HTTP/1.1 server: the listener, its connections,
//! requests read and parsed (`request.rs`: bodies with a `Content-Length`
//! or chunked, `Expect: 100-continue`, `Connection: close`, HTTP/1.0,
//! pipelining, size limits), and replies.
//!
//! It knows nothing of what requests mean. Its owner takes each complete
//! [`Request`] from [`Server::next`] and answers it with [`Server::reply`],
//! at once or later (a long poll: a request whose reply waits for
//! something to happen). The AWS Lambda Runtime API
//! ([`crate::external::api`]) is built on it; an HTTP function host can be.
//!
//! The server runs on its owner's thread, only while the owner waits in
//! [`Server::next`]. A connection's requests are handed out in order, and
//! the next one only once the last has its reply, since HTTP/1.1 answers
//! in request order. While there is exactly one connection, the server
//! reads it directly (a blocking read with a short timeout), so a request
//! costs one read(2) and its reply one writev(2). Once a client has held
//! two connections at once, the server waits on all of them and on the
//! listener with poll(2).

mod request;

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

pub(crate) use request::{Body, Request};
use request::{Parsed, parse};

/// The longest a blocking read waits before [`Server::next`] looks at the
/// clock (and its owner at whatever else it watches).
pub(crate) const POLL: Duration = Duration::from_millis(10);
/// How long a client may take to read a reply before its connection is
/// dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection, named for as long as it lives (a reply goes to the
/// connection its request came on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ConnId(u64);

impl ConnId {
    /// No connection: a request not yet handed out (ids start at 1).
    const NONE: ConnId = ConnId(0);
}

/// What [`Server::next`] hands its owner.
pub(crate) enum Received {
    /// A complete request, to answer with [`Server::reply`].
    Request(Request),
    /// Bytes that are not an HTTP/1.1 request, and why: the owner replies
    /// (400) and the connection closes.
    Malformed(ConnId, String),
}

/// A reply: `content-length`, and `connection: close` when the connection
/// closes after it, are added.
pub(crate) struct Reply<'a> {
    /// The status code.
    pub(crate) status: u16,
    /// Headers, in order.
    pub(crate) headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub(crate) body: &'a [u8],
}

/// One connection.
struct Conn {
    id: ConnId,
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    /// A request was handed out and has no reply yet: the connection's
    /// next request waits.
    busy: bool,
    /// Close once the request handed out has its reply.
    closing: bool,
    /// `100 Continue` was sent for the request being read.
    continued: bool,
    /// Closed by the client, or to be dropped.
    dead: bool,
}

/// A blocking HTTP/1.1 server on one listener.
pub(crate) struct Server {
    listener: TcpListener,
    conns: Vec<Conn>,
    next_id: u64,
    /// The largest request body read.
    max_body: u64,
    /// A client has held more than one connection at once: from then on
    /// the server waits with poll(2).
    multi: bool,
    /// Where reads land before they join a connection's buffer.
    scratch: Box<[u8]>,
    /// A reply's head, kept from one reply to the next.
    head: Vec<u8>,
}

impl Server {
    /// A server listening on `addr` (port 0: any free port) that reads
    /// request bodies of up to `max_body` bytes.
    pub(crate) fn bind(addr: impl ToSocketAddrs, max_body: u64) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            conns: Vec::new(),
            next_id: 0,
            max_body,
            multi: false,
            scratch: vec![0; 64 << 10].into_boxed_slice(),
            head: Vec::with_capacity(512),
        })
    }

    /// The address the server listens on.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next complete request of any connection, waiting for one until
    /// `until` (a read may overrun it by up to [`POLL`]); `None` when none
    /// came. An error means the listener failed: the server cannot go on.
    pub(crate) fn next(&mut self, until: Instant) -> io::Result<Option<Received>> {
        loop {
            if let Some(received) = self.buffered() {
                return Ok(Some(received));
            }
            // A dropped connection tells the client it is closed.
            self.conns.retain(|c| !c.dead);
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

    /// Writes `reply` to the request that connection `to` is waiting on;
    /// false when the connection is gone or the write failed.
    pub(crate) fn reply(&mut self, to: ConnId, reply: &Reply<'_>) -> bool {
        let Some(conn) = self.conns.iter_mut().find(|c| c.id == to && !c.dead) else { return false };
        debug_assert!(conn.busy, "a reply to a connection with no request waiting");
        reply_head(&mut self.head, reply, conn.closing);
        // Head and body in one system call, the body not copied.
        let ok = write_all(&mut conn.stream, [self.head.as_slice(), reply.body]);
        conn.busy = false;
        conn.dead |= !ok || conn.closing;
        ok
    }

    /// The first complete request already read on a connection that is
    /// not waiting for a reply.
    fn buffered(&mut self) -> Option<Received> {
        for conn in &mut self.conns {
            if conn.dead || conn.busy || conn.buf.is_empty() {
                continue;
            }
            match parse(&conn.buf, self.max_body) {
                Parsed::Incomplete { expect_continue } => {
                    if expect_continue && !conn.continued {
                        conn.continued = true;
                        send(conn, b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                }
                Parsed::Bad(message) => {
                    conn.busy = true;
                    conn.closing = true;
                    return Some(Received::Malformed(conn.id, message));
                }
                Parsed::Request(mut req, used) => {
                    conn.buf.drain(..used);
                    conn.continued = false;
                    conn.busy = true;
                    conn.closing = req.close;
                    req.conn = conn.id;
                    return Some(Received::Request(req));
                }
            }
        }
        None
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
                    self.next_id += 1;
                    self.conns.push(Conn {
                        id: ConnId(self.next_id),
                        stream,
                        buf: Vec::new(),
                        busy: false,
                        closing: false,
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
}

/// Writes the head of `reply` into `head` (`close`: the connection
/// closes after it).
fn reply_head(head: &mut Vec<u8>, reply: &Reply<'_>, close: bool) {
    head.clear();
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(itoa::Buffer::new().format(reply.status).as_bytes());
    head.push(b' ');
    head.extend_from_slice(reason(reply.status).as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in reply.headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"content-length: ");
    head.extend_from_slice(itoa::Buffer::new().format(reply.body.len()).as_bytes());
    head.extend_from_slice(if close { b"\r\nconnection: close\r\n\r\n" } else { b"\r\n\r\n" });
}

/// One connection served by a thread of its own, blocking: its requests
/// in order, each answered before the next is read.
pub(crate) struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    scratch: Box<[u8]>,
    head: Vec<u8>,
    max_body: u64,
    /// The request last read asked to close the connection after its reply.
    closing: bool,
}

impl Connection {
    /// Serves `stream`, reading request bodies of up to `max_body` bytes;
    /// a read waits at most `idle` (then [`Connection::next`] returns so
    /// its owner can look at the time).
    pub(crate) fn new(stream: TcpStream, max_body: u64, idle: Duration) -> io::Result<Connection> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(idle))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Connection {
            stream,
            buf: Vec::new(),
            scratch: vec![0; 64 << 10].into_boxed_slice(),
            head: Vec::with_capacity(256),
            max_body,
            closing: false,
        })
    }

    /// The next request: `Ok(None)` when none came within the idle time,
    /// an error when the connection is closed or broken.
    pub(crate) fn next(&mut self) -> io::Result<Option<Received>> {
        let mut continued = false;
        loop {
            if !self.buf.is_empty() {
                match parse(&self.buf, self.max_body) {
                    Parsed::Request(req, used) => {
                        self.buf.drain(..used);
                        self.closing = req.close;
                        return Ok(Some(Received::Request(req)));
                    }
                    Parsed::Bad(message) => {
                        self.closing = true;
                        return Ok(Some(Received::Malformed(ConnId::NONE, message)));
                    }
                    Parsed::Incomplete { expect_continue } => {
                        if expect_continue && !continued {
                            continued = true;
                            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                        }
                    }
                }
            }
            match self.stream.read(&mut self.scratch) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&self.scratch[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Answers the request last read (`close`: close the connection after,
    /// as it also does when the request asked to); false when the
    /// connection is to be dropped.
    pub(crate) fn reply(&mut self, reply: &Reply<'_>, close: bool) -> bool {
        let close = close || self.closing;
        reply_head(&mut self.head, reply, close);
        write_all(&mut self.stream, [self.head.as_slice(), reply.body]) && !close
    }
}

/// Writes all of `bytes`; false (and the connection dead) when it fails.
fn send(conn: &mut Conn, bytes: &[u8]) -> bool {
    let ok = conn.stream.write_all(bytes).is_ok();
    conn.dead |= !ok;
    ok
}

/// Writes both parts, with writev(2); false when it fails.
fn write_all(stream: &mut TcpStream, parts: [&[u8]; 2]) -> bool {
    let mut slices = [IoSlice::new(parts[0]), IoSlice::new(parts[1])];
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match stream.write_vectored(left) {
            Ok(0) => return false,
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// The reason phrase of a status code.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_connections_requests_in_order_and_closes_when_asked() {
        let mut server = Server::bind("127.0.0.1:0", 100).unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        client
            .write_all(
                b"GET /wait HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            )
            .unwrap();
        let soon = || Instant::now() + Duration::from_secs(10);
        let Some(Received::Request(first)) = server.next(soon()).unwrap() else { panic!("no request") };
        assert_eq!(first.path(), "/wait");
        // The second request waits until the first has its reply.
        assert!(server.next(Instant::now() + 3 * POLL).unwrap().is_none());
        assert!(server.reply(first.conn, &Reply { status: 200, headers: &[("x-a", "1")], body: b"held" }));
        let Some(Received::Request(second)) = server.next(soon()).unwrap() else { panic!("no request") };
        assert!(matches!(&second.body, Body::Complete(b) if b == b"hi"));
        assert_eq!((second.method(), second.close), ("POST", true));
        assert!(server.reply(second.conn, &Reply { status: 202, headers: &[], body: b"" }));
        // The closed connection is dropped by the next wait.
        assert!(server.next(Instant::now()).unwrap().is_none());
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 4\r\n\r\nheld\
             HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        assert!(!server.reply(second.conn, &Reply { status: 200, headers: &[], body: b"" }));
    }
}
