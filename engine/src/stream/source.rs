//! Where a stream's records come from. A directory source reads each file
//! renamed into its directory once, in order of arrival, through the same
//! readers as a batch job's input; names starting with `.` are not yet
//! complete and are passed over. Of the files found at one listing, the
//! one modified first (to the millisecond, then by name) is taken first.
//! Each file is noted in the run directory's `arrivals` log (fsync'ed)
//! before it is read, with the time it was taken — its records' arrival
//! time — so that a replay takes the files in the same order and gives
//! them the same arrival, whatever their modification times say. Its
//! position — the files read, and how far into the one being read — is
//! what a checkpoint keeps, so a resume reads on from there. Standard
//! input is spooled into such a directory in the run directory first, so
//! that it too can be read again after a crash.

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use fanout_datasets::{Batches, Dataset, DatasetOptions, Split};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// How far a directory source has read: what a checkpoint keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    /// Files read to the end, by name.
    pub(crate) done: BTreeSet<String>,
    /// The file being read and the records of it read so far.
    pub(crate) current: Option<(String, u64)>,
}

impl Position {
    /// The position after `segment` was read.
    pub(crate) fn advance(&mut self, segment: &Segment) {
        if segment.finished {
            self.done.insert(segment.file.clone());
            self.current = None;
        } else {
            self.current = Some((segment.file.clone(), segment.consumed));
        }
    }
}

/// Records read from one file.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    /// The records.
    pub(crate) batch: RecordBatch,
    /// Where they came from, and where that leaves the source.
    pub(crate) segment: Segment,
}

/// A run of a batch's records from one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The file's name in the directory.
    pub(crate) file: String,
    /// When the file was taken, epoch ms (from the arrivals log): the
    /// arrival time of each of its records.
    pub(crate) arrival_ms: i64,
    /// How many records of the batch.
    pub(crate) rows: usize,
    /// The file's records read once these are.
    pub(crate) consumed: u64,
    /// Whether that was the file's last record.
    pub(crate) finished: bool,
}

/// The file being read.
struct Open {
    name: String,
    arrival_ms: i64,
    dataset: Dataset,
    splits: VecDeque<Split>,
    batches: Option<Batches>,
    /// Records read (handed out or skipped).
    consumed: u64,
    /// Records still to pass over (read before a resume).
    skip: u64,
    /// Records read from the file and not yet handed out.
    pending: Option<RecordBatch>,
}

/// Files renamed into a directory, each read once.
pub(crate) struct DirSource {
    dir: PathBuf,
    opts: DatasetOptions,
    position: Position,
    open: Option<Open>,
    /// The arrivals log: the files taken, in order, with their arrival.
    log: PathBuf,
    /// Files the log holds that are not read yet (a replay's), in order.
    logged: VecDeque<(String, i64)>,
    /// Files taken so far by this process (what an HTTP ingest compares
    /// with what it spooled).
    taken: Arc<AtomicU64>,
}

/// The file of a run directory that notes each file a directory source
/// takes, in order: `ARRIVAL_MS NAME` lines.
const ARRIVALS: &str = "arrivals";

impl DirSource {
    /// Reads `dir` from `position` (an empty one: from the start), with
    /// the job's format, schema and reading options; the files the run in
    /// `run_dir` took already are taken again in the order it did.
    pub(crate) fn new(dir: PathBuf, opts: DatasetOptions, position: Position, run_dir: &Path) -> DirSource {
        let log = run_dir.join(ARRIVALS);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // A last line cut short by a crash was never acted on.
        let whole = text.rsplit_once('\n').map_or("", |(w, _)| w);
        let logged = (whole.lines())
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(at, name)| Some((name.to_string(), at.parse().ok()?)))
            .filter(|(name, _)| !position.done.contains(name))
            // A file gone (a spooled one removed once checkpointed, or one
            // deleted before it was read) is not read again; the one being
            // read at the checkpoint must be there.
            .filter(|(name, _)| position.current.as_ref().is_some_and(|(c, _)| c == name) || dir.join(name).exists())
            .collect();
        DirSource { dir, opts, position, open: None, log, logged, taken: Arc::default() }
    }

    /// The count of files taken, as it grows.
    pub(crate) fn taken(&self) -> Arc<AtomicU64> {
        self.taken.clone()
    }

    /// Notes in the log that `name` is taken, arriving at `at`.
    fn note(&self, name: &str, at: i64) -> Result<(), EngineError> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| EngineError::io(&self.log, e))?;
        writeln!(f, "{at} {name}").and_then(|()| f.sync_data()).map_err(|e| EngineError::io(&self.log, e))
    }

    /// Up to `max` records from the file being read, or from the next file
    /// to have arrived; `None` when every file that has arrived is read.
    pub(crate) fn next(&mut self, max: usize) -> Result<Option<Piece>, EngineError> {
        if self.open.is_none() {
            let Some(open) = self.open_next()? else { return Ok(None) };
            self.open = Some(open);
        }
        let open = self.open.as_mut().expect("opened above");
        let piece = match read(open, max)? {
            Some(piece) => piece,
            // The file is read (its records all handed out or passed
            // over): an empty piece says so.
            None => {
                let segment = Segment {
                    file: open.name.clone(),
                    arrival_ms: open.arrival_ms,
                    rows: 0,
                    consumed: open.consumed,
                    finished: true,
                };
                let schema = self.opts.schema.clone().unwrap_or_else(fanout_datasets::text::schema);
                Piece { batch: RecordBatch::new_empty(schema), segment }
            }
        };
        self.position.advance(&piece.segment);
        if piece.segment.finished {
            self.open = None;
        }
        Ok(Some(piece))
    }

    /// Opens the file to read next: the one a resume was reading, else the
    /// first to have arrived that is not read.
    fn open_next(&mut self) -> Result<Option<Open>, EngineError> {
        // The file being read at the checkpoint, then those the log says
        // were taken after it, then the first of those that have arrived.
        let (name, skip, arrival_ms) = match self.position.current.clone() {
            Some((name, consumed)) => {
                let at = self.logged.iter().position(|(n, _)| *n == name);
                let arrival =
                    at.and_then(|i| self.logged.remove(i)).map_or_else(|| millis(SystemTime::now()), |(_, a)| a);
                (name, consumed, arrival)
            }
            None => match self.logged.pop_front() {
                Some((name, arrival)) => (name, 0, arrival),
                None => match self.arrivals()?.into_iter().next() {
                    Some((_, name)) => {
                        let arrival = millis(SystemTime::now());
                        self.note(&name, arrival)?;
                        (name, 0, arrival)
                    }
                    None => return Ok(None),
                },
            },
        };
        self.taken.fetch_add(1, Relaxed);
        let path = self.dir.join(&name);
        let meta = std::fs::metadata(&path).map_err(|e| EngineError::io(&path, e))?;
        let (dataset, splits) = if meta.len() == 0 {
            (None, VecDeque::new())
        } else {
            let dataset =
                Dataset::open(vec![path.display().to_string()], self.opts.clone()).map_err(EngineError::Input)?;
            let splits = dataset.splits().collect::<Result<VecDeque<_>, _>>().map_err(EngineError::Input)?;
            (Some(dataset), splits)
        };
        let dataset = match dataset {
            Some(d) => d,
            None => {
                // An empty file holds no records: it is read at once.
                self.position.current = None;
                self.position.done.insert(name.clone());
                return self.open_next();
            }
        };
        Ok(Some(Open { name, arrival_ms, dataset, splits, batches: None, consumed: 0, skip, pending: None }))
    }

    /// The files that have arrived and are not read, in order of arrival.
    fn arrivals(&self) -> Result<Vec<(i64, String)>, EngineError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| EngineError::io(&self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| EngineError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || self.position.done.contains(&name) {
                continue;
            }
            // A file gone between the listing and now is passed over.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                found.push((millis(meta.modified().unwrap_or(UNIX_EPOCH)), name));
            }
        }
        found.sort();
        Ok(found)
    }
}

/// Up to `max` records of `open`, or `None` once it is read.
fn read(open: &mut Open, max: usize) -> Result<Option<Piece>, EngineError> {
    loop {
        if let Some(batch) = open.pending.take() {
            let n = batch.num_rows().min(max);
            let (out, rest) = (batch.slice(0, n), batch.slice(n, batch.num_rows() - n));
            if rest.num_rows() > 0 {
                open.pending = Some(rest);
            }
            open.consumed += n as u64;
            let finished = open.pending.is_none() && !more(open)?;
            let segment = Segment {
                file: open.name.clone(),
                arrival_ms: open.arrival_ms,
                rows: n,
                consumed: open.consumed,
                finished,
            };
            return Ok(Some(Piece { batch: out, segment }));
        }
        let Some(mut batch) = next_batch(open)? else { return Ok(None) };
        if open.skip > 0 {
            let n = (open.skip as usize).min(batch.num_rows());
            open.skip -= n as u64;
            open.consumed += n as u64;
            batch = batch.slice(n, batch.num_rows() - n);
        }
        if batch.num_rows() > 0 {
            open.pending = Some(batch);
        }
    }
}

/// Whether `open` has records left: the next batch is read ahead into
/// `pending`, so that the last piece of a file says it is the last.
fn more(open: &mut Open) -> Result<bool, EngineError> {
    while let Some(batch) = next_batch(open)? {
        if batch.num_rows() > 0 {
            open.pending = Some(batch);
            return Ok(true);
        }
    }
    Ok(false)
}

/// The file's next batch as read, or `None` at its end.
fn next_batch(open: &mut Open) -> Result<Option<RecordBatch>, EngineError> {
    loop {
        if let Some(batches) = open.batches.as_mut()
            && let Some(batch) = batches.next()
        {
            return batch.map(Some).map_err(EngineError::Input);
        }
        let Some(split) = open.splits.pop_front() else { return Ok(None) };
        open.batches = Some(open.dataset.read(&split).map_err(EngineError::Input)?);
    }
}

/// `t` as epoch milliseconds.
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Standard input, spooled into files of a directory that a
/// [`DirSource`] reads: a file is renamed into place once it holds
/// `batch_size` lines or has waited `window` since its first, and at the
/// end of the input. The spool is in the run directory, so a resume reads
/// what a killed run had spooled and not processed.
pub(crate) struct Spool {
    /// Set once standard input has ended and its last file is in place
    /// (an HTTP endpoint's input never ends).
    pub(crate) ended: Arc<AtomicBool>,
    /// Tells an HTTP endpoint to stop; its thread, joined on drop.
    server: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
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
const MAX_UNREAD: u64 = 64;

/// The largest body an HTTP endpoint takes in one request.
const MAX_BODY: u64 = 16 << 20;

/// The number the next spooled file of `dir` gets: on from those there.
fn next_number(dir: &Path) -> Result<u64, EngineError> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    Ok(std::fs::read_dir(dir)
        .map_err(|e| EngineError::io(dir, e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.split('.').next()?.parse::<u64>().ok())
        .max()
        .map_or(1, |n| n + 1))
}

impl Spool {
    /// Starts spooling standard input into `dir` (made if missing; files
    /// are numbered on from those already there).
    pub(crate) fn start(dir: &Path, batch_size: usize, window: Duration) -> Result<Spool, EngineError> {
        let next = next_number(dir)?;
        let ended = Arc::new(AtomicBool::new(false));
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
        let (into, done) = (dir.to_path_buf(), ended.clone());
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
                done.store(true, Release);
            })
            .map_err(|e| EngineError::io(dir, e))?;
        Ok(Spool { ended, server: None })
    }

    /// Starts an HTTP ingest endpoint on `addr` (`POST /streams/NAME`)
    /// that spools each body it accepts into `dir` as one file, fsync'ed
    /// before it answers 200; a body that is not records of `format` gets
    /// 400, and while `MAX_UNREAD` files wait unread (`taken` counts those
    /// read), 429 with `Retry-After`.
    pub(crate) fn http(
        dir: &Path,
        addr: &str,
        name: &str,
        format: fanout_datasets::Format,
        taken: Arc<AtomicU64>,
    ) -> Result<Spool, EngineError> {
        use fanout_workers::ingest::{Ingest, Taken};
        let mut number = next_number(dir)?;
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
        Ok(Spool { ended: Arc::new(AtomicBool::new(false)), server: Some((stop, thread)) })
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
fn spool_file(dir: &Path, number: u64, lines: &[Vec<u8>]) -> std::io::Result<()> {
    let name = format!("{number:012}.spool");
    let temp = dir.join(format!(".{name}"));
    let mut f = std::fs::File::create(&temp)?;
    for line in lines {
        f.write_all(line)?;
        if !line.ends_with(b"\n") {
            f.write_all(b"\n")?;
        }
    }
    f.sync_all()?;
    std::fs::rename(&temp, dir.join(name))
}
