//! The journal: an append-only, fsync'ed record of completed tasks with
//! their outputs, so that `fanout run --resume RUN_DIR` after a crash or
//! `kill -9` redoes only the tasks that were not finished, and produces the
//! same output.
//!
//! Two files in the run directory: `tasks.data`, the task outputs as Arrow
//! IPC streams one after another, and `journal.jsonl`, a line per task
//! naming its bytes in `tasks.data` and their checksum. A syncer thread
//! takes finished tasks from the workers in groups, appends their outputs,
//! fsyncs the data, then appends their lines and fsyncs the journal: two
//! fsyncs per group however many tasks it holds, all off the workers' path,
//! and a journal line never names bytes that are not on disk. Groups are
//! paced ([`SYNC_INTERVAL`] at least between them), so that tiny tasks
//! share their fsyncs and a worker handing a task over never has to wake
//! the syncer. A task
//! finished but not yet journaled when the process dies is redone; a torn
//! last line is ignored.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Cursor, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::metrics::Log;

/// The least time between two groups.
const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

/// One completed task.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    phase: usize,
    task: u64,
    /// Where its output is in `tasks.data`.
    offset: u64,
    len: u64,
    xxh3: String,
    rows: u64,
}

/// A finished task on its way to the syncer.
struct Pending {
    phase: usize,
    task: u64,
    bytes: Vec<u8>,
    rows: u64,
    /// Invocation records (JSON lines) of the worker's, up to this task's:
    /// they reach the log before the task is journaled.
    records: Vec<u8>,
}

/// The journal of a run directory.
pub(crate) struct Journal {
    data_path: PathBuf,
    /// Tasks completed by earlier runs.
    done: HashMap<(usize, u64), Entry>,
    queue: Mutex<Option<crossbeam_channel::Sender<Pending>>>,
    syncer: Mutex<Option<std::thread::JoinHandle<Result<(), EngineError>>>>,
    /// Tells the syncer to drop what is left instead of syncing it.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Journal {
    /// Opens `run_dir`'s journal; with `resume`, reads the tasks it holds.
    pub(crate) fn open(run_dir: &Path, resume: bool, log: Arc<Log>) -> Result<Journal, EngineError> {
        let path = run_dir.join("journal.jsonl");
        let data_path = run_dir.join("tasks.data");
        let mut done = HashMap::new();
        if resume && path.exists() {
            let f = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| EngineError::io(&path, e))?;
                if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                    done.insert((e.phase, e.task), e);
                }
            }
        }
        let append = |p: &Path| {
            OpenOptions::new().create(true).append(true).truncate(false).open(p).map_err(|e| EngineError::io(p, e))
        };
        let journal = append(&path)?;
        let data = append(&data_path)?;
        let (tx, rx) = crossbeam_channel::unbounded::<Pending>();
        let dp = data_path.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let syncer = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || sync_loop(rx, data, dp, journal, path, &log, &halt))
            .map_err(|e| EngineError::io(run_dir, e))?;
        Ok(Journal { data_path, done, queue: Mutex::new(Some(tx)), syncer: Mutex::new(Some(syncer)), stop })
    }

    /// Ends the journal and reports a sync error. With `all_done` (every
    /// task finished, so nothing will be resumed) what is still queued is
    /// dropped rather than synced; otherwise it waits until every recorded
    /// task is journaled.
    pub(crate) fn finish(&self, all_done: bool) -> Result<(), EngineError> {
        self.stop.store(all_done, std::sync::atomic::Ordering::Relaxed);
        drop(self.queue.lock().expect("not poisoned").take());
        match self.syncer.lock().expect("not poisoned").take() {
            Some(h) => {
                h.thread().unpark();
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::io(&self.data_path, std::io::Error::other("journal panicked")))
                })
            }
            None => Ok(()),
        }
    }

    /// The saved output of task `task` of phase `phase`, if an earlier run
    /// completed it (its checksum verified).
    pub(crate) fn completed(&self, phase: usize, task: u64) -> Result<Option<Vec<RecordBatch>>, EngineError> {
        let Some(e) = self.done.get(&(phase, task)) else { return Ok(None) };
        let path = &self.data_path;
        let io = |err| EngineError::io(path, err);
        let mut bytes = vec![0; e.len as usize];
        File::open(path).and_then(|f| f.read_exact_at(&mut bytes, e.offset)).map_err(io)?;
        if format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)) != e.xxh3 {
            return Err(io(std::io::Error::other(format!("task {task}: checksum mismatch in the saved output"))));
        }
        let arrow = |err: arrow_schema::ArrowError| EngineError::io(path, std::io::Error::other(err));
        let reader = arrow_ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).map_err(arrow)?;
        Ok(Some(reader.collect::<Result<Vec<_>, _>>().map_err(arrow)?))
    }

    /// Hands a completed task's output to the syncer.
    pub(crate) fn record(
        &self,
        phase: usize,
        task: u64,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        records: Vec<u8>,
    ) -> Result<(), EngineError> {
        let arrow = |e: arrow_schema::ArrowError| EngineError::io(&self.data_path, std::io::Error::other(e));
        let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(arrow)?;
        for b in batches {
            w.write(b).map_err(arrow)?;
        }
        w.finish().map_err(arrow)?;
        let bytes = w.into_inner().map_err(arrow)?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        if let Some(q) = self.queue.lock().expect("not poisoned").as_ref() {
            let _ = q.send(Pending { phase, task, bytes, rows, records });
        }
        Ok(())
    }
}

/// The syncer: appends outputs, fsyncs, then journals them, a group at a
/// time.
fn sync_loop(
    rx: crossbeam_channel::Receiver<Pending>,
    mut data: File,
    data_path: PathBuf,
    mut journal: File,
    path: PathBuf,
    log: &Log,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), EngineError> {
    let mut offset = data.metadata().map_err(|e| EngineError::io(&data_path, e))?.len();
    // Buffers kept across groups.
    let (mut records, mut lines, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    let mut held = None;
    loop {
        // What finishes meanwhile joins the group; `finish` unparks.
        std::thread::park_timeout(SYNC_INTERVAL);
        let first = match held.take().map_or_else(|| rx.try_recv(), Ok) {
            Ok(p) => p,
            Err(crossbeam_channel::TryRecvError::Empty) => continue,
            Err(crossbeam_channel::TryRecvError::Disconnected) => return Ok(()),
        };
        let group: Vec<Pending> = std::iter::once(first).chain(rx.try_iter()).collect();
        records.clear();
        for p in &group {
            records.extend_from_slice(&p.records);
        }
        log.append(&records)?;
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            // Nothing more to journal; the records still belong in the log.
            for p in rx.try_iter() {
                log.append(&p.records)?;
            }
            return Ok(());
        }
        lines.clear();
        bytes.clear();
        for p in group {
            let entry = Entry {
                phase: p.phase,
                task: p.task,
                offset: offset + bytes.len() as u64,
                len: p.bytes.len() as u64,
                xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&p.bytes)),
                rows: p.rows,
            };
            bytes.extend_from_slice(&p.bytes);
            lines.extend(serde_json::to_vec(&entry).expect("serializes"));
            lines.push(b'\n');
        }
        data.write_all(&bytes).and_then(|()| data.sync_data()).map_err(|e| EngineError::io(&data_path, e))?;
        offset += bytes.len() as u64;
        journal.write_all(&lines).and_then(|()| journal.sync_data()).map_err(|e| EngineError::io(&path, e))?;
        match rx.try_recv() {
            Ok(p) => held = Some(p),
            Err(crossbeam_channel::TryRecvError::Empty) => {}
            Err(crossbeam_channel::TryRecvError::Disconnected) => return Ok(()),
        }
    }
}
