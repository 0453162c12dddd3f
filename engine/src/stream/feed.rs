//! The source thread of a stream: batches cut from the source, each sent
//! once full or once its window has passed, numbered, until `--until` is
//! met, the input ends or the run is stopped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use arrow_array::RecordBatch;
use fanout_jobs::StreamPlan;

use super::source::{DirSource, Piece, Segment};
use super::spool::SpoolState;
use crate::error::EngineError;
use crate::options::Until;

/// A batch on its way to the workers.
pub(super) struct Work {
    pub(super) seq: u64,
    pub(super) batch: RecordBatch,
    pub(super) segments: Vec<Segment>,
    pub(super) queued: Instant,
    /// Its place among its partition's batches in flight, given back when
    /// the worker is done with it.
    pub(super) _slot: Option<Slot>,
}

/// At most `per` batches of a source partition in flight
/// (`parallelization`): each partition's channel holds a token for each.
pub(super) struct Gates {
    per: usize,
    open: HashMap<String, (Sender<()>, Receiver<()>)>,
}

/// A batch's place among its partition's batches in flight.
pub(super) struct Slot(Receiver<()>);

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}

impl Gates {
    /// At most `per` batches of each partition in flight.
    pub(super) fn new(per: usize) -> Gates {
        Gates { per: per.max(1), open: HashMap::new() }
    }

    /// A place for a batch of `partition`, once one is free; none when the
    /// stream stops first.
    fn enter(&mut self, partition: &str, stop: &crate::stop::Stop) -> Option<Slot> {
        let per = self.per;
        let (tx, rx) = self.open.entry(partition.to_string()).or_insert_with(|| crossbeam_channel::bounded(per));
        loop {
            match tx.send_timeout((), Duration::from_millis(20)) {
                Ok(()) => return Some(Slot(rx.clone())),
                Err(_) if stop.is_stopped() => return None,
                Err(_) => {}
            }
        }
    }
}

/// When the source last found nothing to read with no record held: from
/// then on, every record it takes arrives later. With the number of the
/// batch it would send next: once the batches before it are applied, a
/// window of arrival time that ended before then can close, though no
/// record comes to move the watermark.
#[derive(Default)]
pub(super) struct Quiet(std::sync::Mutex<Option<(u64, i64)>>);

impl Quiet {
    fn set(&self, seq: u64) {
        *self.0.lock().expect("not poisoned") = Some((seq, super::source::millis(std::time::SystemTime::now())));
    }

    /// The batch it would have sent next, and when (epoch ms).
    pub(super) fn get(&self) -> Option<(u64, i64)> {
        *self.0.lock().expect("not poisoned")
    }
}

/// Why the source stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Until(&'static str),
    InputEnded,
    Signal,
}

/// Where the source thread starts: the records and batches counted
/// before (a resume's, from its checkpoint).
#[derive(Debug, Clone, Copy)]
pub(super) struct Start {
    pub(super) records: u64,
    pub(super) batch: u64,
}

/// The source thread: batches of up to `batch_size` records, each sent
/// once full or once `batch_window` has passed since its first record,
/// until `until` is met, the input ends or the run is stopped.
pub(super) fn feed(
    source: &mut DirSource,
    sp: &StreamPlan,
    (until, start): (Until, Start),
    input: Option<&SpoolState>,
    (mut gates, quiet): (Option<Gates>, &Quiet),
    stop: &crate::stop::Stop,
    tx: &crossbeam_channel::Sender<Work>,
) -> Result<End, EngineError> {
    let began = Instant::now();
    let mut last_record = Instant::now();
    let (mut taken, mut seq) = (start.records, start.batch);
    let poll = Duration::from_millis(10);
    // A piece of another partition than the batch's starts the next batch:
    // as on a platform, a batch holds one partition's records.
    let mut carried: Option<Piece> = None;
    loop {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut rows = 0usize;
        let mut first: Option<Instant> = None;
        if let Some(piece) = carried.take() {
            if piece.segment.rows > 0 {
                first = Some(Instant::now());
            }
            rows = piece.segment.rows;
            pieces.push(piece);
        }
        let end = loop {
            if rows >= sp.batch_size {
                break None;
            }
            if stop.is_stopped() {
                break Some(End::Signal);
            }
            if until.time.is_some_and(|t| began.elapsed() >= t) {
                break Some(End::Until("time"));
            }
            let left = until.records.map(|n| n.saturating_sub(taken + rows as u64));
            if left == Some(0) {
                break Some(End::Until("records"));
            }
            let want = (sp.batch_size - rows).min(left.map_or(usize::MAX, |l| l.min(usize::MAX as u64) as usize));
            // Read before polling: set, and nothing found, means all of the
            // input has been read.
            let ended = input.is_some_and(|i| i.ended.load(std::sync::atomic::Ordering::Acquire));
            match source.next(want)? {
                Some(piece) if pieces.first().is_some_and(|p| p.segment.partition != piece.segment.partition) => {
                    carried = Some(piece);
                    break None;
                }
                Some(piece) => {
                    if piece.segment.rows > 0 {
                        first.get_or_insert_with(Instant::now);
                        last_record = Instant::now();
                    }
                    rows += piece.segment.rows;
                    pieces.push(piece);
                    if rows >= sp.batch_size {
                        break None;
                    }
                }
                None => {
                    // Nothing waiting: send what there is once its window
                    // has passed, else wait for more.
                    if first.is_some_and(|f| f.elapsed() >= sp.batch_window) {
                        break None;
                    }
                    if ended {
                        break Some(End::InputEnded);
                    }
                    if let Some(why) = input.and_then(|i| i.failed.lock().expect("not poisoned").clone()) {
                        return Err(EngineError::Stream(why));
                    }
                    if first.is_none() {
                        quiet.set(seq);
                    }
                    if first.is_none() && until.idle.is_some_and(|d| last_record.elapsed() >= d) {
                        break Some(End::Until("idle"));
                    }
                    source.wait(poll);
                }
            }
        };
        if !pieces.is_empty() {
            let schema = pieces[0].batch.schema();
            let batch = arrow_select::concat::concat_batches(&schema, pieces.iter().map(|p| &p.batch))
                .map_err(|e| EngineError::Stream(format!("batching records: {e}")))?;
            let segments: Vec<Segment> = pieces.into_iter().map(|p| p.segment).collect();
            let partition = segments.iter().find_map(|s| s.partition.clone());
            let slot = match (gates.as_mut(), partition) {
                (Some(gates), Some(p)) => match gates.enter(&p, stop) {
                    Some(slot) => Some(slot),
                    None => return Ok(End::Signal),
                },
                _ => None,
            };
            if tx.send(Work { seq, batch, segments, queued: Instant::now(), _slot: slot }).is_err() {
                return Ok(End::Signal);
            }
            seq += 1;
            taken += rows as u64;
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}
