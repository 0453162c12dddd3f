//! Object storage: inputs and outputs named by URL — `s3://bucket/key`,
//! `gs://`, `az://` (and Azure's other schemes), `https://` (read-only) —
//! through the `object_store` crate, the client DataFusion, Polars and
//! delta-rs use.
//!
//! A [`Storage`] holds the options the stores are built with (the standard
//! environment — `AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, `GOOGLE_*`, `AZURE_*` — overridden by a job's
//! `[storage]` table), the stores made so far (one per bucket), and a count
//! of every HTTP request they have made, by kind, with the throttled and
//! failed ones that were retried: requests cost money on every cloud.
//!
//! The engine's workers are plain threads, so each call blocks on a small
//! shared tokio runtime that does the I/O. A `file://` URL is a local path.
//! Without the `cloud` feature, object URLs are refused by name.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::kept::Kept;

#[cfg(feature = "cloud")]
mod cloud;
#[cfg(not(feature = "cloud"))]
#[path = "no_cloud.rs"]
mod cloud;
mod requests;
mod url;

pub use requests::{RequestCounts, Requests};
pub(crate) use url::{SCHEMES, split_url};
pub use url::{is_url, local_path, writable};

/// An object: its store, key, the counts its reads add to and the bytes
/// of it read ahead (the `kept` module).
#[derive(Clone)]
pub struct Object {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) key: Key,
    pub(crate) requests: Arc<Requests>,
    pub(crate) kept: Arc<Kept>,
}

impl Object {
    /// What tells this object from others in [`Kept`]: its store's address
    /// and its key.
    pub(crate) fn id(&self) -> (usize, Key) {
        (Arc::as_ptr(&self.store) as *const () as usize, self.key.clone())
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Object({} {})", self.store, self.key)
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.store, &other.store) && self.key == other.key
    }
}

impl Eq for Object {}

/// How to reach object storage, the stores made so far and the requests
/// they made. One per run, shared by its readers and its output.
#[derive(Default)]
pub struct Storage {
    options: BTreeMap<String, String>,
    scratch: Option<String>,
    stores: Mutex<HashMap<String, Stores>>,
    requests: Arc<Requests>,
    kept: Arc<Kept>,
}

/// The clients of one bucket: the object store, and where uploads are
/// driven part by part so that their ids can be kept (S3's multipart
/// uploads, which stay pending until completed or aborted).
#[derive(Clone)]
pub(crate) struct Stores {
    object: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
    pending: Option<Arc<dyn PendingUploads>>,
}

/// Lists the multipart uploads of one key still pending (S3's
/// ListMultipartUploads, which object_store does not offer): how a resume
/// finds an upload whose id its killed run never heard.
pub(crate) trait PendingUploads: Send + Sync {
    /// The ids of the pending uploads of `key`.
    fn list<'a>(
        &'a self,
        key: &'a str,
    ) -> futures_util::future::BoxFuture<'a, std::result::Result<Vec<String>, String>>;
}

/// What an upload tells its caller to note, so that whoever finishes the
/// work after a crash can abort what it left pending (S3's multipart
/// uploads; other stores have nothing to note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadNote<'a> {
    /// A multipart upload is about to be created; these uploads of the
    /// same key were pending before it, and are not its own. A crash from
    /// here until [`UploadNote::Created`] is noted leaves an upload whose
    /// id no one heard: [`Storage::abort_new_uploads`] finds it.
    Creating {
        /// The ids of the key's uploads pending before this one.
        pending: &'a [String],
    },
    /// The multipart upload was created, with this id; no part is up yet.
    Created {
        /// The upload's id.
        id: &'a str,
    },
}

/// Who wrote an object: the run, and the XXH3 of what it wrote, kept in
/// the object's user metadata (`x-amz-meta-fanoutrun`,
/// `x-ms-meta-fanoutrun`, ...: names of letters alone, which every store
/// takes and no proxy drops), so that a resumed run knows its own object
/// from a stranger's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The run's id.
    pub run: String,
    /// The content's XXH3 (64 bits, hex).
    pub xxh3: String,
}

impl Stamp {
    const RUN: &str = "fanoutrun";
    const XXH3: &str = "fanoutxxh3";

    fn attributes(&self) -> object_store::Attributes {
        use object_store::Attribute::Metadata;
        let mut a = object_store::Attributes::new();
        a.insert(Metadata(Self::RUN.into()), self.run.clone().into());
        a.insert(Metadata(Self::XXH3.into()), self.xxh3.clone().into());
        a
    }

    fn of(attributes: &object_store::Attributes) -> Option<Stamp> {
        use object_store::Attribute::Metadata;
        let get = |k: &'static str| attributes.get(&Metadata(k.into())).map(|v| v.as_ref().to_string());
        Some(Stamp { run: get(Self::RUN)?, xxh3: get(Self::XXH3)? })
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("options", &self.options.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Storage {
    /// Storage configured by the environment and then `options` (a job's
    /// `[storage]` table: `endpoint`, `region`, `allow_http`,
    /// `access_key_id`, ... — any key the S3, GCS, Azure or HTTP client
    /// takes). Err names a key no client takes.
    ///
    /// The key [`SCRATCH`] is fanout's own: where keyed stages with remote
    /// functions shuffle (see [`Storage::scratch`]).
    pub fn new(mut options: BTreeMap<String, String>) -> std::result::Result<Storage, String> {
        let scratch = options.remove(SCRATCH).map(|s| scratch_prefix(&s)).transpose()?;
        for key in options.keys() {
            if !cloud::known_key(key) {
                return Err(format!("unknown storage option `{key}`{}", cloud::KEYS_HINT));
            }
        }
        Ok(Storage { options, scratch, ..Storage::default() })
    }

    /// The prefix shuffles may write their scratch objects under
    /// (`s3://bucket/tmp/`, ending in `/`), when the job set one.
    pub fn scratch(&self) -> Option<&str> {
        self.scratch.as_deref()
    }

    /// Reads `len` bytes at `offset` of the object `url` with one ranged
    /// GET.
    pub fn read_range(&self, url: &str, offset: u64, len: u64) -> Result<bytes::Bytes> {
        let object = self.object(url)?;
        let got =
            block_on(object.store.get_range(&object.key, offset..offset + len)).map_err(|e| object_error(url, e))?;
        self.requests.read(got.len());
        if (got.len() as u64) < len {
            let m = format!("{} bytes at {offset}, of {len} asked for: the object is shorter", got.len());
            return Err(Error::io(url, std::io::Error::new(std::io::ErrorKind::UnexpectedEof, m)));
        }
        Ok(got)
    }

    /// Deletes the object `url`; one already gone is no error.
    pub fn delete(&self, url: &str) -> Result<()> {
        let object = self.object(url)?;
        match block_on(object.store.delete(&object.key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_error(url, e)),
        }
    }

    /// Deletes every object under the prefix `url` (a listing, then a
    /// batch request per thousand keys where the store has one: S3's
    /// DeleteObjects); how many there were.
    pub fn delete_prefix(&self, url: &str) -> Result<u64> {
        let (base, key) = split_url(url)?;
        let prefix = Key::parse(key.trim_end_matches('/')).map_err(|e| Error::invalid(url, e))?;
        let store = self.store(base, url)?;
        let mut keys = Vec::new();
        let mut listing = store.list(Some(&prefix));
        while let Some(meta) = block_on(listing.next()) {
            keys.push(meta.map_err(|e| object_error(url, e))?.location);
        }
        let n = keys.len() as u64;
        let mut deleted = store.delete_stream(futures_util::stream::iter(keys.into_iter().map(Ok)).boxed());
        while let Some(done) = block_on(deleted.next()) {
            match done {
                // Gone already: what was asked.
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(object_error(url, e)),
            }
        }
        Ok(n)
    }

    /// The requests made so far.
    pub fn requests(&self) -> RequestCounts {
        self.requests.snapshot()
    }

    /// The shared request counters.
    pub fn counters(&self) -> &Arc<Requests> {
        &self.requests
    }

    /// The object a URL names, with its store (made on first use).
    pub fn object(&self, url: &str) -> Result<Object> {
        let (base, key) = split_url(url)?;
        let key = Key::parse(key).map_err(|e| Error::invalid(url, e))?;
        Ok(Object { store: self.store(base, url)?, key, requests: self.requests.clone(), kept: self.kept.clone() })
    }

    /// The object `key` in the store of `base` (`scheme://authority`),
    /// `url` naming it in errors.
    pub(crate) fn object_at(&self, base: &str, url: &str, key: Key) -> Result<Object> {
        Ok(Object { store: self.store(base, url)?, key, requests: self.requests.clone(), kept: self.kept.clone() })
    }

    /// The store of `scheme://authority`, made once.
    fn store(&self, base: &str, url: &str) -> Result<Arc<dyn ObjectStore>> {
        Ok(self.stores(base, url)?.object)
    }

    /// The clients of `scheme://authority`, made once.
    fn stores(&self, base: &str, url: &str) -> Result<Stores> {
        let mut stores = self.stores.lock().expect("not poisoned");
        if let Some(s) = stores.get(base) {
            return Ok(s.clone());
        }
        let scheme = base.split_once("://").map_or(base, |(s, _)| s);
        if !SCHEMES.contains(&scheme) {
            let m = format!("unknown storage scheme `{scheme}://`; expected s3, gs, az, https or file");
            return Err(Error::invalid(url, m));
        }
        let built = cloud::build(base, &self.options, &self.requests).map_err(|m| Error::invalid(url, m))?;
        stores.insert(base.to_string(), built.clone());
        Ok(built)
    }

    /// Whether the object `url` exists, and who wrote it (`Some(None)`:
    /// not fanout, or not a fanout that stamps its outputs); one HEAD.
    pub fn stamp(&self, url: &str) -> Result<Option<Option<Stamp>>> {
        let object = self.object(url)?;
        let opts = object_store::GetOptions { head: true, ..Default::default() };
        match block_on(object.store.get_opts(&object.key, opts)) {
            Ok(got) => Ok(Some(Stamp::of(&got.attributes))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(object_error(url, e)),
        }
    }

    /// Aborts the multipart upload `id` of the object `url` (one an
    /// earlier attempt left pending); one gone already is not an error.
    pub fn abort_upload(&self, url: &str, id: &str) -> Result<()> {
        let (base, key) = split_url(url)?;
        let key = Key::parse(key).map_err(|e| Error::invalid(url, e))?;
        let Some(multipart) = self.stores(base, url)?.multipart else { return Ok(()) };
        match block_on(multipart.abort_multipart(&key, &id.to_string())) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            // S3 answers an upload completed or aborted already with 404
            // NoSuchUpload, which some servers send as another error.
            Err(e) if e.to_string().contains("NoSuchUpload") => Ok(()),
            Err(e) => Err(object_error(url, e)),
        }
    }

    /// The ids of the multipart uploads of the object `url` still pending
    /// (none where the store has no such uploads).
    pub fn pending_uploads(&self, url: &str) -> Result<Vec<String>> {
        let (base, key) = split_url(url)?;
        let Some(pending) = self.stores(base, url)?.pending else { return Ok(Vec::new()) };
        block_on(pending.list(key)).map_err(|m| Error::invalid(url, m))
    }

    /// Aborts the multipart uploads of the object `url` still pending
    /// but those in `before` (the key's uploads pending before a commit
    /// noted [`UploadNote::Creating`]): the upload of a commit killed
    /// before it heard its id. Returns how many it aborted.
    pub fn abort_new_uploads(&self, url: &str, before: &[String]) -> Result<usize> {
        let mut aborted = 0;
        for id in self.pending_uploads(url)?.iter().filter(|id| !before.contains(id)) {
            self.abort_upload(url, id)?;
            aborted += 1;
        }
        Ok(aborted)
    }

    /// Whether the object `url` exists.
    pub fn exists(&self, url: &str) -> Result<bool> {
        let object = self.object(url)?;
        match block_on(object.store.head(&object.key)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(object_error(url, e)),
        }
    }

    /// Writes `bytes` to the object `url` with one PUT.
    pub fn put(&self, url: &str, bytes: Vec<u8>) -> Result<()> {
        let object = self.object(url)?;
        let n = bytes.len() as u64;
        block_on(object.store.put(&object.key, bytes.into())).map_err(|e| object_error(url, e))?;
        self.requests.written(n);
        Ok(())
    }

    /// Writes the local file `from` to the object `url` so that the object
    /// appears whole or not at all, stamped with `stamp` if given: one PUT up to
    /// [`PART`] bytes, else a multipart upload of [`PART`]-byte parts,
    /// four in flight, completed at the end and aborted on any failure (no
    /// part is left behind). An upload that stays pending if the process
    /// dies (S3's) is told to `started` before it is created and again,
    /// with its id, before any part goes up,
    /// so that whoever finishes the work can abort it
    /// ([`Storage::abort_upload`]). With `create`, an existing object is
    /// never replaced: the PUT is conditional (`If-None-Match: *`); a
    /// multipart upload looks first.
    pub fn upload(
        &self,
        from: &std::path::Path,
        url: &str,
        create: bool,
        stamp: Option<&Stamp>,
        started: &mut dyn FnMut(UploadNote<'_>) -> std::io::Result<()>,
    ) -> Result<()> {
        use std::io::Read;
        let object = self.object(url)?;
        let size = std::fs::metadata(from).map_err(|e| Error::io(from, e))?.len();
        let mut file = std::fs::File::open(from).map_err(|e| Error::io(from, e))?;
        if size <= PART as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(|e| Error::io(from, e))?;
            let mode = if create { object_store::PutMode::Create } else { object_store::PutMode::Overwrite };
            let opts = object_store::PutOptions {
                mode,
                attributes: stamp.map(Stamp::attributes).unwrap_or_default(),
                ..Default::default()
            };
            block_on(object.store.put_opts(&object.key, bytes.into(), opts)).map_err(|e| object_error(url, e))?;
            self.requests.written(size);
            return Ok(());
        }
        if create && self.exists(url)? {
            return Err(object_error(
                url,
                object_store::Error::AlreadyExists { path: url.to_string(), source: "the output exists".into() },
            ));
        }
        let opts = object_store::PutMultipartOptions {
            attributes: stamp.map(Stamp::attributes).unwrap_or_default(),
            ..Default::default()
        };
        let (base, _) = split_url(url)?;
        if let Some(multipart) = self.stores(base, url)?.multipart {
            return self.upload_parts(&multipart, &object.key, file, from, url, opts, started);
        }
        // One task on the runtime: the writer spawns its parts there. The
        // file is read on this thread, which is not one of the runtime's.
        block_on(async {
            let upload = object.store.put_multipart_opts(&object.key, opts).await.map_err(|e| object_error(url, e))?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0; PART];
            loop {
                let read = read_full(&mut file, &mut buf).map_err(|e| Error::io(from, e));
                let sent = match read {
                    Ok(0) => break,
                    Ok(n) => writer.wait_for_capacity(4).await.map(|()| n).map_err(|e| object_error(url, e)),
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(n) => {
                        writer.write(&buf[..n]);
                        self.requests.written(n as u64);
                    }
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(e);
                    }
                }
            }
            writer.finish().await.map(drop).map_err(|e| object_error(url, e))
        })
    }

    /// A multipart upload driven part by part, told to `started` before it
    /// is created (with the key's uploads pending then) and with its id
    /// before the first part: four parts in flight, completed in order,
    /// aborted on any failure.
    #[allow(clippy::too_many_arguments)]
    fn upload_parts(
        &self,
        multipart: &Arc<dyn MultipartStore>,
        key: &Key,
        file: std::fs::File,
        from: &std::path::Path,
        url: &str,
        opts: object_store::PutMultipartOptions,
        started: &mut dyn FnMut(UploadNote<'_>) -> std::io::Result<()>,
    ) -> Result<()> {
        let before = self.pending_uploads(url)?;
        started(UploadNote::Creating { pending: &before }).map_err(|e| Error::io(from, e))?;
        let id = block_on(multipart.create_multipart_opts(key, opts)).map_err(|e| object_error(url, e))?;
        if let Err(e) = started(UploadNote::Created { id: &id }) {
            let _ = block_on(multipart.abort_multipart(key, &id));
            return Err(Error::io(from, e));
        }
        let sent = block_on(async {
            // Parts are read as `buffered` asks for them: at most four in
            // flight, completed in order.
            let parts = futures_util::stream::unfold((file, 0usize), |(mut file, i)| async move {
                let mut buf = vec![0; PART];
                match read_full(&mut file, &mut buf) {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok((i, buf)), (file, i + 1)))
                    }
                    Err(e) => Some((Err(e), (file, i + 1))),
                }
            });
            let ids: Vec<object_store::multipart::PartId> = parts
                .map(|part| async {
                    let (i, bytes) = part.map_err(|e| Error::io(from, e))?;
                    let n = bytes.len() as u64;
                    let id = multipart.put_part(key, &id, i, bytes.into()).await.map_err(|e| object_error(url, e))?;
                    self.requests.written(n);
                    Ok::<_, Error>(id)
                })
                .buffered(4)
                .try_collect()
                .await?;
            multipart.complete_multipart(key, &id, ids).await.map(drop).map_err(|e| object_error(url, e))
        });
        if sent.is_err() {
            let _ = block_on(multipart.abort_multipart(key, &id));
        }
        sent
    }
}

/// The `[storage]` key that names the shuffle's scratch prefix.
pub const SCRATCH: &str = "scratch";

/// A scratch prefix checked (an object store URL that can be written, with
/// a bucket) and ending in `/`.
fn scratch_prefix(url: &str) -> std::result::Result<String, String> {
    let bad =
        |why: &str| format!("`{SCRATCH}` must be an object storage URL (s3://, gs:// or az://BUCKET/PREFIX/): {why}");
    if !is_url(url) {
        return Err(bad(&format!("`{url}` is not a URL")));
    }
    // Objects go under the prefix: one there must be writable.
    let prefix = format!("{}/", url.trim_end_matches('/'));
    writable(&format!("{prefix}object")).map_err(|e| bad(&e))?;
    Ok(prefix)
}

/// The part size of multipart uploads (S3 takes 5 MiB and up).
pub const PART: usize = 8 << 20;

/// Reads into all of `buf`, short only at the end of `r`.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// An object store error as this crate's, naming the URL.
pub(crate) fn object_error(url: impl Into<PathBuf>, e: object_store::Error) -> Error {
    Error::io(url, io_error(e))
}

/// `text` with an S3 error document in it (`<Error><Code>NoSuchBucket</Code>
/// <Message>...</Message>...</Error>`, which object_store quotes whole)
/// told as `NoSuchBucket: ...`; other text as it is.
pub(crate) fn s3_message(text: &str) -> std::borrow::Cow<'_, str> {
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find(&format!("</{name}>"))?;
        Some(&text[start..end])
    };
    let (Some(start), Some(code)) = (text.find("<?xml").or_else(|| text.find("<Error>")), element("Code")) else {
        return text.into();
    };
    let end = text.rfind("</Error>").map_or(text.len(), |e| e + "</Error>".len());
    let told = match element("Message") {
        Some(message) if !message.is_empty() => format!("{code}: {message}"),
        _ => code.to_string(),
    };
    format!("{}{told}{}", &text[..start], &text[end..]).into()
}

/// An object store error as an I/O error of the same kind.
pub(crate) fn io_error(e: object_store::Error) -> std::io::Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => std::io::ErrorKind::AlreadyExists,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            std::io::ErrorKind::PermissionDenied
        }
        _ => std::io::ErrorKind::Other,
    };
    // The causes the store's message leaves out (a TLS certificate the
    // client refused, a connection refused), each said once.
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let clause = c.to_string();
        if !text.contains(&clause) {
            text = format!("{text}: {clause}");
        }
        cause = c.source();
    }
    let mut text = s3_message(&text).into_owned();
    if text.contains("invalid peer certificate") {
        text.push_str(" (a server whose certificate your own CA signed: SSL_CERT_FILE=ca.pem)");
    }
    std::io::Error::new(kind, text)
}

/// Runs `f` to completion on the shared I/O runtime, blocking this thread
/// (never call from inside the runtime).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("fanout-io")
                .enable_all()
                .build()
                .expect("an I/O runtime starts")
        })
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_documents_are_told_in_words() {
        let quoted = "Error performing PUT http://h/b/x - Server returned non-2xx status code: 404 Not Found: \
                      <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code>\
                      <Message>The specified bucket does not exist</Message><BucketName>b</BucketName></Error>";
        assert_eq!(
            s3_message(quoted),
            "Error performing PUT http://h/b/x - Server returned non-2xx status code: 404 Not Found: \
             NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(s3_message("<Error><Code>SlowDown</Code></Error> (retried)"), "SlowDown (retried)");
        assert_eq!(s3_message("connection refused"), "connection refused");
        // A `<` that is no error document stays.
        assert_eq!(s3_message("a <b> c"), "a <b> c");
    }
}
