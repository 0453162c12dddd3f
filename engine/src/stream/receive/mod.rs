//! Streams received from a service — Kinesis (`kinesis.rs`), SQS
//! (`sqs.rs`), Redis Streams (`redis.rs`), each one [`Receiver`] — are
//! spooled into the run directory before they are processed, and
//! acknowledged to the service only once they are.
//!
//! Each spooled file `N` has a receipt, `receipts/N.json`, written and
//! fsync'ed before the file is renamed into place: the receiver's cursor
//! once the file's records were received (Kinesis: each shard's last
//! sequence number), the ids of its messages (SQS message ids, Redis entry
//! ids) and what acknowledges them (SQS receipt handles, Redis entry ids).
//! Only then are the messages acknowledged (DeleteMessageBatch, XACK). A
//! receipt whose file was never renamed into place — nor read, as the
//! arrivals log tells — is from a crash in between, and is dropped; so on
//! a resume:
//! - the cursor is the last kept receipt's, and reading goes on after it;
//! - messages of a kept receipt are acknowledged again;
//! - a message the service delivers again (SQS, after its visibility
//!   timeout; Redis, a pending entry) whose id a kept receipt holds is
//!   acknowledged and not spooled twice.
//!
//! From the spool on, the stream's checkpoint makes each record count
//! once. This keeps a service's own retention out of the windows'
//! lifetime: an SQS message is deleted within moments of its receipt,
//! not held invisible until the windows it falls in close.

mod kinesis;
mod objects;
mod redis;
mod sqs;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use fanout_datasets::store::Storage;
use fanout_jobs::{StreamPlan, StreamSource};
use serde::{Deserialize, Serialize};

use super::checkpoint::write_synced;
use super::source::{end_name, millis, partition_name, spooled_name, taken_before};
use super::spool::{MAX_UNREAD, Spool, SpoolState, next_number, spool_named};
use super::usage::Usage;
use crate::error::EngineError;

/// A message received: one or more records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// Its id, where the service may deliver it again (SQS, Redis).
    pub(crate) id: Option<String>,
    /// What acknowledges it (an SQS receipt handle, a Redis entry id).
    pub(crate) ack: Option<String>,
    /// The partition it came from (a Kinesis shard), whose records keep
    /// their order and have a watermark of their own.
    pub(crate) partition: Option<String>,
    /// Its records, as lines of the job's format.
    pub(crate) body: Vec<u8>,
    /// When the service took it, epoch ms, where it says.
    pub(crate) sent_ms: Option<i64>,
    /// A file of records downloaded whole (an object), spooled as it is
    /// instead of `body`.
    pub(crate) file: Option<PathBuf>,
}

/// Why a receiver's call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Worth trying again (the service unreachable for now, throttled).
    Transient(String),
    /// The stream cannot go on (no such stream or queue, access denied).
    Fatal(String),
}

impl From<fanout_workers::aws::AwsError> for Fault {
    fn from(e: fanout_workers::aws::AwsError) -> Fault {
        match e {
            fanout_workers::aws::AwsError::Transient(_) => Fault::Transient(e.to_string()),
            fanout_workers::aws::AwsError::Refused { .. } => Fault::Fatal(e.to_string()),
        }
    }
}

/// A service a stream's records are received from.
pub(crate) trait Receiver: Send {
    /// The source, for messages: `kinesis stream clicks`.
    fn describe(&self) -> String;
    /// Gets ready to receive after `cursor` (each partition's position,
    /// from the receipts; empty for a new run) — records that came after
    /// `since` (epoch ms: when the run first started) for a source that
    /// starts at its latest.
    fn resume(&mut self, cursor: &BTreeMap<String, serde_json::Value>, since: i64) -> Result<(), Fault>;
    /// Up to `max` messages, waiting up to about `wait` for the first.
    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, Fault>;
    /// Where `partition` stands once all it received is spooled; none for a
    /// source that keeps no position of its own.
    fn cursor(&self, partition: &str) -> Option<serde_json::Value>;
    /// Acknowledges messages that are spooled.
    fn acknowledge(&mut self, acks: &[String]) -> Result<(), Fault>;
    /// Tells it the ids of the messages spooled before (a resume's), for
    /// a source that would otherwise take them again.
    fn seen(&mut self, _ids: &HashSet<String>) {}

    /// The partitions it reads now, for a source that has them: the
    /// watermark waits for each.
    fn partitions(&self) -> Option<std::collections::BTreeSet<String>> {
        None
    }

    /// The partitions read to their end since the last call (a Kinesis
    /// shard closed by a reshard): the stream is told once their last
    /// records are spooled.
    fn ended(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// What it has asked of the service so far, to price.
    fn usage(&self) -> Usage {
        Usage::default()
    }

    /// How long after a message is acknowledged it may still be delivered
    /// again (SQS: its visibility timeout, when a delete used a receipt
    /// handle grown stale), so long its id is kept.
    fn redelivery(&self) -> Duration {
        Duration::ZERO
    }
}

/// The receipt of spooled file `N`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Receipt {
    /// The partition of the file's records, if they are from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partition: Option<String>,
    /// The partition's position once the file's records were received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<serde_json::Value>,
    /// The ids of its messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ids: Vec<String>,
    /// What acknowledges them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    acks: Vec<String>,
    /// When it was written, epoch ms.
    at: i64,
}

/// The receiver for `source`, with the job's name and the run's id (a
/// consumer's name).
fn receiver(
    source: &StreamSource,
    run_id: &str,
    storage: &Arc<Storage>,
    spool: &Path,
    lanes: usize,
) -> Option<Box<dyn Receiver>> {
    Some(match source {
        StreamSource::Prefix(prefix) => Box::new(objects::Objects::new(prefix, storage.clone(), spool.to_path_buf())),
        StreamSource::Kinesis { stream, region, start } => {
            Box::new(kinesis::Kinesis::new(stream, region, *start, lanes))
        }
        StreamSource::Sqs { url, region, visibility_timeout } => {
            Box::new(sqs::Sqs::new(url, region, *visibility_timeout))
        }
        StreamSource::Redis { url, key, group, start, claim_after, field } => {
            let consumer = format!("fanout-{run_id}");
            Box::new(redis::Redis::new(url, key, group, &consumer, *start, *claim_after, field.clone()))
        }
        _ => return None,
    })
}

/// Checks that `source`, a service, can be read (the stream, queue,
/// server or bucket is there), before a run makes anything: the first
/// call a receiver makes.
pub(crate) fn check(source: &StreamSource, storage: &Arc<Storage>) -> Result<(), EngineError> {
    let Some(mut receiver) = receiver(source, "check", storage, Path::new("."), 1) else { return Ok(()) };
    receiver.resume(&BTreeMap::new(), millis(SystemTime::now())).map_err(|f| match f {
        Fault::Transient(why) | Fault::Fatal(why) => EngineError::Stream(format!("{}: {why}", receiver.describe())),
    })
}

/// The receipts of a run, by the number of their spooled file.
struct Receipts {
    dir: PathBuf,
    kept: BTreeMap<u64, Receipt>,
}

impl Receipts {
    /// The receipts in `run_dir` whose files were spooled (into `spool`);
    /// the others are removed.
    fn load(run_dir: &Path, spool: &Path) -> Result<Receipts, EngineError> {
        let dir = run_dir.join("receipts");
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        let taken: HashSet<String> = taken_before(run_dir).into_iter().map(|(name, _)| name).collect();
        let mut kept = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| EngineError::io(&dir, e))? {
            let path = entry.map_err(|e| EngineError::io(&dir, e))?.path();
            let Some(n) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let receipt = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Receipt>(&b).ok());
            let name = |r: &Receipt| spooled_name(n, r.partition.as_deref());
            match receipt {
                Some(r) if spool.join(name(&r)).exists() || taken.contains(&name(&r)) => {
                    kept.insert(n, r);
                }
                // Written, but its file never was: the crash came between.
                _ => std::fs::remove_file(&path).map_err(|e| EngineError::io(&path, e))?,
            }
        }
        Ok(Receipts { dir, kept })
    }

    /// Writes the receipt of file `n`.
    fn write(&mut self, n: u64, receipt: Receipt) -> Result<(), EngineError> {
        let path = self.dir.join(format!("{n:012}.json"));
        write_synced(&path, &serde_json::to_vec(&receipt).expect("serializes"))?;
        self.kept.insert(n, receipt);
        Ok(())
    }

    /// Each partition's position: its last receipt's.
    fn cursor(&self) -> BTreeMap<String, serde_json::Value> {
        (self.kept.values()).filter_map(|r| Some((r.partition.clone()?, r.cursor.clone()?))).collect()
    }

    /// Removes the receipts acknowledged, except each partition's last
    /// (whose cursor is the partition's position) and those whose ids must
    /// still be kept (`keep`).
    fn prune(&mut self, acknowledged: u64, keep: Duration, seen: &mut HashSet<String>) {
        let mut last: BTreeMap<Option<&str>, u64> = BTreeMap::new();
        for (n, r) in &self.kept {
            if r.cursor.is_some() {
                last.insert(r.partition.as_deref(), *n);
            }
        }
        let now = millis(SystemTime::now());
        let gone: Vec<u64> = (self.kept.iter())
            .filter(|(n, r)| {
                **n <= acknowledged
                    && last.get(&r.partition.as_deref()) != Some(n)
                    && now - r.at >= keep.as_millis() as i64
            })
            .map(|(n, _)| *n)
            .collect();
        for n in gone {
            if let Some(r) = self.kept.remove(&n) {
                for id in &r.ids {
                    seen.remove(id);
                }
            }
            let _ = std::fs::remove_file(self.dir.join(format!("{n:012}.json")));
        }
    }
}

/// Starts receiving `source` (a service) into `dir`, a spool that a
/// directory source reads, a file at most every `window` or `batch_size`
/// records. `None` for a source that is not a service.
pub(crate) fn start(
    source: &StreamSource,
    dir: &Path,
    run_dir: &Path,
    run_id: &str,
    sp: &StreamPlan,
    taken: Arc<AtomicU64>,
    storage: &Arc<Storage>,
) -> Result<Option<Spool>, EngineError> {
    let (batch_size, window, max_age) = (sp.batch_size, sp.batch_window, sp.max_record_age);
    let lanes = sp.parallelization.unwrap_or(1);
    let Some(mut receiver) = receiver(source, run_id, storage, dir, lanes) else { return Ok(None) };
    let expired = run_dir.join(EXPIRED);
    std::fs::create_dir_all(&expired).map_err(|e| EngineError::io(&expired, e))?;
    let mut receipts = Receipts::load(run_dir, dir)?;
    let next = next_number(dir, run_dir)?;
    let since = first_start(run_dir)?;
    let cursor = receipts.cursor();
    let what = receiver.describe();
    let fatal = |why: String| EngineError::Stream(format!("{what}: {why}"));
    let mut seen: HashSet<String> = receipts.kept.values().flat_map(|r| r.ids.iter().cloned()).collect();
    receiver.seen(&seen);
    // The first call names a missing stream or an unreachable service at
    // once.
    receiver.resume(&cursor, since).map_err(|f| match f {
        Fault::Transient(why) | Fault::Fatal(why) => fatal(why),
    })?;
    let state = Arc::new(SpoolState::default());
    share_partitions(receiver.as_ref(), &state);
    // What a killed run spooled and may not have acknowledged.
    let acks: Vec<String> = receipts.kept.values().flat_map(|r| r.acks.iter().cloned()).collect();
    if !acks.is_empty() {
        // Stale handles are no matter: their messages come again and are
        // known by their ids.
        let _ = receiver.acknowledge(&acks);
    }
    if let Some(&last) = receipts.kept.keys().next_back() {
        receipts.prune(last, receiver.redelivery(), &mut seen);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (into, stopping, told) = (dir.to_path_buf(), stop.clone(), state.clone());
    let thread = std::thread::Builder::new()
        .name("fanout-receive".into())
        .spawn(move || {
            let spooling = Spooling {
                dir: into,
                batch_size,
                window,
                stop: stopping,
                state: told.clone(),
                taken,
                first: next,
                max_age,
                expired,
            };
            if let Err(why) = spooling.run(receiver.as_mut(), next, &mut receipts, &mut seen) {
                told.fail(why);
            }
        })
        .map_err(|e| EngineError::io(dir, e))?;
    Ok(Some(Spool::serving(state, stop, thread)))
}

/// Tells the stream the partitions `receiver` reads now.
fn share_partitions(receiver: &dyn Receiver, state: &SpoolState) {
    if let Some(now) = receiver.partitions() {
        *state.partitions.lock().expect("not poisoned") = now;
    }
}

/// The directory of the run directory that records too old when received
/// (`max_record_age`) are set aside in.
pub(crate) const EXPIRED: &str = "expired";

/// The records set aside as too old when received, over the run and its
/// resumes.
pub(crate) fn expired(run_dir: &Path) -> u64 {
    let dir = run_dir.join(EXPIRED);
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten();
    (files.filter(|e| !e.file_name().to_string_lossy().starts_with('.')))
        .map(|e| std::fs::read(e.path()).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64))
        .sum()
}

/// When the run first started, epoch ms, kept in its directory.
fn first_start(run_dir: &Path) -> Result<i64, EngineError> {
    let path = run_dir.join("receive.json");
    if let Some(at) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<i64>(&b).ok()) {
        return Ok(at);
    }
    let now = millis(SystemTime::now());
    write_synced(&path, now.to_string().as_bytes())?;
    Ok(now)
}

/// How long to wait before trying a service again after `failures`
/// transient failures in a row: 100 ms, doubling to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}

/// Where and how a receiver's messages are spooled.
struct Spooling {
    dir: PathBuf,
    batch_size: usize,
    window: Duration,
    stop: Arc<AtomicBool>,
    state: Arc<SpoolState>,
    /// Files the stream has taken from the spool, and the first number
    /// this spooling gave: while `MAX_UNREAD` files wait unread, nothing
    /// more is received (the service keeps it).
    taken: Arc<AtomicU64>,
    first: u64,
    /// Messages older than this when received go to `expired`.
    max_age: Option<Duration>,
    expired: PathBuf,
}

impl Spooling {
    /// Receives until told to stop: messages gathered until `batch_size`
    /// of them, `window` since the first, or a wait that brought nothing;
    /// then their receipt, their file `number` (on from there), and their
    /// acknowledgment.
    fn run(
        &self,
        receiver: &mut dyn Receiver,
        mut number: u64,
        receipts: &mut Receipts,
        seen: &mut HashSet<String>,
    ) -> Result<(), String> {
        let what = receiver.describe();
        let mut held: Vec<Message> = Vec::new();
        let mut first: Option<Instant> = None;
        let mut failures = 0u32;
        let poll = self.window.clamp(Duration::from_millis(50), Duration::from_millis(500));
        while !self.stop.load(Relaxed) {
            // The stream is behind: the service keeps what is not received.
            if held.is_empty() && number - self.first >= self.taken.load(Relaxed) + MAX_UNREAD {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            // With nothing held, a longer wait: fewer calls to an idle service.
            let wait = if held.is_empty() { Duration::from_secs(1) } else { poll };
            let got = match receiver.receive(self.batch_size.saturating_sub(held.len()).max(1), wait) {
                Ok(got) => {
                    failures = 0;
                    got
                }
                Err(Fault::Fatal(why)) => return Err(format!("{what}: {why}")),
                Err(Fault::Transient(why)) => {
                    failures += 1;
                    // Said once a retry failed too, then every 15 failures.
                    if failures % 15 == 2 {
                        eprintln!("fanout: {what}: {why} (trying again)");
                    }
                    std::thread::sleep(backoff(failures));
                    continue;
                }
            };
            share_partitions(receiver, &self.state);
            *self.state.usage.lock().expect("not poisoned") = receiver.usage();
            let mut again = Vec::new();
            let came = !got.is_empty();
            for m in got {
                match &m.id {
                    Some(id) if seen.contains(id) || held.iter().any(|h| h.id.as_ref() == Some(id)) => {
                        again.extend(m.ack);
                    }
                    _ => {
                        first.get_or_insert_with(Instant::now);
                        held.push(m);
                    }
                }
            }
            if !again.is_empty() {
                // Delivered again, spooled before: acknowledged only.
                acknowledge(receiver, &again, &self.stop)?;
            }
            let ended = receiver.ended();
            let due = held.len() >= self.batch_size
                || first.is_some_and(|f| f.elapsed() >= self.window)
                || !came
                || !ended.is_empty();
            if held.is_empty() && ended.is_empty() || !due {
                continue;
            }
            // A downloaded file, with its receipt, is spooled as it is.
            let (files, rest): (Vec<Message>, Vec<Message>) =
                std::mem::take(&mut held).into_iter().partition(|m| m.file.is_some());
            held = rest;
            for m in files {
                let ids: Vec<String> = m.id.iter().cloned().collect();
                seen.extend(ids.iter().cloned());
                let at = millis(SystemTime::now());
                receipts.write(number, Receipt { ids, at, ..Receipt::default() }).map_err(|e| e.to_string())?;
                let (from, to) = (m.file.expect("a file"), self.dir.join(spooled_name(number, None)));
                std::fs::rename(&from, &to).map_err(|e| format!("spooling {}: {e}", from.display()))?;
                number += 1;
            }
            // One file per partition, each with its receipt, then one
            // acknowledgment for all.
            let mut acks = Vec::new();
            for (partition, messages) in by_partition(std::mem::take(&mut held)) {
                let receipt = Receipt {
                    cursor: partition.as_deref().and_then(|p| receiver.cursor(p)),
                    partition: partition.as_deref().map(partition_name),
                    ids: messages.iter().filter_map(|m| m.id.clone()).collect(),
                    acks: messages.iter().filter_map(|m| m.ack.clone()).collect(),
                    at: millis(SystemTime::now()),
                };
                acks.extend(receipt.acks.iter().cloned());
                seen.extend(receipt.ids.iter().cloned());
                let name = spooled_name(number, receipt.partition.as_deref());
                receipts.write(number, receipt).map_err(|e| e.to_string())?;
                let (live, old) = self.expire(messages);
                if !old.is_empty() {
                    spool_named(&self.expired, &format!("{number:012}.jsonl"), &old)
                        .map_err(|e| format!("setting expired records aside in {}: {e}", self.expired.display()))?;
                }
                let lines: Vec<Vec<u8>> = live.iter().flat_map(|m| lines(&m.body)).collect();
                spool_named(&self.dir, &name, &lines)
                    .map_err(|e| format!("spooling into {}: {e}", self.dir.display()))?;
                number += 1;
            }
            // After a partition's last records, its end marker.
            for partition in ended {
                let name = end_name(number, &partition_name(&partition));
                spool_named(&self.dir, &name, &[]).map_err(|e| format!("spooling into {}: {e}", self.dir.display()))?;
                number += 1;
            }
            first = None;
            acknowledge(receiver, &acks, &self.stop)?;
            receipts.prune(number - 1, receiver.redelivery(), seen);
        }
        Ok(())
    }
}

impl Spooling {
    /// `messages` parted into those to spool and the lines of those older
    /// than `max_age` (by the service's time for them), each a JSON line
    /// `{"sent_ms", "received_ms", "record"}`.
    fn expire(&self, messages: Vec<Message>) -> (Vec<Message>, Vec<Vec<u8>>) {
        let Some(max) = self.max_age else { return (messages, Vec::new()) };
        let now = millis(SystemTime::now());
        let (old, live): (Vec<Message>, Vec<Message>) =
            messages.into_iter().partition(|m| m.sent_ms.is_some_and(|t| now - t > max.as_millis() as i64));
        let lines = (old.iter())
            .flat_map(|m| lines(&m.body).into_iter().map(move |l| (m.sent_ms, l)))
            .map(|(sent, l)| {
                // A JSON record as it is; another line as text.
                let text = String::from_utf8_lossy(&l).into_owned();
                let record = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .filter(serde_json::Value::is_object)
                    .unwrap_or(serde_json::Value::String(text));
                serde_json::json!({ "sent_ms": sent, "received_ms": now, "record": record }).to_string().into_bytes()
            })
            .collect();
        (live, lines)
    }
}

/// `messages` by partition, in the order each partition's came.
fn by_partition(messages: Vec<Message>) -> BTreeMap<Option<String>, Vec<Message>> {
    let mut out: BTreeMap<Option<String>, Vec<Message>> = BTreeMap::new();
    for m in messages {
        out.entry(m.partition.clone()).or_default().push(m);
    }
    out
}

/// Acknowledges `acks`, trying a transient failure again a while.
fn acknowledge(receiver: &mut dyn Receiver, acks: &[String], stop: &AtomicBool) -> Result<(), String> {
    let mut failures = 0;
    loop {
        match receiver.acknowledge(acks) {
            Ok(()) => return Ok(()),
            Err(Fault::Fatal(why)) => return Err(format!("{}: acknowledging: {why}", receiver.describe())),
            // Unacknowledged, a message comes again and is known by its id:
            // tried again a while, not once the stream stops.
            Err(Fault::Transient(_)) if failures < 20 && !stop.load(Relaxed) => {
                failures += 1;
                std::thread::sleep(backoff(failures));
            }
            Err(Fault::Transient(_)) => return Ok(()),
        }
    }
}

/// The records of a message's body: its lines, empty ones left out.
fn lines(body: &[u8]) -> Vec<Vec<u8>> {
    (body.split(|&b| b == b'\n'))
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(partition: Option<&str>, cursor: Option<&str>, ids: &[&str], at: i64) -> Receipt {
        Receipt {
            partition: partition.map(str::to_string),
            cursor: cursor.map(|c| serde_json::Value::String(c.to_string())),
            ids: ids.iter().map(|i| i.to_string()).collect(),
            acks: Vec::new(),
            at,
        }
    }

    #[test]
    fn a_receipt_whose_file_never_came_is_dropped_and_cursors_merge() {
        let run = tempfile::tempdir().unwrap();
        let spool = run.path().join("received");
        std::fs::create_dir_all(&spool).unwrap();
        let mut receipts = Receipts::load(run.path(), &spool).unwrap();
        receipts.write(1, receipt(Some("s0"), Some("10"), &[], 0)).unwrap();
        receipts.write(2, receipt(Some("s1"), Some("20"), &[], 0)).unwrap();
        receipts.write(3, receipt(Some("s0"), Some("30"), &[], 0)).unwrap();
        // Files 1 and 2 were spooled, 1 read and removed since (the
        // arrivals log says it was taken); 3 never was.
        std::fs::write(run.path().join("arrivals"), "5 000000000001.s0.spool\n").unwrap();
        std::fs::write(spool.join(spooled_name(2, Some("s1"))), "x\n").unwrap();
        let loaded = Receipts::load(run.path(), &spool).unwrap();
        assert_eq!(loaded.kept.keys().copied().collect::<Vec<_>>(), [1, 2]);
        let cursor = loaded.cursor();
        assert_eq!(cursor["s0"], "10");
        assert_eq!(cursor["s1"], "20");
        assert!(!run.path().join("receipts/000000000003.json").exists());
        // The file numbers go on after every one given.
        assert_eq!(next_number(&spool, run.path()).unwrap(), 3);
    }

    #[test]
    fn pruning_keeps_each_partitions_last_receipt_and_ids_still_redeliverable() {
        let run = tempfile::tempdir().unwrap();
        let spool = run.path().join("received");
        let mut receipts = Receipts::load(run.path(), &spool).unwrap();
        let now = millis(SystemTime::now());
        receipts.write(1, receipt(Some("s0"), Some("1"), &[], 0)).unwrap();
        receipts.write(2, receipt(Some("s1"), Some("2"), &[], 0)).unwrap();
        receipts.write(3, receipt(Some("s0"), Some("3"), &[], 0)).unwrap();
        receipts.write(4, receipt(None, None, &["old"], 0)).unwrap();
        receipts.write(5, receipt(None, None, &["new"], now)).unwrap();
        let mut seen: HashSet<String> = ["old", "new"].into_iter().map(String::from).collect();
        receipts.prune(5, Duration::from_secs(60), &mut seen);
        assert_eq!(receipts.kept.keys().copied().collect::<Vec<_>>(), [2, 3, 5]);
        assert_eq!(seen, ["new".to_string()].into_iter().collect());
    }

    #[test]
    fn a_bodys_lines_are_its_records() {
        assert_eq!(lines(b"{\"a\":1}\r\n\n  \n{\"a\":2}"), [b"{\"a\":1}".to_vec(), b"{\"a\":2}".to_vec()]);
        assert!(lines(b"").is_empty());
    }
}
