//! Writing invocation records: a worker's records are kept column by
//! column ([`Columns`]: a few stores per invocation) and encoded, every
//! [`FLUSH_ROWS`] records or when the journal takes them, as one Arrow IPC
//! record batch message, appended whole to the run's file ([`Log`]).
//!
//! The text columns (stage, phase, status) are dictionary-encoded and the
//! buffers LZ4-compressed: about 18 bytes an invocation, for less CPU than
//! the JSON lines this replaced (zstd made them 8 bytes, but cost more than
//! a tiny task's whole dispatch: measured, see BENCHMARKS.md).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::{
    ArrayRef, BooleanArray, DictionaryArray, RecordBatch, StringArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_schema::ArrowError;

use super::{InvocationRecord, schema};
use crate::error::EngineError;
use crate::stats::StageStats;
use crate::step::StepKind;

/// Records a worker holds before it writes them.
const FLUSH_ROWS: usize = 4096;

/// Records held column by column, until written.
#[derive(Debug, Default)]
pub(crate) struct Columns {
    /// Per record, its step's index (see `Step::index`).
    step: Vec<u16>,
    task: Vec<u64>,
    attempt: Vec<u32>,
    backup: Vec<bool>,
    worker: Vec<u32>,
    container: Vec<u64>,
    cold: Vec<bool>,
    queued: Vec<u64>,
    started: Vec<u64>,
    finished: Vec<u64>,
    billed: Vec<u64>,
    /// The records that failed, and their errors (few).
    errors: Vec<(usize, String)>,
    bytes_in: Vec<u64>,
    records_in: Vec<u64>,
    bytes_out: Vec<u64>,
    records_out: Vec<u64>,
}

impl Columns {
    /// Records held.
    pub(crate) fn len(&self) -> usize {
        self.task.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.task.is_empty()
    }

    /// Adds a record of step `step`.
    pub(crate) fn push(&mut self, step: usize, r: &InvocationRecord<'_>) {
        if let Some(e) = r.error {
            self.errors.push((self.task.len(), e.to_string()));
        }
        self.step.push(step as u16);
        self.task.push(r.task);
        self.attempt.push(r.attempt);
        self.backup.push(r.backup);
        self.worker.push(r.worker as u32);
        self.container.push(r.container);
        self.cold.push(r.cold);
        self.queued.push(r.queued_us);
        self.started.push(r.started_us);
        self.finished.push(r.finished_us);
        self.billed.push(r.billed_us);
        self.bytes_in.push(r.bytes_in);
        self.records_in.push(r.records_in);
        self.bytes_out.push(r.bytes_out);
        self.records_out.push(r.records_out);
    }

    /// Moves `other`'s records to the end of these.
    pub(crate) fn append(&mut self, other: &mut Columns) {
        let at = self.len();
        self.errors.extend(other.errors.drain(..).map(|(row, e)| (row + at, e)));
        self.step.append(&mut other.step);
        self.task.append(&mut other.task);
        self.attempt.append(&mut other.attempt);
        self.backup.append(&mut other.backup);
        self.worker.append(&mut other.worker);
        self.container.append(&mut other.container);
        self.cold.append(&mut other.cold);
        self.queued.append(&mut other.queued);
        self.started.append(&mut other.started);
        self.finished.append(&mut other.finished);
        self.billed.append(&mut other.billed);
        self.bytes_in.append(&mut other.bytes_in);
        self.records_in.append(&mut other.records_in);
        self.bytes_out.append(&mut other.bytes_out);
        self.records_out.append(&mut other.records_out);
    }

    /// The records as a batch of [`schema`] (emptying these); the stage,
    /// phase and status columns index `dicts`.
    fn take_batch(&mut self, dicts: &Dictionaries) -> Result<RecordBatch, ArrowError> {
        let c = std::mem::take(self);
        let n = c.task.len();
        let steps = StepKind::ALL.len() as u16;
        let stage = UInt16Array::from_iter_values(c.step.iter().map(|s| s / steps));
        let phase = UInt8Array::from_iter_values(c.step.iter().map(|s| (s % steps) as u8));
        let mut status = vec![0u8; n];
        let mut errors: Vec<Option<String>> = vec![None; n];
        for (row, e) in c.errors {
            status[row] = 1;
            errors[row] = Some(e);
        }
        let stage: ArrayRef = Arc::new(DictionaryArray::try_new(stage, dicts.stages.clone())?);
        let phase: ArrayRef = Arc::new(DictionaryArray::try_new(phase, dicts.phases.clone())?);
        let status: ArrayRef = Arc::new(DictionaryArray::try_new(UInt8Array::from(status), dicts.statuses.clone())?);
        let u64s = |v: Vec<u64>| -> ArrayRef { Arc::new(UInt64Array::from(v)) };
        let columns: Vec<ArrayRef> = vec![
            stage,
            phase,
            u64s(c.task),
            Arc::new(UInt32Array::from(c.attempt)),
            Arc::new(BooleanArray::from(c.backup)),
            Arc::new(UInt32Array::from(c.worker)),
            u64s(c.container),
            Arc::new(BooleanArray::from(c.cold)),
            u64s(c.queued),
            u64s(c.started),
            u64s(c.finished),
            u64s(c.billed),
            status,
            Arc::new(StringArray::from(errors)),
            u64s(c.bytes_in),
            u64s(c.records_in),
            u64s(c.bytes_out),
            u64s(c.records_out),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}

/// The values the dictionary columns index: the run's stage names, the
/// phases, the statuses. Each encoder sends them once, before its first
/// records (the same values again: a reader takes them as a replacement).
pub(crate) struct Dictionaries {
    stages: ArrayRef,
    phases: ArrayRef,
    statuses: ArrayRef,
}

impl Dictionaries {
    /// For a run whose stages are named `stages`.
    fn new(stages: &[String]) -> Dictionaries {
        let text = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        Dictionaries {
            stages: text(stages.iter().map(String::as_str).collect()),
            phases: text(StepKind::ALL.iter().map(|k| k.name()).collect()),
            statuses: text(vec!["ok", "error"]),
        }
    }
}

/// Encodes record batch messages, keeping its compression context and
/// which dictionaries it has sent.
#[derive(Default)]
pub(crate) struct Encoder {
    context: IpcWriteContext,
    tracker: Option<DictionaryTracker>,
    bytes: Vec<u8>,
}

impl Encoder {
    /// `columns` (emptied) as IPC messages — the dictionaries, the first
    /// time, then one record batch — in the encoder's buffer.
    fn encode(&mut self, columns: &mut Columns, dicts: &Dictionaries) -> Result<&[u8], ArrowError> {
        let batch = columns.take_batch(dicts)?;
        let options = options()?;
        let generator = IpcDataGenerator::default();
        let tracker = match &mut self.tracker {
            Some(t) => t,
            None => {
                // The dictionary ids are those the stream's schema gave.
                let mut t = DictionaryTracker::new(false);
                generator.schema_to_bytes_with_dictionary_tracker(&schema(), &mut t, &options);
                self.tracker.insert(t)
            }
        };
        let (dictionaries, message) = generator.encode(&batch, tracker, &options, &mut self.context)?;
        self.bytes.clear();
        for d in dictionaries {
            arrow_ipc::writer::write_message(&mut self.bytes, d, &options)?;
        }
        arrow_ipc::writer::write_message(&mut self.bytes, message, &options)?;
        Ok(&self.bytes)
    }
}

fn options() -> Result<IpcWriteOptions, ArrowError> {
    IpcWriteOptions::default().try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))
}

/// The run's records file, shared by the workers.
pub(crate) struct Log {
    path: PathBuf,
    file: Mutex<File>,
    /// Each step's stage and phase, by step index.
    dicts: Dictionaries,
}

impl Log {
    /// Creates the file, or appends to it when a run resumes (dropping a
    /// last message cut short by a crash). `stages` are the run's stage
    /// names, in order.
    pub(crate) fn create(path: &Path, append: bool, stages: &[String]) -> Result<Log, EngineError> {
        let io = |e| EngineError::io(path, e);
        let whole = if append { whole_messages(path).map_err(io)? } else { None };
        let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(!append).open(path).map_err(io)?;
        match whole {
            Some(end) => {
                file.set_len(end).map_err(io)?;
                file.seek(SeekFrom::End(0)).map_err(io)?;
            }
            None => {
                // A new stream: its schema first (after anything a resumed
                // run's file held that was not a stream).
                if append {
                    file.set_len(0).map_err(io)?;
                }
                let mut head = Vec::new();
                let options = options().map_err(|e| EngineError::io(path, std::io::Error::other(e)))?;
                let w = arrow_ipc::writer::StreamWriter::try_new_with_options(&mut head, &schema(), options)
                    .map_err(|e| EngineError::io(path, std::io::Error::other(e)))?;
                drop(w);
                file.write_all(&head).map_err(io)?;
            }
        }
        Ok(Log { path: path.to_path_buf(), file: Mutex::new(file), dicts: Dictionaries::new(stages) })
    }

    /// Writes `columns` (emptied) as one message.
    pub(crate) fn write(&self, encoder: &mut Encoder, columns: &mut Columns) -> Result<(), EngineError> {
        if columns.is_empty() {
            return Ok(());
        }
        let arrow = |e| EngineError::io(&self.path, std::io::Error::other(e));
        let bytes = encoder.encode(columns, &self.dicts).map_err(arrow)?;
        self.file.lock().expect("not poisoned").write_all(bytes).map_err(|e| EngineError::io(&self.path, e))
    }
}

/// The length of the whole messages at the start of the stream at `path`
/// (a message cut short by a crash is not counted); `None` if the file
/// does not hold a stream's schema yet.
fn whole_messages(path: &Path) -> std::io::Result<Option<u64>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut at = 0u64;
    let mut schema_seen = false;
    loop {
        let mut prefix = [0u8; 8];
        if at + 8 > len || r.read_exact(&mut prefix).is_err() {
            break;
        }
        // A continuation marker, then the metadata's length.
        let meta_len = u32::from_le_bytes(prefix[4..].try_into().expect("4 bytes")) as u64;
        if prefix[..4] != [0xff; 4] || meta_len == 0 || at + 8 + meta_len > len {
            break;
        }
        let mut meta = vec![0u8; meta_len as usize];
        r.read_exact(&mut meta)?;
        let Ok(message) = arrow_ipc::root_as_message(&meta) else { break };
        let body = message.bodyLength().max(0) as u64;
        let end = at + 8 + meta_len + body;
        if end > len {
            break;
        }
        r.seek_relative(body as i64)?;
        at = end;
        schema_seen = true;
    }
    Ok(schema_seen.then_some(at))
}

/// A worker's recorder: keeps its records until it writes them, and its
/// statistics, indexed by step (a stage and phase).
pub(crate) struct Recorder<'a> {
    log: &'a Log,
    columns: Columns,
    encoder: Encoder,
    pub(crate) stats: Vec<StageStats>,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(log: &'a Log, steps: usize) -> Self {
        Recorder {
            log,
            columns: Columns::default(),
            encoder: Encoder::default(),
            stats: vec![StageStats::default(); steps],
        }
    }

    /// Records an invocation of step `step` (an index of a stage and phase).
    pub(crate) fn record(&mut self, step: usize, r: &InvocationRecord<'_>) -> Result<(), EngineError> {
        self.stats[step].add(r);
        self.columns.push(step, r);
        if self.columns.len() >= FLUSH_ROWS { self.flush() } else { Ok(()) }
    }

    /// Moves the records held so far to `out` (the journal's, which writes
    /// them before it journals the task they end with).
    pub(crate) fn take_into(&mut self, out: &mut Columns) {
        out.append(&mut self.columns);
    }

    pub(crate) fn flush(&mut self) -> Result<(), EngineError> {
        self.log.write(&mut self.encoder, &mut self.columns)
    }
}
