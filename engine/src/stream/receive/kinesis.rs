//! A Kinesis data stream, read with the Kinesis Data Streams API
//! (ListShards, GetShardIterator, GetRecords; SigV4): every shard in
//! turn, each shard's records in order, each shard a partition of the
//! watermark. The cursor is each shard's last sequence number received;
//! a resume reads each shard after it (AFTER_SEQUENCE_NUMBER). Shards are
//! listed again every few seconds. After a reshard, a child shard is read
//! once its parents are read to their end, as Lambda does, so that a
//! partition key's records keep their order; a parent read to its end
//! leaves the watermark's partitions (an end marker, spooled after its
//! last records, tells the stream in order). With `parallelization` N, a
//! shard's records are parted into N lanes by their partition key, each
//! spooled as a partition of its own whose batches run one at a time, as
//! Lambda's parallelization factor does: a key's records keep their order
//! from invocation to invocation; the watermark stays the shard's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fanout_jobs::StartAt;
use fanout_workers::aws::AwsJson;
use serde_json::{Value, json};

use super::{Fault, Message, Receiver};
use crate::stream::source::{lane_name, shard_of};
use crate::stream::usage::Usage;

/// How often the shards are listed again.
const RELIST: Duration = Duration::from_secs(2);

/// The least time between two GetRecords of one shard that found nothing
/// (Kinesis allows 5 a second per shard).
const IDLE_SHARD: Duration = Duration::from_millis(200);

/// One shard being read.
struct Shard {
    /// The iterator to read on from; none until its parents are read, and
    /// once it is read to its end.
    iterator: Option<String>,
    /// When it was last read and found empty.
    idle_since: Option<Instant>,
    /// The shards it was split or merged from.
    parents: Vec<String>,
    /// Its last sequence number, once it is closed (a reshard's parent).
    ending: Option<String>,
    /// Read to its end.
    ended: bool,
}

/// A Kinesis data stream's records.
pub(crate) struct Kinesis {
    api: AwsJson,
    stream: String,
    start: StartAt,
    /// When the run first started (epoch ms): where `latest` begins.
    since: i64,
    shards: BTreeMap<String, Shard>,
    /// Each shard's last sequence number received.
    sequences: BTreeMap<String, String>,
    listed: Option<Instant>,
    /// The shard read next.
    turn: usize,
    /// Shards read to their end whose end the stream is not told yet.
    ending: Vec<String>,
    /// Shards that appeared after the first listing: read from their start.
    from_start: std::collections::BTreeSet<String>,
    /// The lanes a shard's records are parted into by partition key
    /// (`parallelization`); 1: none.
    lanes: usize,
    /// What it asked of Kinesis, and when the shards read were last
    /// counted.
    usage: Usage,
    counted: Option<Instant>,
}

impl Kinesis {
    /// The stream `stream` (a name or an ARN) in `region`, each shard's
    /// records parted into `lanes` by partition key.
    pub(crate) fn new(stream: &str, region: &str, start: StartAt, lanes: usize) -> Kinesis {
        Kinesis {
            api: AwsJson::new("kinesis", region, "Kinesis_20131202", "1.1"),
            stream: stream.to_string(),
            start,
            since: 0,
            shards: BTreeMap::new(),
            sequences: BTreeMap::new(),
            listed: None,
            turn: 0,
            ending: Vec::new(),
            from_start: Default::default(),
            lanes: lanes.max(1),
            usage: Usage::default(),
            counted: None,
        }
    }

    /// The request's field that names the stream.
    fn named(&self, mut body: Value) -> Value {
        let key = if self.stream.starts_with("arn:") { "StreamARN" } else { "StreamName" };
        body[key] = Value::String(self.stream.clone());
        body
    }

    /// Lists the shards, and starts reading those not read yet whose
    /// parents are read.
    fn list(&mut self) -> Result<(), Fault> {
        let mut token: Option<String> = None;
        let first_listing = self.listed.is_none();
        loop {
            // With a token, the request names nothing else.
            let body = match &token {
                Some(t) => json!({ "NextToken": t }),
                None => self.named(json!({})),
            };
            let reply = self.api.call("ListShards", &body)?;
            for shard in reply["Shards"].as_array().into_iter().flatten() {
                let Some(id) = shard["ShardId"].as_str() else { continue };
                let ending = shard["SequenceNumberRange"]["EndingSequenceNumber"].as_str().map(str::to_string);
                if let Some(known) = self.shards.get_mut(id) {
                    known.ending = ending;
                    continue;
                }
                let parents = ["ParentShardId", "AdjacentParentShardId"]
                    .iter()
                    .filter_map(|k| shard[*k].as_str().map(str::to_string))
                    .collect();
                // A shard new since the first listing (a reshard's child)
                // holds only records newer than the run: it is read from its
                // start.
                let from_start = !first_listing && !self.sequences.contains_key(id);
                let shard = Shard { iterator: None, idle_since: None, parents, ending, ended: false };
                self.shards.insert(id.to_string(), shard);
                if from_start {
                    self.from_start.insert(id.to_string());
                }
            }
            match reply["NextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        // Shards whose parents are read to their end (or were never seen:
        // trimmed away) start.
        for id in startable(&self.shards) {
            let iterator = self.iterator(&id, self.from_start.contains(&id))?;
            self.shards.get_mut(&id).expect("listed").iterator = iterator;
        }
        self.listed = Some(Instant::now());
        Ok(())
    }

    /// An iterator for shard `id`: after its last sequence number received,
    /// else at the run's start position.
    fn iterator(&self, id: &str, from_start: bool) -> Result<Option<String>, Fault> {
        let mut body = self.named(json!({ "ShardId": id }));
        match self.sequences.get(id) {
            Some(seq) => {
                body["ShardIteratorType"] = json!("AFTER_SEQUENCE_NUMBER");
                body["StartingSequenceNumber"] = json!(seq);
            }
            None if from_start || self.start == StartAt::TrimHorizon => {
                body["ShardIteratorType"] = json!("TRIM_HORIZON")
            }
            None => {
                body["ShardIteratorType"] = json!("AT_TIMESTAMP");
                body["Timestamp"] = json!(self.since as f64 / 1000.0);
            }
        }
        let reply = self.api.call("GetShardIterator", &body)?;
        Ok(reply["ShardIterator"].as_str().map(str::to_string))
    }

    /// Reads up to `max` records of shard `id`.
    fn read(&mut self, id: &str, max: usize) -> Result<Vec<Message>, Fault> {
        let Some(iterator) = self.shards.get(id).and_then(|s| s.iterator.clone()) else { return Ok(Vec::new()) };
        let body = json!({ "ShardIterator": iterator, "Limit": max.clamp(1, 10_000) });
        let reply = match self.api.call("GetRecords", &body) {
            Ok(r) => r,
            // An iterator lasts 5 minutes: a new one, after what was read.
            Err(fanout_workers::aws::AwsError::Refused { code, .. }) if code == "ExpiredIteratorException" => {
                let fresh = self.iterator(id, false)?;
                if let Some(shard) = self.shards.get_mut(id) {
                    shard.iterator = fresh;
                }
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for record in reply["Records"].as_array().into_iter().flatten() {
            let data = record["Data"].as_str().unwrap_or_default();
            let body = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| Fault::Fatal(format!("shard {id}: a record's data is not base64: {e}")))?;
            if let Some(seq) = record["SequenceNumber"].as_str() {
                self.sequences.insert(id.to_string(), seq.to_string());
            }
            let sent_ms = record["ApproximateArrivalTimestamp"].as_f64().map(|t| (t * 1000.0) as i64);
            self.usage.put_units += Usage::put_units_of(body.len());
            let partition = match self.lanes {
                1 => id.to_string(),
                n => lane_name(id, lane(record["PartitionKey"].as_str().unwrap_or_default(), n)),
            };
            out.push(Message { id: None, ack: None, partition: Some(partition), body, sent_ms, file: None });
        }
        let last = self.sequences.get(id).cloned();
        let shard = self.shards.get_mut(id).expect("read above");
        shard.iterator = reply["NextShardIterator"].as_str().map(str::to_string);
        shard.idle_since = out.is_empty().then(Instant::now);
        // A closed shard is read to its end when Kinesis gives no next
        // iterator, or its last record has been read, or a read of it
        // finds nothing and nothing behind.
        let behind = reply["MillisBehindLatest"].as_u64().unwrap_or(1);
        let ended = shard.iterator.is_none()
            || shard
                .ending
                .as_ref()
                .is_some_and(|e| last.as_ref().is_some_and(|l| at_or_after(l, e)) || (out.is_empty() && behind == 0));
        if ended {
            shard.iterator = None;
            shard.ended = true;
            self.ending.push(id.to_string());
            // Its children may start now.
            self.listed = None;
        }
        Ok(out)
    }
}

impl Receiver for Kinesis {
    fn describe(&self) -> String {
        format!("kinesis stream {}", self.stream)
    }

    fn resume(&mut self, cursor: &BTreeMap<String, Value>, since: i64) -> Result<(), Fault> {
        self.since = since;
        // Keyed by the shard's name as a file name has it: a shard id has
        // only letters, digits, `-` and `_`, so it is the same. Each lane
        // of a shard holds the shard's position when its file was spooled:
        // the furthest is the shard's.
        for (id, seq) in cursor {
            if let Some(seq) = seq.as_str() {
                let known = self.sequences.entry(shard_of(id).to_string()).or_insert_with(|| seq.to_string());
                if at_or_after(seq, known) {
                    *known = seq.to_string();
                }
            }
        }
        self.list()
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, Fault> {
        let began = Instant::now();
        loop {
            // The shards being read (or waiting for their parents), for
            // as long as they were.
            let now = Instant::now();
            let open = self.shards.values().filter(|s| !s.ended).count() as u64;
            if let Some(at) = self.counted {
                self.usage.shard_ms += open * now.duration_since(at).as_millis() as u64;
            }
            self.counted = Some(now);
            if self.listed.is_none_or(|at| at.elapsed() >= RELIST) {
                self.list()?;
            }
            let ids: Vec<String> = self.shards.keys().cloned().collect();
            let mut out = Vec::new();
            // Each shard in turn, from where the last call left off, those
            // found empty a moment ago passed over.
            for k in 0..ids.len() {
                let id = &ids[(self.turn + k) % ids.len()];
                let shard = &self.shards[id];
                if shard.iterator.is_none() || shard.idle_since.is_some_and(|t| t.elapsed() < IDLE_SHARD) {
                    continue;
                }
                out.extend(self.read(id, max - out.len())?);
                if out.len() >= max {
                    self.turn = (self.turn + k + 1) % ids.len();
                    break;
                }
            }
            if !out.is_empty() || began.elapsed() >= wait {
                return Ok(out);
            }
            std::thread::sleep(Duration::from_millis(50).min(wait));
        }
    }

    fn cursor(&self, partition: &str) -> Option<Value> {
        self.sequences.get(shard_of(partition)).map(|s| Value::String(s.clone()))
    }

    fn acknowledge(&mut self, _: &[String]) -> Result<(), Fault> {
        Ok(())
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn partitions(&self) -> Option<std::collections::BTreeSet<String>> {
        // A shard read to its end is one until its end is spooled.
        Some(
            (self.shards.iter())
                .filter(|(id, s)| !s.ended || self.ending.contains(id))
                .map(|(id, _)| id.clone())
                .collect(),
        )
    }

    fn ended(&mut self) -> Vec<String> {
        std::mem::take(&mut self.ending)
    }
}

/// The shards not being read, nor read to their end, whose parents are
/// read to their end (or were never seen: trimmed away).
fn startable(shards: &BTreeMap<String, Shard>) -> Vec<String> {
    (shards.iter())
        .filter(|(_, s)| s.iterator.is_none() && !s.ended)
        .filter(|(_, s)| s.parents.iter().all(|p| shards.get(p).is_none_or(|p| p.ended)))
        .map(|(id, _)| id.clone())
        .collect()
}

/// The lane of `n` that records of partition key `key` go into: FNV-1a of
/// the key, so that a key's lane is the same in every run.
fn lane(key: &str, n: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    (hash % n as u64) as usize
}

/// Whether sequence number `a` is at or after `b` (decimal numbers of up
/// to 128 bits, compared as text: by length, then digit by digit).
fn at_or_after(a: &str, b: &str) -> bool {
    (a.len(), a) >= (b.len(), b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_shard_starts_once_its_parents_are_read_to_their_end() {
        let shard = |parents: &[&str], reading: bool, ended: bool| Shard {
            iterator: reading.then(|| "it".to_string()),
            idle_since: None,
            parents: parents.iter().map(|p| p.to_string()).collect(),
            ending: None,
            ended,
        };
        let mut shards = BTreeMap::new();
        shards.insert("p".to_string(), shard(&[], true, false));
        shards.insert("q".to_string(), shard(&[], true, false));
        shards.insert("split".to_string(), shard(&["p"], false, false));
        shards.insert("merged".to_string(), shard(&["p", "q"], false, false));
        shards.insert("orphan".to_string(), shard(&["trimmed"], false, false));
        assert_eq!(startable(&shards), ["orphan"]);
        shards.get_mut("p").unwrap().ended = true;
        shards.get_mut("p").unwrap().iterator = None;
        assert_eq!(startable(&shards), ["orphan", "split"]);
        shards.get_mut("q").unwrap().ended = true;
        shards.get_mut("q").unwrap().iterator = None;
        assert_eq!(startable(&shards), ["merged", "orphan", "split"]);
    }

    #[test]
    fn a_key_keeps_its_lane_and_keys_spread_over_lanes() {
        assert_eq!(lane("user-7", 4), lane("user-7", 4));
        let used: std::collections::BTreeSet<usize> = (0..64).map(|k| lane(&format!("k{k}"), 4)).collect();
        assert_eq!(used.len(), 4);
        assert_eq!(lane("anything", 1), 0);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(at_or_after("49590338271490256608559692538361571095921575989136588898", "9"));
        assert!(!at_or_after("10", "9999"));
        assert!(at_or_after("152", "152"));
    }
}
