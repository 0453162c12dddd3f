//! A Kinesis data stream, read with the Kinesis Data Streams API
//! (ListShards, GetShardIterator, GetRecords; SigV4): every shard in
//! turn, each shard's records in order, each shard a partition with a
//! watermark of its own. The cursor is each shard's last sequence number
//! received; a resume reads each shard after it
//! (AFTER_SEQUENCE_NUMBER). Shards are listed again every few seconds, so
//! that a reshard's children are read once they appear; a closed shard is
//! read to its end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fanout_jobs::StartAt;
use fanout_workers::aws::AwsJson;
use serde_json::{Value, json};

use super::{Fault, Message, Receiver};

/// How often the shards are listed again.
const RELIST: Duration = Duration::from_secs(5);

/// The least time between two GetRecords of one shard that found nothing
/// (Kinesis allows 5 a second per shard).
const IDLE_SHARD: Duration = Duration::from_millis(200);

/// One shard being read.
struct Shard {
    /// The iterator to read on from; none once the shard is closed and
    /// read to its end.
    iterator: Option<String>,
    /// When it was last read and found empty.
    idle_since: Option<Instant>,
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
}

impl Kinesis {
    /// The stream `stream` (a name or an ARN) in `region`.
    pub(crate) fn new(stream: &str, region: &str, start: StartAt) -> Kinesis {
        Kinesis {
            api: AwsJson::new("kinesis", region, "Kinesis_20131202", "1.1"),
            stream: stream.to_string(),
            start,
            since: 0,
            shards: BTreeMap::new(),
            sequences: BTreeMap::new(),
            listed: None,
            turn: 0,
        }
    }

    /// The request's field that names the stream.
    fn named(&self, mut body: Value) -> Value {
        let key = if self.stream.starts_with("arn:") { "StreamARN" } else { "StreamName" };
        body[key] = Value::String(self.stream.clone());
        body
    }

    /// Lists the shards, and starts reading those not read yet.
    fn list(&mut self) -> Result<(), Fault> {
        let mut token: Option<String> = None;
        let mut found = Vec::new();
        loop {
            // With a token, the request names nothing else.
            let body = match &token {
                Some(t) => json!({ "NextToken": t }),
                None => self.named(json!({})),
            };
            let reply = self.api.call("ListShards", &body)?;
            for shard in reply["Shards"].as_array().into_iter().flatten() {
                if let Some(id) = shard["ShardId"].as_str() {
                    found.push(id.to_string());
                }
            }
            match reply["NextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        let first_listing = self.listed.is_none();
        for id in found {
            if self.shards.contains_key(&id) {
                continue;
            }
            // A shard new since the first listing (a reshard's child) holds
            // only records newer than the run: it is read from its start.
            let from_start = !first_listing && !self.sequences.contains_key(&id);
            let iterator = self.iterator(&id, from_start)?;
            self.shards.insert(id, Shard { iterator, idle_since: None });
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
            out.push(Message { id: None, ack: None, partition: Some(id.to_string()), body });
        }
        let shard = self.shards.get_mut(id).expect("read above");
        // No next iterator: the shard is closed and read to its end.
        shard.iterator = reply["NextShardIterator"].as_str().map(str::to_string);
        shard.idle_since = out.is_empty().then(Instant::now);
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
        // only letters, digits, `-` and `_`, so it is the same.
        for (id, seq) in cursor {
            if let Some(seq) = seq.as_str() {
                self.sequences.insert(id.clone(), seq.to_string());
            }
        }
        self.list()
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, Fault> {
        let began = Instant::now();
        loop {
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

    fn cursor(&self, shard: &str) -> Option<Value> {
        self.sequences.get(shard).map(|s| Value::String(s.clone()))
    }

    fn acknowledge(&mut self, _: &[String]) -> Result<(), Fault> {
        Ok(())
    }

    fn partitions(&self) -> Option<std::collections::BTreeSet<String>> {
        Some(self.shards.keys().cloned().collect())
    }
}
