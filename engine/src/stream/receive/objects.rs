//! Objects that appear under an object-storage prefix
//! (`input.stream.dir = "s3://bucket/prefix/"`): the prefix is listed every
//! second, and each object not taken before is downloaded whole into the
//! spool (in 8 MiB reads, never held in memory) and read from there, once.
//! Objects first seen in the same listing are taken in the order of their
//! keys; names starting with `.` are passed over, as a directory's are.
//! Each object is known by its URL: its receipt keeps it, so a resume does
//! not take it again (an object written again under the same key is not
//! read again).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout_datasets::store::Storage;
use fanout_datasets::{Compression, Error};
use serde_json::Value;

use super::{Fault, Message, Receiver};

/// How often the prefix is listed.
const LIST_EVERY: Duration = Duration::from_secs(1);

/// The most one read of an object asks for.
const PIECE: u64 = 8 << 20;

/// The objects under a prefix.
pub(crate) struct Objects {
    prefix: String,
    storage: Arc<Storage>,
    /// Where downloads are written, beside the spool's files.
    spool: PathBuf,
    /// Objects taken, or waiting to be: their URLs.
    known: HashSet<String>,
    /// Objects found and not taken yet, with their sizes.
    pending: VecDeque<(String, u64)>,
    listed: Option<Instant>,
    downloads: u64,
}

impl Objects {
    /// The objects under `prefix` (ending in `/`), downloaded into `spool`.
    pub(crate) fn new(prefix: &str, storage: Arc<Storage>, spool: PathBuf) -> Objects {
        Objects {
            prefix: prefix.to_string(),
            storage,
            spool,
            known: HashSet::new(),
            pending: VecDeque::new(),
            listed: None,
            downloads: 0,
        }
    }

    /// Lists the prefix: the objects not known yet wait to be taken.
    fn list(&mut self) -> Result<(), Fault> {
        self.listed = Some(Instant::now());
        for found in fanout_datasets::listing::list(std::slice::from_ref(&self.prefix), &self.storage) {
            let file = match found {
                Ok(f) => f,
                // An empty prefix is a stream with nothing yet.
                Err(Error::NoMatch { .. }) => return Ok(()),
                Err(e) => return Err(Fault::Transient(e.to_string())),
            };
            let url = file.path.to_string_lossy().into_owned();
            let name = url.rsplit('/').next().unwrap_or_default();
            if name.starts_with('.') || !self.known.insert(url.clone()) {
                continue;
            }
            if file.compression != Compression::None {
                return Err(Fault::Fatal(format!("{url}: a stream does not read compressed objects yet")));
            }
            self.pending.push_back((url, file.size));
        }
        Ok(())
    }

    /// Downloads `url` (`size` bytes) into a file of its own beside the
    /// spool's, fsync'ed.
    fn download(&mut self, url: &str, size: u64) -> Result<PathBuf, Fault> {
        self.downloads += 1;
        let temp = self.spool.join(format!(".object-{}.tmp", self.downloads));
        let io = |e: std::io::Error| Fault::Fatal(format!("{}: {e}", temp.display()));
        let mut out = std::fs::File::create(&temp).map_err(io)?;
        let mut at = 0;
        while at < size {
            let len = PIECE.min(size - at);
            let bytes = self.storage.read_range(url, at, len).map_err(|e| Fault::Transient(e.to_string()))?;
            out.write_all(&bytes).map_err(io)?;
            at += len;
        }
        out.sync_all().map_err(io)?;
        Ok(temp)
    }
}

impl Receiver for Objects {
    fn describe(&self) -> String {
        format!("objects under {}", self.prefix)
    }

    fn resume(&mut self, _: &BTreeMap<String, Value>, _: i64) -> Result<(), Fault> {
        // A bucket that is missing or refuses is said at once.
        self.list().map_err(|f| match f {
            Fault::Transient(why) | Fault::Fatal(why) => Fault::Fatal(why),
        })
    }

    fn seen(&mut self, ids: &HashSet<String>) {
        self.known.extend(ids.iter().cloned());
    }

    fn receive(&mut self, _: usize, wait: Duration) -> Result<Vec<Message>, Fault> {
        if self.pending.is_empty() && self.listed.is_none_or(|t| t.elapsed() >= LIST_EVERY) {
            self.list()?;
        }
        let Some((url, size)) = self.pending.front().cloned() else {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
            return Ok(Vec::new());
        };
        let file = self.download(&url, size)?;
        self.pending.pop_front();
        Ok(vec![Message {
            id: Some(url),
            ack: None,
            partition: None,
            body: Vec::new(),
            sent_ms: None,
            file: Some(file),
        }])
    }

    fn cursor(&self, _: &str) -> Option<Value> {
        None
    }

    fn acknowledge(&mut self, _: &[String]) -> Result<(), Fault> {
        Ok(())
    }

    fn redelivery(&self) -> Duration {
        // An object stays listed: its id is kept for as long as the run.
        Duration::from_secs(100 * 365 * 86_400)
    }
}
