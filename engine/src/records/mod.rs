//! Invocation records: one per invocation, in `invocations.arrows` in the
//! run directory — an Arrow IPC stream, its buffers LZ4-compressed, which
//! pyarrow, Polars and DuckDB read as they are; [`read`] reads it back
//! (`fanout records RUN_DIR` prints it as JSON lines).
//!
//! Recording costs a few stores per invocation (see `writer.rs`): each
//! worker keeps its records column by column and writes them as one record
//! batch message every few thousand; the journal's syncer writes those of
//! journaled tasks. Messages are whole when appended; a message cut short
//! by a crash is dropped when the run resumes, and ignored by [`read`].

mod writer;

pub(crate) use writer::{Columns, Encoder, Log, Recorder};

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt8Type, UInt16Type, UInt32Type, UInt64Type};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::stats::StageStats;

/// The records' file in a run directory.
pub const FILE: &str = "invocations.arrows";

/// One invocation, as the engine records it.
#[derive(Debug, Clone)]
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

/// One invocation, as read back from a run directory. Serialized, it is
/// one line of `fanout records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The stage's name.
    pub stage: String,
    /// map, combine or reduce.
    pub phase: String,
    /// The task: a split index, or a partition.
    pub task: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// A backup invocation of a straggling task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backup: bool,
    /// The worker slot that ran it.
    pub worker: u32,
    /// The container.
    pub container: u64,
    /// Whether the container was started for this invocation.
    pub cold: bool,
    /// When the task was queued, in microseconds since the run started.
    pub queued_us: u64,
    /// When the invocation started.
    pub started_us: u64,
    /// When it finished.
    pub finished_us: u64,
    /// Its billed duration, in microseconds.
    pub billed_us: u64,
    /// ok or error.
    pub status: String,
    /// The error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Input bytes.
    pub bytes_in: u64,
    /// Input records.
    pub records_in: u64,
    /// Output bytes (in memory).
    pub bytes_out: u64,
    /// Output records.
    pub records_out: u64,
}

impl Record {
    /// The record as the engine's statistics take it.
    pub(crate) fn as_invocation(&self) -> InvocationRecord<'_> {
        InvocationRecord {
            stage: &self.stage,
            phase: phase_name(&self.phase),
            task: self.task,
            attempt: self.attempt,
            backup: self.backup,
            worker: self.worker as usize,
            container: self.container,
            cold: self.cold,
            queued_us: self.queued_us,
            started_us: self.started_us,
            finished_us: self.finished_us,
            billed_us: self.billed_us,
            status: if self.status == "ok" { "ok" } else { "error" },
            error: self.error.as_deref(),
            bytes_in: self.bytes_in,
            records_in: self.records_in,
            bytes_out: self.bytes_out,
            records_out: self.records_out,
        }
    }
}

impl From<&InvocationRecord<'_>> for Record {
    fn from(r: &InvocationRecord<'_>) -> Record {
        Record {
            stage: r.stage.to_string(),
            phase: r.phase.to_string(),
            task: r.task,
            attempt: r.attempt,
            backup: r.backup,
            worker: r.worker as u32,
            container: r.container,
            cold: r.cold,
            queued_us: r.queued_us,
            started_us: r.started_us,
            finished_us: r.finished_us,
            billed_us: r.billed_us,
            status: r.status.to_string(),
            error: r.error.map(str::to_string),
            bytes_in: r.bytes_in,
            records_in: r.records_in,
            bytes_out: r.bytes_out,
            records_out: r.records_out,
        }
    }
}

/// The schema of the records' file.
pub fn schema() -> SchemaRef {
    let u64 = |name| Field::new(name, DataType::UInt64, false);
    // Text from a short list: dictionary-encoded, its values sent once.
    let text_of = |name, key| Field::new(name, DataType::Dictionary(Box::new(key), Box::new(DataType::Utf8)), false);
    Arc::new(Schema::new(vec![
        text_of("stage", DataType::UInt16),
        text_of("phase", DataType::UInt8),
        u64("task"),
        Field::new("attempt", DataType::UInt32, false),
        Field::new("backup", DataType::Boolean, false),
        Field::new("worker", DataType::UInt32, false),
        u64("container"),
        Field::new("cold", DataType::Boolean, false),
        u64("queued_us"),
        u64("started_us"),
        u64("finished_us"),
        u64("billed_us"),
        text_of("status", DataType::UInt8),
        Field::new("error", DataType::Utf8, true),
        u64("bytes_in"),
        u64("records_in"),
        u64("bytes_out"),
        u64("records_out"),
    ]))
}

/// The records of the run in `run_dir`, in the order they were written
/// (by worker, not by time). A message cut short by a crash ends them.
pub fn read(run_dir: &Path) -> Result<Records, EngineError> {
    let path = run_dir.join(FILE);
    let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
    let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)
        .map_err(|e| EngineError::io(&path, std::io::Error::other(e)))?;
    Ok(Records { path, reader, batch: None, row: 0 })
}

/// An iterator over a run's records (see [`read`]).
pub struct Records {
    path: PathBuf,
    reader: arrow_ipc::reader::StreamReader<BufReader<File>>,
    batch: Option<RecordBatch>,
    row: usize,
}

impl Iterator for Records {
    type Item = Result<Record, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(b) = &self.batch
                && self.row < b.num_rows()
            {
                self.row += 1;
                return Some(Ok(row(b, self.row - 1)));
            }
            match self.reader.next()? {
                Ok(b) if b.schema().fields() == schema().fields() => {
                    self.batch = Some(b);
                    self.row = 0;
                }
                Ok(_) => {
                    let e = std::io::Error::other("not a file of invocation records (its columns differ)");
                    return Some(Err(EngineError::io(&self.path, e)));
                }
                // A message cut short by a crash: the records end there.
                Err(ArrowError::IoError(_, e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => return Some(Err(EngineError::io(&self.path, std::io::Error::other(e)))),
            }
        }
    }
}

/// Calls `f` with each record of the run in `run_dir`, in the order they
/// were written, without allocating per record: the way to read 10^6
/// records in a fraction of a second (a report, a trace). A message cut
/// short by a crash ends them, as with [`read`].
pub fn scan(run_dir: &Path, mut f: impl FnMut(&InvocationRecord<'_>)) -> Result<u64, EngineError> {
    let path = run_dir.join(FILE);
    let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
    let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)
        .map_err(|e| EngineError::io(&path, std::io::Error::other(e)))?;
    let mut n = 0;
    for b in reader {
        let b = match b {
            Ok(b) if b.schema().fields() == schema().fields() => b,
            Ok(_) => {
                let e = std::io::Error::other("not a file of invocation records (its columns differ)");
                return Err(EngineError::io(&path, e));
            }
            Err(ArrowError::IoError(_, e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(EngineError::io(&path, std::io::Error::other(e))),
        };
        let texts = |c: usize| -> (Vec<usize>, Vec<&str>) {
            let column = b.column(c);
            match column.as_dictionary_opt::<UInt16Type>() {
                Some(d) => (d.keys().values().iter().map(|&k| k as usize).collect(), strings(d.values())),
                None => {
                    let d = column.as_dictionary::<UInt8Type>();
                    (d.keys().values().iter().map(|&k| k as usize).collect(), strings(d.values()))
                }
            }
        };
        let (stage_keys, stages) = texts(0);
        let (phase_keys, phases) = texts(1);
        let (status_keys, statuses) = texts(12);
        let phases: Vec<&'static str> = phases.iter().map(|p| phase_name(p)).collect();
        let u64s = |c: usize| b.column(c).as_primitive::<UInt64Type>().values();
        let u32s = |c: usize| b.column(c).as_primitive::<UInt32Type>().values();
        let flags = |c: usize| b.column(c).as_boolean().clone();
        let (task, attempt, backup, worker, container, cold) = (u64s(2), u32s(3), flags(4), u32s(5), u64s(6), flags(7));
        let (queued, started, finished, billed) = (u64s(8), u64s(9), u64s(10), u64s(11));
        let error = b.column(13).as_string::<i32>();
        let (bytes_in, records_in, bytes_out, records_out) = (u64s(14), u64s(15), u64s(16), u64s(17));
        for i in 0..b.num_rows() {
            f(&InvocationRecord {
                stage: stages[stage_keys[i]],
                phase: phases[phase_keys[i]],
                task: task[i],
                attempt: attempt[i],
                backup: backup.value(i),
                worker: worker[i] as usize,
                container: container[i],
                cold: cold.value(i),
                queued_us: queued[i],
                started_us: started[i],
                finished_us: finished[i],
                billed_us: billed[i],
                status: if statuses[status_keys[i]] == "ok" { "ok" } else { "error" },
                error: arrow_array::Array::is_valid(error, i).then(|| error.value(i)),
                bytes_in: bytes_in[i],
                records_in: records_in[i],
                bytes_out: bytes_out[i],
                records_out: records_out[i],
            });
            n += 1;
        }
    }
    Ok(n)
}

/// A dictionary's values, as text.
fn strings(values: &arrow_array::ArrayRef) -> Vec<&str> {
    let s = values.as_string::<i32>();
    (0..arrow_array::Array::len(s)).map(|i| s.value(i)).collect()
}

/// A phase's name as the engine spells it.
fn phase_name(phase: &str) -> &'static str {
    match phase {
        "map" => "map",
        "combine" => "combine",
        _ => "reduce",
    }
}

/// Row `i` of a batch of [`schema`].
fn row(b: &RecordBatch, i: usize) -> Record {
    let text = |c: usize| {
        let column = b.column(c);
        let (key, values) = match column.as_dictionary_opt::<UInt16Type>() {
            Some(d) => (d.keys().value(i) as usize, d.values()),
            None => {
                let d = column.as_dictionary::<UInt8Type>();
                (d.keys().value(i) as usize, d.values())
            }
        };
        values.as_string::<i32>().value(key).to_string()
    };
    let u64 = |c: usize| b.column(c).as_primitive::<UInt64Type>().value(i);
    let u32 = |c: usize| b.column(c).as_primitive::<UInt32Type>().value(i);
    let flag = |c: usize| b.column(c).as_boolean().value(i);
    let error = b.column(13).as_string::<i32>();
    Record {
        stage: text(0),
        phase: text(1),
        task: u64(2),
        attempt: u32(3),
        backup: flag(4),
        worker: u32(5),
        container: u64(6),
        cold: flag(7),
        queued_us: u64(8),
        started_us: u64(9),
        finished_us: u64(10),
        billed_us: u64(11),
        status: text(12),
        error: arrow_array::Array::is_valid(error, i).then(|| error.value(i).to_string()),
        bytes_in: u64(14),
        records_in: u64(15),
        bytes_out: u64(16),
        records_out: u64(17),
    }
}

/// Adds the records an interrupted run left in `run_dir` to `stats`, at
/// the index `step` gives a (stage, phase); returns how many it read.
pub(crate) fn replay(
    run_dir: &Path,
    step: impl Fn(&str, &str) -> Option<usize>,
    stats: &mut [StageStats],
) -> Result<u64, EngineError> {
    if !run_dir.join(FILE).exists() {
        return Ok(0);
    }
    let mut n = 0;
    for r in read(run_dir)? {
        let r = r?;
        if let Some(i) = step(&r.stage, &r.phase) {
            stats[i].add(&r.as_invocation());
            n += 1;
        }
    }
    Ok(n)
}

/// Statistics are kept from the records: counting one here keeps the
/// statistics below the records they count.
impl StageStats {
    /// Counts one invocation.
    pub(crate) fn add(&mut self, r: &InvocationRecord<'_>) {
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["count \"words\"\n".to_string(), "total".to_string()]
    }

    pub(crate) fn record(task: u64, error: Option<&str>) -> InvocationRecord<'_> {
        InvocationRecord {
            stage: "ignored: the step names it",
            phase: "map",
            task,
            attempt: 2,
            backup: task % 2 == 1,
            worker: 1,
            container: 12,
            cold: task == 0,
            queued_us: 5,
            started_us: 10 + task,
            finished_us: u64::MAX,
            billed_us: 1000,
            status: if error.is_some() { "error" } else { "ok" },
            error,
            bytes_in: 3,
            records_in: 0,
            bytes_out: 99,
            records_out: 1,
        }
    }

    #[test]
    fn records_come_back_as_they_were_written_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        {
            let log = Log::create(&path, false, &names()).unwrap();
            let mut rec = Recorder::new(&log, 6);
            rec.record(0, &record(0, None)).unwrap();
            rec.record(4, &record(1, Some("bad\tinput \u{1F600} \\"))).unwrap();
            rec.flush().unwrap();
            rec.record(0, &record(2, None)).unwrap();
            rec.flush().unwrap();
        }
        let back: Vec<Record> = read(dir.path()).unwrap().map(Result::unwrap).collect();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].stage, "count \"words\"\n");
        assert_eq!(
            (back[1].stage.as_str(), back[1].phase.as_str(), back[1].status.as_str()),
            ("total", "combine", "error")
        );
        assert_eq!(back[1].error.as_deref(), Some("bad\tinput \u{1F600} \\"));
        assert_eq!((back[2].task, back[2].started_us, back[2].finished_us), (2, 12, u64::MAX));
        assert!(back[1].backup && !back[2].backup && back[0].cold);
        // scan gives the same records, borrowed.
        let mut scanned = Vec::new();
        let n = scan(dir.path(), |r| scanned.push(Record::from(r))).unwrap();
        assert_eq!((n, &scanned), (3, &back));
        // As JSON, a record is what invocations.jsonl used to hold.
        let json = serde_json::to_string(&back[0]).unwrap();
        assert_eq!(
            json,
            "{\"stage\":\"count \\\"words\\\"\\n\",\"phase\":\"map\",\"task\":0,\"attempt\":2,\"worker\":1,\
             \"container\":12,\"cold\":true,\"queued_us\":5,\"started_us\":10,\"finished_us\":18446744073709551615,\
             \"billed_us\":1000,\"status\":\"ok\",\"bytes_in\":3,\"records_in\":0,\"bytes_out\":99,\"records_out\":1}"
        );
        // A crash cuts the last message short: the reader stops before it,
        // and a resumed run's log drops it before appending.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 7).unwrap();
        assert_eq!(read(dir.path()).unwrap().count(), 2);
        {
            let log = Log::create(&path, true, &names()).unwrap();
            let mut rec = Recorder::new(&log, 6);
            rec.record(0, &record(7, None)).unwrap();
            rec.flush().unwrap();
        }
        let tasks: Vec<u64> = read(dir.path()).unwrap().map(|r| r.unwrap().task).collect();
        assert_eq!(tasks, [0, 1, 7]);
    }

    #[test]
    fn a_record_takes_few_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let log = Log::create(&path, false, &names()).unwrap();
        let mut rec = Recorder::new(&log, 6);
        let n = 100_000u64;
        for task in 0..n {
            // Two workers' tasks interleaved in groups, microsecond times.
            let mut r = record(task ^ 32, None);
            r.started_us = task * 7;
            r.finished_us = task * 7 + 3;
            r.queued_us = task * 7 - task.min(2);
            r.cold = false;
            r.backup = false;
            rec.record((task % 2) as usize, &r).unwrap();
        }
        rec.flush().unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(bytes < 20 * n, "{} bytes a record", bytes as f64 / n as f64);
        assert_eq!(read(dir.path()).unwrap().count() as u64, n);
    }
}
