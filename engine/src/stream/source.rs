//! Where a stream's records come from. A directory source reads each file
//! renamed into its directory once, in order of arrival, through the same
//! readers as a batch job's input; names starting with `.` are not yet
//! complete and are passed over. Arrivals are told by inotify, in the
//! order they came (`watch.rs`); of the files found by a listing (those
//! there at the start, or all where inotify cannot watch), the one
//! modified first (to the millisecond, then by name) is taken first.
//! Each file is noted in the run directory's `arrivals` log (fsync'ed)
//! before it is read, with the time it was taken — its records' arrival
//! time — so that a replay takes the files in the same order and gives
//! them the same arrival, whatever their modification times say. Its
//! position — the files read, and how far into the one being read — is
//! what a checkpoint keeps, so a resume reads on from there. Every other
//! source is spooled into such a directory in the run directory first
//! (`spool.rs`), so that it too can be read again after a crash.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use fanout_datasets::{Batches, Dataset, DatasetOptions, Split};
use serde::{Deserialize, Serialize};

use super::watch::Watch;
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
    /// The source partition the file's records are from (a Kinesis
    /// shard's), when its name says.
    pub(crate) partition: Option<String>,
    /// How many records of the batch.
    pub(crate) rows: usize,
    /// The file's records read once these are.
    pub(crate) consumed: u64,
    /// Whether that was the file's last record.
    pub(crate) finished: bool,
    /// Whether the file is the end marker of `partition`: the source has
    /// read that partition to its end (a Kinesis shard closed by a
    /// reshard), and it holds the watermark no more.
    pub(crate) ends: bool,
    /// What a spooled file's records came from, and where it is spooled:
    /// messages name them so (none: a file of the source's directory).
    pub(crate) spooled: Option<Arc<(String, PathBuf)>>,
}

impl Segment {
    /// The file, for messages: `a.jsonl`, or `standard input (rd/stdin/000000000001.spool)`.
    pub(crate) fn shown(&self) -> String {
        match &self.spooled {
            Some(from) => format!("{} ({})", from.0, from.1.join(&self.file).display()),
            None => self.file.clone(),
        }
    }
}

/// The file being read.
struct Open {
    name: String,
    arrival_ms: i64,
    partition: Option<String>,
    spooled: Option<Arc<(String, PathBuf)>>,
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

/// What a directory source reads next.
enum Next {
    /// A file of records.
    File(Box<Open>),
    /// A partition's end marker.
    End(Segment),
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
    /// What a spool's records came from, and the spool (none: the
    /// source's own directory).
    spooled: Option<Arc<(String, PathBuf)>>,
    /// How it learns of arrivals.
    watch: Watch,
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
        let logged = (taken_before(run_dir).into_iter())
            .filter(|(name, _)| !position.done.contains(name))
            // A file gone (a spooled one removed once checkpointed, or one
            // deleted before it was read) is not read again; the one being
            // read at the checkpoint must be there.
            .filter(|(name, _)| position.current.as_ref().is_some_and(|(c, _)| c == name) || dir.join(name).exists())
            .collect();
        let watch = Watch::new(&dir);
        DirSource { dir, opts, position, open: None, log, logged, taken: Arc::default(), spooled: None, watch }
    }

    /// `e`, for a spooled file, naming what its records came from first:
    /// `objects under s3://b/p/ (s3://b/p/a.jsonl), spooled as rd/received/...: line 2 ...`.
    fn told(&self, e: EngineError, name: &str) -> EngineError {
        let Some(from) = &self.spooled else { return e };
        let origin = self.origin(name).map(|o| format!(" ({o})")).unwrap_or_default();
        EngineError::Stream(format!("{}{origin}, spooled as {e}", from.0))
    }

    /// What spooled file `name` was received as, where its receipt names
    /// one thing alone (an object's URL).
    fn origin(&self, name: &str) -> Option<String> {
        let number = name.split('.').next()?;
        let receipt = self.log.parent()?.join("receipts").join(format!("{number}.json"));
        let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(receipt).ok()?).ok()?;
        match receipt["ids"].as_array()?.as_slice() {
            [one] => one.as_str().map(str::to_string),
            _ => None,
        }
    }

    /// The same, a spool of records from `what` (`standard input`): its
    /// files are named so in messages.
    pub(crate) fn spooled_from(mut self, what: String) -> DirSource {
        self.spooled = Some(Arc::new((what, self.dir.clone())));
        self
    }

    /// Waits up to `d` for a file to arrive.
    pub(crate) fn wait(&self, d: std::time::Duration) {
        self.watch.wait(d);
    }

    /// Why arrivals are found by listing the directory at every poll
    /// (inotify could not watch it), when they are.
    pub(crate) fn listed(&self) -> Option<&str> {
        self.watch.fallback()
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
            match self.open_next()? {
                None => return Ok(None),
                Some(Next::File(open)) => self.open = Some(*open),
                Some(Next::End(segment)) => {
                    self.position.advance(&segment);
                    let schema = self.opts.schema.clone().unwrap_or_else(fanout_datasets::text::schema);
                    return Ok(Some(Piece { batch: RecordBatch::new_empty(schema), segment }));
                }
            }
        }
        let open = self.open.as_mut().expect("opened above");
        let (read, name) = (read(open, max), open.name.clone());
        let read = read.map_err(|e| self.told(e, &name))?;
        let open = self.open.as_mut().expect("opened above");
        let piece = match read {
            Some(piece) => piece,
            // The file is read (its records all handed out or passed
            // over): an empty piece says so.
            None => {
                let segment = Segment {
                    file: open.name.clone(),
                    arrival_ms: open.arrival_ms,
                    partition: open.partition.clone(),
                    rows: 0,
                    consumed: open.consumed,
                    finished: true,
                    ends: false,
                    spooled: self.spooled.clone(),
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
    fn open_next(&mut self) -> Result<Option<Next>, EngineError> {
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
                None => match self.watch.next(&self.dir, &|n: &str| self.position.done.contains(n))? {
                    Some(name) => {
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
            let dataset = Dataset::open(vec![path.display().to_string()], self.opts.clone())
                .map_err(|e| self.told(EngineError::Input(e), &name))?;
            let splits = dataset.splits().collect::<Result<VecDeque<_>, _>>();
            let splits = splits.map_err(|e| self.told(EngineError::Input(e), &name))?;
            (Some(dataset), splits)
        };
        let dataset = match dataset {
            Some(d) => d,
            None if let Some(partition) = end_of(&name) => {
                let partition = Some(partition.to_string());
                let spooled = self.spooled.clone();
                let segment = Segment {
                    file: name,
                    arrival_ms,
                    partition,
                    rows: 0,
                    consumed: 0,
                    finished: true,
                    ends: true,
                    spooled,
                };
                return Ok(Some(Next::End(segment)));
            }
            None => {
                // An empty file holds no records: it is read at once.
                self.position.current = None;
                self.position.done.insert(name.clone());
                return self.open_next();
            }
        };
        let partition = partition_of(&name).map(str::to_string);
        let spooled = self.spooled.clone();
        let open = Open {
            name,
            arrival_ms,
            partition,
            spooled,
            dataset,
            splits,
            batches: None,
            consumed: 0,
            skip,
            pending: None,
        };
        Ok(Some(Next::File(Box::new(open))))
    }
}

/// The files the arrivals log of `run_dir` says were taken, in order,
/// with their arrival (epoch ms).
pub(crate) fn taken_before(run_dir: &Path) -> Vec<(String, i64)> {
    let text = std::fs::read_to_string(run_dir.join(ARRIVALS)).unwrap_or_default();
    // A last line cut short by a crash was never acted on.
    let whole = text.rsplit_once('\n').map_or("", |(w, _)| w);
    (whole.lines())
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(at, name)| Some((name.to_string(), at.parse().ok()?)))
        .collect()
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
                partition: open.partition.clone(),
                rows: n,
                consumed: open.consumed,
                finished,
                ends: false,
                spooled: open.spooled.clone(),
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

/// The name of spooled file `number`, of records from `partition` (a
/// Kinesis shard) if they are all from one.
pub(crate) fn spooled_name(number: u64, partition: Option<&str>) -> String {
    match partition {
        Some(p) => format!("{number:012}.{p}.spool"),
        None => format!("{number:012}.spool"),
    }
}

/// The partition a spooled file's name says its records are from.
pub(crate) fn partition_of(name: &str) -> Option<&str> {
    let (number, rest) = name.split_once('.')?;
    let partition = rest.strip_suffix(".spool")?;
    (number.len() == 12 && number.bytes().all(|b| b.is_ascii_digit()) && !partition.is_empty()).then_some(partition)
}

/// The name of the end marker of `partition`, numbered `number`: an
/// empty file spooled after the partition's last records.
pub(crate) fn end_name(number: u64, partition: &str) -> String {
    format!("{number:012}.{partition}.end")
}

/// The partition an end marker's name says has ended.
pub(crate) fn end_of(name: &str) -> Option<&str> {
    let (number, rest) = name.split_once('.')?;
    let partition = rest.strip_suffix(".end")?;
    (number.len() == 12 && number.bytes().all(|b| b.is_ascii_digit()) && !partition.is_empty()).then_some(partition)
}

/// `id` as a partition in a file name: only letters, digits, `-` and `_`.
pub(crate) fn partition_name(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The lane partition of records of Kinesis shard `shard` whose
/// partition key falls in lane `lane` (of `parallelization`): a lane's
/// batches run one at a time, so a key's invocations keep their order.
pub(crate) fn lane_name(shard: &str, lane: usize) -> String {
    format!("{shard}_lane{lane}")
}

/// The partition of the watermark that partition `p` is part of: a lane's
/// shard, else `p`.
pub(crate) fn shard_of(p: &str) -> &str {
    match p.rsplit_once("_lane") {
        Some((shard, lane)) if !lane.is_empty() && lane.bytes().all(|b| b.is_ascii_digit()) => shard,
        _ => p,
    }
}

/// `t` as epoch milliseconds.
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_is_part_of_its_shard() {
        let lane = lane_name("shardId-000000000001", 3);
        assert_eq!(partition_of(&spooled_name(7, Some(&partition_name(&lane)))), Some(lane.as_str()));
        assert_eq!(shard_of(&lane), "shardId-000000000001");
        assert_eq!(shard_of("shardId-000000000001"), "shardId-000000000001");
        assert_eq!(shard_of("my_lane"), "my_lane");
    }

    #[test]
    fn a_spooled_file_names_its_partition() {
        assert_eq!(spooled_name(12, None), "000000000012.spool");
        let name = spooled_name(12, Some("shardId-000000000001"));
        assert_eq!(name, "000000000012.shardId-000000000001.spool");
        assert_eq!(partition_of(&name), Some("shardId-000000000001"));
        assert_eq!(partition_of("000000000012.spool"), None);
        assert_eq!(partition_of("clicks.2026.spool"), None);
        assert_eq!(partition_name("a/b c"), "a_b_c");
        let end = end_name(13, "shardId-000000000001");
        assert_eq!(end_of(&end), Some("shardId-000000000001"));
        assert_eq!(end_of(&name), None);
        assert_eq!(partition_of(&end), None);
    }

    #[test]
    fn an_end_marker_is_read_after_its_partitions_records() {
        let run = tempfile::tempdir().unwrap();
        let dir = run.path().join("received");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(spooled_name(1, Some("s0"))), "a\nb\n").unwrap();
        std::fs::write(dir.join(end_name(2, "s0")), "").unwrap();
        let opts = DatasetOptions { format: Some(fanout_datasets::Format::Text), ..DatasetOptions::default() };
        let mut source = DirSource::new(dir, opts, Position::default(), run.path());
        let mut pieces = Vec::new();
        while let Some(piece) = source.next(10).unwrap() {
            pieces.push(piece.segment);
        }
        let shape: Vec<_> = pieces.iter().map(|s| (s.partition.as_deref(), s.rows, s.finished, s.ends)).collect();
        assert_eq!(shape, [(Some("s0"), 2, true, false), (Some("s0"), 0, true, true)]);
        assert_eq!(source.position.done.len(), 2);
    }
}
