//! Invocation records and per-stage statistics.
//!
//! Every invocation leaves one JSON line in `invocations.jsonl` in the run
//! directory. Each worker serializes its own records into a buffer and
//! appends whole buffers to the shared file, so recording scales with the
//! workers. Latencies go into per-worker HDR histograms, merged at the end.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// One invocation, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct InvocationRecord<'a> {
    /// The stage's name.
    pub stage: &'a str,
    /// map, combine or reduce.
    pub phase: &'static str,
    /// The task: a split index, or a partition.
    pub task: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// A backup invocation of a straggling task.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backup: bool,
    /// The worker slot that ran it.
    pub worker: usize,
    /// The container (a worker slot's initialised function).
    pub container: u64,
    /// Whether the container was started for this invocation.
    pub cold: bool,
    /// When the task was queued, in microseconds since the run started.
    pub queued_us: u64,
    /// When the invocation started.
    pub started_us: u64,
    /// When it finished.
    pub finished_us: u64,
    /// Its billed duration on the platform model, in microseconds.
    pub billed_us: u64,
    /// ok or error.
    pub status: &'static str,
    /// The error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// Input bytes: the split's bytes on disk for the first step of a map
    /// task, else the in-memory size of the input batches.
    pub bytes_in: u64,
    /// Input records.
    pub records_in: u64,
    /// In-memory size of the output batches.
    pub bytes_out: u64,
    /// Output records.
    pub records_out: u64,
}

impl InvocationRecord<'_> {
    /// Appends the record as one line of JSON: what serde writes for it,
    /// field for field, without its per-field machinery (a record is
    /// written for every invocation).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_head(out);
        self.write_rest(out);
    }

    /// The record's start, the same for every record of a stage and
    /// phase: `{"stage":...,"phase":"...",`.
    fn write_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"stage\":");
        serde_json::to_writer(&mut *out, self.stage).expect("a string serializes");
        out.extend_from_slice(b",\"phase\":\"");
        out.extend_from_slice(self.phase.as_bytes());
        out.extend_from_slice(b"\",");
    }

    /// The rest of the record, from `"task"` on.
    fn write_rest(&self, out: &mut Vec<u8>) {
        let num = push_u64_field;
        num(out, b"\"task\":", self.task);
        num(out, b",\"attempt\":", u64::from(self.attempt));
        if self.backup {
            out.extend_from_slice(b",\"backup\":true");
        }
        num(out, b",\"worker\":", self.worker as u64);
        num(out, b",\"container\":", self.container);
        out.extend_from_slice(if self.cold { b",\"cold\":true" } else { b",\"cold\":false" });
        num(out, b",\"queued_us\":", self.queued_us);
        num(out, b",\"started_us\":", self.started_us);
        num(out, b",\"finished_us\":", self.finished_us);
        num(out, b",\"billed_us\":", self.billed_us);
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.as_bytes());
        out.push(b'"');
        if let Some(e) = self.error {
            out.extend_from_slice(b",\"error\":");
            serde_json::to_writer(&mut *out, e).expect("a string serializes");
        }
        num(out, b",\"bytes_in\":", self.bytes_in);
        num(out, b",\"records_in\":", self.records_in);
        num(out, b",\"bytes_out\":", self.bytes_out);
        num(out, b",\"records_out\":", self.records_out);
        out.extend_from_slice(b"}\n");
    }
}

/// Appends `key` (the JSON text before a number: `,"task":`) and `v`.
pub(crate) fn push_u64_field(out: &mut Vec<u8>, key: &[u8], v: u64) {
    out.extend_from_slice(key);
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// The fields of a recorded invocation that statistics need.
#[derive(Deserialize)]
struct Recorded {
    stage: String,
    phase: String,
    attempt: u32,
    cold: bool,
    started_us: u64,
    finished_us: u64,
    billed_us: u64,
    status: String,
    bytes_in: u64,
    records_in: u64,
    bytes_out: u64,
    records_out: u64,
}

/// Reads the records an interrupted run left in `path` into `stats`, at
/// the index `step` gives a (stage, phase); returns how many it read.
pub(crate) fn replay(
    path: &Path,
    step: impl Fn(&str, &str) -> Option<usize>,
    stats: &mut [StageStats],
) -> Result<u64, EngineError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    let mut n = 0;
    // A line cut short by the crash does not parse, and is left out.
    for r in text.lines().filter_map(|l| serde_json::from_str::<Recorded>(l).ok()) {
        let Some(i) = step(&r.stage, &r.phase) else { continue };
        let phase = match r.phase.as_str() {
            "map" => "map",
            "combine" => "combine",
            _ => "reduce",
        };
        stats[i].add(&InvocationRecord {
            stage: &r.stage,
            phase,
            task: 0,
            attempt: r.attempt,
            backup: false,
            worker: 0,
            container: 0,
            cold: r.cold,
            queued_us: 0,
            started_us: r.started_us,
            finished_us: r.finished_us,
            billed_us: r.billed_us,
            status: if r.status == "ok" { "ok" } else { "error" },
            error: None,
            bytes_in: r.bytes_in,
            records_in: r.records_in,
            bytes_out: r.bytes_out,
            records_out: r.records_out,
        });
        n += 1;
    }
    Ok(n)
}

/// Totals for one (stage, phase).
#[derive(Debug, Clone)]
pub struct StageStats {
    /// Invocations.
    pub invocations: u64,
    /// Cold starts.
    pub cold: u64,
    /// Failed invocations.
    pub failed: u64,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Bytes in.
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Invocations after a failed attempt.
    pub retries: u64,
    /// Billed duration, microseconds.
    pub billed_us: u64,
    /// Invocation latency, microseconds.
    pub latency: Histogram<u64>,
}

impl Default for StageStats {
    fn default() -> Self {
        StageStats {
            invocations: 0,
            cold: 0,
            failed: 0,
            records_in: 0,
            records_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            retries: 0,
            billed_us: 0,
            // 1 µs to 1 hour, 3 significant figures.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        }
    }
}

impl StageStats {
    fn add(&mut self, r: &InvocationRecord<'_>) {
        self.invocations += 1;
        self.cold += u64::from(r.cold);
        self.failed += u64::from(r.status != "ok");
        self.records_in += r.records_in;
        self.records_out += r.records_out;
        self.bytes_in += r.bytes_in;
        self.bytes_out += r.bytes_out;
        self.retries += u64::from(r.attempt > 1);
        self.billed_us += r.billed_us;
        self.latency.saturating_record(r.finished_us.saturating_sub(r.started_us).max(1));
    }

    /// Adds another worker's totals.
    pub fn merge(&mut self, o: &StageStats) {
        self.invocations += o.invocations;
        self.cold += o.cold;
        self.failed += o.failed;
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.retries += o.retries;
        self.billed_us += o.billed_us;
        self.latency.add(&o.latency).expect("histograms of the same range");
    }
}

/// The shared invocation log.
pub(crate) struct Log {
    path: PathBuf,
    file: Mutex<File>,
}

impl Log {
    /// Creates the log, or appends to it when a run resumes (dropping a
    /// last record cut short by a crash).
    pub(crate) fn create(path: &Path, append: bool) -> Result<Log, EngineError> {
        if append && let Ok(bytes) = std::fs::read(path) {
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if whole < bytes.len() {
                let f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| EngineError::io(path, e))?;
                f.set_len(whole as u64).map_err(|e| EngineError::io(path, e))?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| EngineError::io(path, e))?;
        Ok(Log { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    /// Appends whole records.
    pub(crate) fn append(&self, bytes: &[u8]) -> Result<(), EngineError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut f = self.file.lock().expect("not poisoned");
        f.write_all(bytes).map_err(|e| EngineError::io(&self.path, e))
    }
}

/// A worker's recorder: buffers its records and keeps its statistics,
/// indexed by step (a stage and phase).
pub(crate) struct Recorder<'a> {
    log: &'a Log,
    buf: Vec<u8>,
    pub(crate) stats: Vec<StageStats>,
    /// Per step, its records' common start (see `write_head`), once known.
    heads: Vec<Vec<u8>>,
}

const FLUSH_AT: usize = 256 * 1024;

impl<'a> Recorder<'a> {
    pub(crate) fn new(log: &'a Log, steps: usize) -> Self {
        Recorder {
            log,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            stats: vec![StageStats::default(); steps],
            heads: vec![Vec::new(); steps],
        }
    }

    /// Records an invocation of step `step` (an index of a stage and phase).
    pub(crate) fn record(&mut self, step: usize, r: &InvocationRecord<'_>) -> Result<(), EngineError> {
        self.stats[step].add(r);
        let head = &mut self.heads[step];
        if head.is_empty() {
            r.write_head(head);
        }
        self.buf.extend_from_slice(head);
        r.write_rest(&mut self.buf);
        if self.buf.len() >= FLUSH_AT { self.flush() } else { Ok(()) }
    }

    /// Moves the records buffered so far to `out` (the journal's, which
    /// writes them before it journals the task they end with).
    pub(crate) fn take_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf);
        self.buf.clear();
    }

    pub(crate) fn flush(&mut self) -> Result<(), EngineError> {
        if !self.buf.is_empty() {
            self.log.append(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_written_as_serde_writes_them() {
        let mut r = InvocationRecord {
            stage: "count \"words\"\n",
            phase: "map",
            task: 7,
            attempt: 2,
            backup: false,
            worker: 1,
            container: 12,
            cold: true,
            queued_us: 5,
            started_us: 10,
            finished_us: u64::MAX,
            billed_us: 1000,
            status: "ok",
            error: None,
            bytes_in: 3,
            records_in: 0,
            bytes_out: 99,
            records_out: 1,
        };
        for (backup, error) in [(false, None), (true, Some("bad\tinput \u{1F600} \\"))] {
            r.backup = backup;
            r.error = error;
            r.status = if error.is_some() { "error" } else { "ok" };
            let mut ours = Vec::new();
            r.write_json(&mut ours);
            let mut want = serde_json::to_vec(&r).unwrap();
            want.push(b'\n');
            assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(want).unwrap());
        }
    }
}
