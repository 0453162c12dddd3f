//! A Redis stream, read by a consumer group (made if missing, at the
//! stream's start or its end): XREADGROUP for new entries, XACK once they
//! are spooled. The consumer is named after the run, so a resume is the
//! same consumer: it first reads its own pending entries (delivered to the
//! killed run, not acknowledged), then new ones; and every so often it
//! claims, with XAUTOCLAIM, the entries another consumer of the group has
//! left pending for `claim_after` (a consumer that died). An entry's
//! record is one of its fields (`field`), or all of them as one JSON
//! object.

use std::time::{Duration, Instant};

use fanout_jobs::StartAt;
use redis::Value as R;
use serde_json::Value;

use super::{Fault, Message, Receiver};

/// How long a call may wait for the server's answer, besides a read's
/// own blocking time.
const ANSWER: Duration = Duration::from_secs(5);

/// A Redis stream's entries, for one consumer of a group.
pub(crate) struct Redis {
    url: String,
    key: String,
    group: String,
    consumer: String,
    start: StartAt,
    claim_after: Duration,
    field: Option<String>,
    connection: Option<redis::Connection>,
    /// While reading this consumer's own pending entries: the id read
    /// after; none once they are all read.
    backlog: Option<String>,
    /// Where the next XAUTOCLAIM scan starts, and when it is due.
    claim_from: String,
    claim_at: Instant,
}

impl Redis {
    /// The stream `key` on the server at `url`, read as `consumer` of
    /// `group`.
    pub(crate) fn new(
        url: &str,
        key: &str,
        group: &str,
        consumer: &str,
        start: StartAt,
        claim_after: Duration,
        field: Option<String>,
    ) -> Redis {
        Redis {
            url: url.to_string(),
            key: key.to_string(),
            group: group.to_string(),
            consumer: consumer.to_string(),
            start,
            claim_after,
            field,
            connection: None,
            backlog: Some("0".into()),
            claim_from: "0-0".into(),
            claim_at: Instant::now(),
        }
    }

    /// Runs `cmd`, connecting first if need be; a connection that failed
    /// is made again at the next call.
    fn query(&mut self, cmd: &redis::Cmd) -> Result<R, Fault> {
        if self.connection.is_none() {
            let client = redis::Client::open(self.url.as_str()).map_err(|e| Fault::Fatal(e.to_string()))?;
            let connection = client
                .get_connection_with_timeout(Duration::from_secs(5))
                .map_err(|e| Fault::Transient(format!("connecting to {}: {e}", self.url)))?;
            // A server that stops answering is a failure to try again, not
            // a read that waits for ever (a blocking read waits its block
            // and this much more).
            let timeouts = [connection.set_read_timeout(Some(ANSWER)), connection.set_write_timeout(Some(ANSWER))];
            if let Some(Err(e)) = timeouts.into_iter().find(Result::is_err) {
                return Err(Fault::Transient(format!("{}: {e}", self.url)));
            }
            self.connection = Some(connection);
        }
        let connection = self.connection.as_mut().expect("connected above");
        cmd.query::<R>(connection).map_err(|e| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
                self.connection = None;
                Fault::Transient(e.to_string())
            } else {
                Fault::Fatal(e.to_string())
            }
        })
    }

    /// The record of an entry's fields.
    fn record(&self, id: &str, fields: &R) -> Result<Option<Vec<u8>>, Fault> {
        let R::Array(items) = fields else {
            // An entry deleted while pending: nothing to read.
            return Ok(None);
        };
        let pairs: Vec<(String, String)> =
            items.chunks(2).filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?))).collect();
        match &self.field {
            Some(f) => match pairs.into_iter().find(|(k, _)| k == f) {
                Some((_, v)) => Ok(Some(v.into_bytes())),
                None => Err(Fault::Fatal(format!("entry {id} has no field `{f}` (input.stream.field)"))),
            },
            None => {
                let object: serde_json::Map<String, Value> =
                    pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                Ok(Some(serde_json::to_vec(&object).expect("JSON serializes")))
            }
        }
    }

    /// The messages of a list of entries (`[id, [field, value, ...]]`),
    /// and the last id among them.
    fn entries(&self, list: &R) -> Result<(Vec<Message>, Option<String>), Fault> {
        let mut out = Vec::new();
        let mut last = None;
        for entry in array(list) {
            let parts = array(entry);
            let Some(id) = parts.first().and_then(text) else { continue };
            // An entry deleted while pending has no record, and is
            // acknowledged with the rest so that it is pending no more.
            let body = self.record(&id, parts.get(1).unwrap_or(&R::Nil))?.unwrap_or_default();
            // An entry's id is the time Redis took it, in ms, and a number.
            let sent_ms = id.split('-').next().and_then(|ms| ms.parse().ok());
            out.push(Message {
                id: Some(id.clone()),
                ack: Some(id.clone()),
                partition: None,
                body,
                sent_ms,
                file: None,
            });
            last = Some(id);
        }
        Ok((out, last))
    }

    /// XREADGROUP from `id` (`>`: new entries), blocking up to `block`.
    fn read(&mut self, id: &str, max: usize, block: Option<Duration>) -> Result<(Vec<Message>, Option<String>), Fault> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&self.group).arg(&self.consumer).arg("COUNT").arg(max);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(id);
        let reply = self.query(&cmd)?;
        // [[key, [entries]]], or nil when the block timed out.
        match array(&reply).first() {
            Some(stream) => self.entries(array(stream).get(1).unwrap_or(&R::Nil)),
            None => Ok((Vec::new(), None)),
        }
    }

    /// Claims up to `max` entries other consumers left pending.
    fn claim(&mut self, max: usize) -> Result<Vec<Message>, Fault> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.claim_after.as_millis() as u64)
            .arg(&self.claim_from)
            .arg("COUNT")
            .arg(max);
        let reply = self.query(&cmd)?;
        let parts = array(&reply);
        // [next start, [entries], [ids deleted]]; 0-0: the scan is done.
        let next = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
        let (claimed, _) = self.entries(parts.get(1).unwrap_or(&R::Nil))?;
        if next == "0-0" {
            self.claim_at = Instant::now() + (self.claim_after / 2).max(Duration::from_secs(1));
        }
        self.claim_from = next;
        Ok(claimed)
    }
}

/// The items of an array reply (none for nil).
fn array(v: &R) -> &[R] {
    match v {
        R::Array(items) => items,
        _ => &[],
    }
}

/// A reply's text.
fn text(v: &R) -> Option<String> {
    match v {
        R::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        R::SimpleString(s) => Some(s.clone()),
        R::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl Receiver for Redis {
    fn describe(&self) -> String {
        format!("redis stream {} at {}", self.key, self.url)
    }

    fn resume(&mut self, _: &std::collections::BTreeMap<String, Value>, _: i64) -> Result<(), Fault> {
        let from = match self.start {
            StartAt::TrimHorizon => "0",
            StartAt::Latest => "$",
        };
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(&self.key).arg(&self.group).arg(from).arg("MKSTREAM");
        match self.query(&cmd) {
            Ok(_) => Ok(()),
            // The group is there already: a resume, or another consumer's.
            Err(Fault::Fatal(why)) if why.contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, Fault> {
        // This consumer's own pending entries first (a resume's).
        if let Some(after) = self.backlog.clone() {
            let (got, last) = self.read(&after, max, None)?;
            self.backlog = last;
            if !got.is_empty() {
                return Ok(got);
            }
        }
        if Instant::now() >= self.claim_at {
            let claimed = self.claim(max)?;
            if !claimed.is_empty() {
                return Ok(claimed);
            }
        }
        Ok(self.read(">", max, Some(wait))?.0)
    }

    fn cursor(&self, _: &str) -> Option<Value> {
        None
    }

    fn acknowledge(&mut self, acks: &[String]) -> Result<(), Fault> {
        for chunk in acks.chunks(1000) {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(&self.key).arg(&self.group).arg(chunk);
            self.query(&cmd)?;
        }
        Ok(())
    }
}
