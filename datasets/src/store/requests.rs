//! The requests made to object storage, counted by kind (with the
//! throttled and failed ones that were retried) and the bytes moved:
//! requests cost money on every cloud.

use std::sync::atomic::{AtomicU64, Ordering};

/// Requests made to object storage, by kind, and the bytes moved.
#[derive(Debug, Default)]
pub struct Requests {
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    put: AtomicU64,
    post: AtomicU64,
    delete: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) failed: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

/// A snapshot of [`Requests`], as the run summary reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    /// GET requests (object reads, ranged or whole).
    pub get: u64,
    /// HEAD requests (an object's size).
    pub head: u64,
    /// LIST requests (pages of a listing).
    pub list: u64,
    /// PUT requests (whole objects and multipart parts).
    pub put: u64,
    /// POST requests (starting and completing multipart uploads).
    pub post: u64,
    /// DELETE requests (aborted uploads, scratch objects).
    pub delete: u64,
    /// Answers of 429 (throttled) or 5xx, retried with backoff.
    pub retried: u64,
    /// Requests that got no answer (connection errors, timeouts).
    pub failed: u64,
    /// Bytes read from objects.
    pub bytes_read: u64,
    /// Bytes written to objects.
    pub bytes_written: u64,
}

impl RequestCounts {
    /// Every request made.
    pub fn total(&self) -> u64 {
        self.get + self.head + self.list + self.put + self.post + self.delete
    }

    /// The requests S3 prices as writes (PUT, POST, LIST, COPY).
    pub fn write_class(&self) -> u64 {
        self.put + self.post + self.list
    }

    /// The requests S3 prices as reads (GET, HEAD).
    pub fn read_class(&self) -> u64 {
        self.get + self.head
    }
}

impl Requests {
    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RequestCounts {
            get: n(&self.get),
            head: n(&self.head),
            list: n(&self.list),
            put: n(&self.put),
            post: n(&self.post),
            delete: n(&self.delete),
            retried: n(&self.retried),
            failed: n(&self.failed),
            bytes_read: n(&self.bytes_read),
            bytes_written: n(&self.bytes_written),
        }
    }

    /// Counts bytes read.
    pub(crate) fn read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts bytes written.
    pub fn written(&self, n: u64) {
        self.bytes_written.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one request by its method and query (a GET with a listing's
    /// parameters is a LIST).
    #[cfg_attr(not(feature = "cloud"), allow(dead_code))]
    pub(super) fn request(&self, method: &str, query: &str) {
        let list = query.contains("list-type=") || query.contains("comp=list") || query.contains("prefix=");
        let counter = match method {
            "GET" if list => &self.list,
            "GET" => &self.get,
            "HEAD" => &self.head,
            "PUT" => &self.put,
            "POST" => &self.post,
            "DELETE" => &self.delete,
            // PROPFIND (a WebDAV listing over https) and the rest.
            _ => &self.list,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_kind() {
        let r = Requests::default();
        r.request("GET", "list-type=2&prefix=a");
        r.request("GET", "");
        r.request("PUT", "partNumber=1&uploadId=x");
        r.request("POST", "uploads");
        r.request("HEAD", "");
        let c = r.snapshot();
        assert_eq!((c.list, c.get, c.put, c.post, c.head, c.total()), (1, 1, 1, 1, 1, 5));
        assert_eq!((c.read_class(), c.write_class()), (2, 3));
    }
}
