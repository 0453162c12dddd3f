//! Reading requests: one HTTP/1.1 (or 1.0) request parsed from the start
//! of a connection's bytes with `httparse`, its body taken by its
//! `Content-Length` or its chunks, its `Connection`, `Expect` and
//! `Transfer-Encoding` headers understood, and limits on its head and body.

use std::ops::Range;

use super::ConnId;

/// The largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 << 10;
/// The most headers a request may have.
const MAX_HEADERS: usize = 32;

/// A request's body.
pub(crate) enum Body {
    /// All of it.
    Complete(Vec<u8>),
    /// Over the server's body limit: not read; the connection closes after
    /// the reply (413).
    TooLarge,
}

/// A complete request.
pub(crate) struct Request {
    /// The connection it came on, to reply to.
    pub(crate) conn: ConnId,
    /// The request line and headers as received; the ranges below point
    /// into it (one allocation for all of them).
    head: Vec<u8>,
    method: Range<usize>,
    target: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// The body, decoded from its length or its chunks.
    pub(crate) body: Body,
    /// The connection closes after the reply: `Connection: close`, an
    /// HTTP/1.0 request without keep-alive, or a body too large to read.
    pub(crate) close: bool,
}

impl Request {
    /// The method: `GET`, `POST`.
    pub(crate) fn method(&self) -> &str {
        self.text(&self.method)
    }

    /// The request target as sent, query included: `/a/b?c=d`.
    pub(crate) fn path(&self) -> &str {
        self.text(&self.target)
    }

    /// The value of header `name` (any case), trimmed; the last one if it
    /// is repeated.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| self.text(v).trim())
    }

    fn text(&self, range: &Range<usize>) -> &str {
        std::str::from_utf8(&self.head[range.clone()]).unwrap_or_default()
    }
}

/// What the start of a connection's bytes holds.
pub(super) enum Parsed {
    /// Not a whole request yet; whether its head asks for `100 Continue`.
    Incomplete { expect_continue: bool },
    /// A request, and how many bytes it took.
    Request(Request, usize),
    /// Not an HTTP/1.1 request, and why.
    Bad(String),
}

/// Where `part`, a slice of `buf`, lies in it.
fn span(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Parses one request from the start of `buf`, reading a body of up to
/// `limit` bytes.
pub(super) fn parse(buf: &[u8], limit: u64) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Bad(format!("the request head is over {MAX_HEAD} bytes"));
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete { expect_continue: false },
        Err(e) => return Parsed::Bad(format!("a malformed request: {e}")),
    };
    let (mut length, mut chunked, mut expect_continue) = (None, false, false);
    let mut close = req.version == Some(0);
    let mut kept = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        kept.push((span(buf, h.name.as_bytes()), span(buf, h.value)));
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
        }
    }
    let method = req.method.map_or(0..0, |m| span(buf, m.as_bytes()));
    let target = req.path.map_or(0..0, |p| span(buf, p.as_bytes()));
    let request = |body, close| Request {
        conn: ConnId::NONE,
        head: buf[..head].to_vec(),
        method,
        target,
        headers: kept,
        body,
        close,
    };
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
        assert_eq!((r.method(), r.path(), body(&r), r.close), ("POST", "/a", &b"abc"[..], false));
        let (r, m) = request(&two[n..]);
        assert_eq!((r.method(), body(&r), n + m), ("GET", &b""[..], two.len()));

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
    fn headers_are_found_by_name_in_any_case() {
        let (r, _) = request(b"GET /x?y=1 HTTP/1.1\r\nX-Kind:  a \r\nx-kind: b\r\nHost: h\r\n\r\n");
        assert_eq!(
            (r.path(), r.header("x-KIND"), r.header("host"), r.header("none")),
            ("/x?y=1", Some("b"), Some("h"), None)
        );
    }
}
