//! Sources that are not a directory — standard input, an HTTP ingest
//! endpoint, and the services of `receive/` — are spooled into a
//! directory of the run directory, one file at a time, each written whole
//! and fsync'ed under a dot name before it is renamed into place; a
//! [`DirSource`](super::source::DirSource) reads them from there, so that
//! what was spooled is read again after a crash, and a file is removed
//! once a checkpoint is past it.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::EngineError;

/// Standard input, spooled into files of a directory that a
/// [`DirSource`] reads: a file is renamed into place once it holds
/// `batch_size` lines or has waited `window` since its first, and at the
/// end of the input. The spool is in the run directory, so a resume reads
/// what a killed run had spooled and not processed.
pub(crate) struct Spool {
    /// What the spooling tells the source thread.
    pub(crate) state: Arc<SpoolState>,
    /// Tells an HTTP endpoint or a receiver to stop; its thread, joined on
    /// drop.
    server: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// How the spooling goes, as the source thread sees it.
#[derive(Debug, Default)]
pub(crate) struct SpoolState {
    /// Set once the input has ended and its last file is in place (only
    /// standard input ends).
    pub(crate) ended: AtomicBool,
    /// Why the spooling stopped, when it failed (a service that refuses
    /// to be read): the stream stops with it.
    pub(crate) failed: Mutex<Option<String>>,
    /// The partitions the source reads now (a Kinesis stream's open
    /// shards, and closed ones not read to their end): the watermark waits
    /// for each.
    pub(crate) partitions: Mutex<std::collections::BTreeSet<String>>,
    /// What the receiver has asked of its service so far (this process's).
    pub(crate) usage: Mutex<super::usage::Usage>,
}

impl SpoolState {
    /// Says the spooling failed, and why.
    pub(crate) fn fail(&self, why: String) {
        self.failed.lock().expect("not poisoned").get_or_insert(why);
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.server.take() {
            stop.store(true, Relaxed);
            let _ = thread.join();
        }
    }
}

/// How many spooled files may wait unread before an HTTP endpoint answers
/// 429: the stream is that far behind.
pub(crate) const MAX_UNREAD: u64 = 64;

/// The largest body an HTTP endpoint takes in one request.
const MAX_BODY: u64 = 16 << 20;

/// The number the next spooled file of `dir` gets: on from those there,
/// those the run in `run_dir` has taken (and removed since), and those
/// it has receipts for — a number is never given twice.
pub(crate) fn next_number(dir: &Path, run_dir: &Path) -> Result<u64, EngineError> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let number = |name: &str| name.trim_start_matches('.').split('.').next()?.parse::<u64>().ok();
    let listed = |d: &Path| -> Result<Vec<u64>, EngineError> {
        match std::fs::read_dir(d) {
            Ok(entries) => Ok(entries.filter_map(|e| number(e.ok()?.file_name().to_str()?)).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(EngineError::io(d, e)),
        }
    };
    let taken = super::source::taken_before(run_dir).into_iter().filter_map(|(name, _)| number(&name));
    let most = (listed(dir)?.into_iter()).chain(listed(&run_dir.join("receipts"))?).chain(taken).max();
    Ok(most.map_or(1, |n| n + 1))
}

impl Spool {
    /// The spooling done by `thread`, which tells how it goes in `state`
    /// and is told to stop by `stop`.
    pub(crate) fn serving(state: Arc<SpoolState>, stop: Arc<AtomicBool>, thread: std::thread::JoinHandle<()>) -> Spool {
        Spool { state, server: Some((stop, thread)) }
    }

    /// Starts spooling standard input into `dir` (made if missing; files
    /// are numbered on from those already there).
    pub(crate) fn start(dir: &Path, run_dir: &Path, batch_size: usize, window: Duration) -> Result<Spool, EngineError> {
        let next = next_number(dir, run_dir)?;
        let state = Arc::new(SpoolState::default());
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(batch_size.max(1) * 4);
        std::thread::Builder::new()
            .name("fanout-stdin".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                loop {
                    let mut line = Vec::new();
                    match stdin.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if tx.send(line).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
            .map_err(|e| EngineError::io(dir, e))?;
        let (into, done) = (dir.to_path_buf(), state.clone());
        let window = window.max(Duration::from_millis(20));
        std::thread::Builder::new()
            .name("fanout-spool".into())
            .spawn(move || {
                let mut number = next;
                let mut lines: Vec<Vec<u8>> = Vec::new();
                let mut first: Option<Instant> = None;
                loop {
                    let wait = first.map_or(Duration::from_secs(3600), |f| window.saturating_sub(f.elapsed()));
                    let (full, end) = match rx.recv_timeout(wait) {
                        Ok(line) => {
                            first.get_or_insert_with(Instant::now);
                            lines.push(line);
                            (lines.len() >= batch_size, false)
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => (true, false),
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => (true, true),
                    };
                    if full && !lines.is_empty() {
                        if spool_file(&into, number, &lines).is_err() {
                            // Nowhere to put the input: it ends here, and
                            // the stream with what it has.
                            break;
                        }
                        number += 1;
                        lines.clear();
                        first = None;
                    }
                    if end {
                        break;
                    }
                }
                done.ended.store(true, Release);
            })
            .map_err(|e| EngineError::io(dir, e))?;
        Ok(Spool { state, server: None })
    }

    /// Starts an HTTP ingest endpoint on `addr` (`POST /streams/NAME`)
    /// that spools each body it accepts into `dir` as one file, fsync'ed
    /// before it answers 200; a body that is not records of `format` gets
    /// 400, and while `MAX_UNREAD` files wait unread (`taken` counts those
    /// read), 429 with `Retry-After`.
    pub(crate) fn http(
        dir: &Path,
        run_dir: &Path,
        addr: &str,
        name: &str,
        format: fanout_datasets::Format,
        taken: Arc<AtomicU64>,
    ) -> Result<Spool, EngineError> {
        use fanout_workers::ingest::{Ingest, Taken};
        let mut number = next_number(dir, run_dir)?;
        let first = number;
        let ingest = Ingest::bind(addr, name, MAX_BODY)
            .map_err(|e| EngineError::Stream(format!("input.stream.http: cannot listen on {addr}: {e}")))?;
        let (stop, into) = (Arc::new(AtomicBool::new(false)), dir.to_path_buf());
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fanout-ingest".into())
            .spawn(move || {
                let _ = ingest.serve(&stopping, |body| {
                    if number - first >= taken.load(Relaxed) + MAX_UNREAD {
                        return Taken::Busy(Duration::from_secs(1));
                    }
                    let lines = match records(body, format) {
                        Ok(lines) => lines,
                        Err(why) => return Taken::Refused(why),
                    };
                    if lines.is_empty() {
                        return Taken::Accepted(0);
                    }
                    match spool_file(&into, number, &lines) {
                        Ok(()) => {
                            number += 1;
                            Taken::Accepted(lines.len() as u64)
                        }
                        Err(e) => Taken::Failed(format!("storing the records: {e}")),
                    }
                });
            })
            .map_err(|e| EngineError::io(dir, e))?;
        Ok(Spool::serving(Arc::default(), stop, thread))
    }
}

/// The records of an HTTP body: its lines (a last one without a newline
/// included), each a JSON object for jsonl; why not, naming the line.
fn records(body: &[u8], format: fanout_datasets::Format) -> Result<Vec<Vec<u8>>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let mut lines = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        if format == fanout_datasets::Format::Jsonl {
            if bare.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(bare) {
                Ok(serde_json::Value::Object(_)) => {}
                Ok(_) => return Err(format!("line {}: a record is a JSON object", i + 1)),
                Err(e) => return Err(format!("line {}: not JSON: {e}", i + 1)),
            }
        }
        lines.push(bare.as_bytes().to_vec());
    }
    Ok(lines)
}

/// Writes `lines` into `dir` as file `number`, whole or not at all.
pub(crate) fn spool_file(dir: &Path, number: u64, lines: &[Vec<u8>]) -> std::io::Result<()> {
    spool_named(dir, &super::source::spooled_name(number, None), lines)
}

/// Writes `lines` into `dir` as file `name`, whole or not at all.
pub(crate) fn spool_named(dir: &Path, name: &str, lines: &[Vec<u8>]) -> std::io::Result<()> {
    let temp = dir.join(format!(".{name}"));
    // One write of the whole file: a line at a time was a system call per
    // record.
    let mut whole = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        whole.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            whole.push(b'\n');
        }
    }
    let mut f = std::fs::File::create(&temp)?;
    f.write_all(&whole)?;
    f.sync_all()?;
    std::fs::rename(&temp, dir.join(name))
}
