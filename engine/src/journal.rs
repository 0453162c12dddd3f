//! The journal: an append-only, fsync'ed record of completed tasks, each
//! with its output saved beside it (an Arrow IPC file and its checksum), so
//! that `fanout run --resume RUN_DIR` after a crash or `kill -9` redoes only
//! the tasks that were not finished, and produces the same output.
//!
//! A task's output file is written and renamed into place by the worker;
//! a syncer thread then fsyncs it and only then appends and fsyncs its
//! journal line (in groups: one journal fsync covers every task finished
//! meanwhile), so a journal line always names a complete, durable file and
//! the fsyncs stay off the workers' path. A task finished but not yet
//! journaled when the process dies is redone. A torn last line (a crash
//! mid-append) is ignored, and its task is redone.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// One completed task.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    phase: usize,
    task: u64,
    file: String,
    xxh3: String,
    rows: u64,
}

/// The journal of a run directory.
pub(crate) struct Journal {
    dir: PathBuf,
    done: HashMap<(usize, u64), Entry>,
    /// To the syncer: a saved output file and its entry.
    queue: Mutex<Option<crossbeam_channel::Sender<(PathBuf, Entry)>>>,
    syncer: Mutex<Option<std::thread::JoinHandle<Result<(), EngineError>>>>,
}

fn checksum(path: &Path) -> std::io::Result<String> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut f = File::open(path)?;
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(format!("{:016x}", h.digest()));
        }
        h.update(&buf[..n]);
    }
}

impl Journal {
    /// Opens `run_dir`'s journal; with `resume`, reads the tasks it holds.
    pub(crate) fn open(run_dir: &Path, resume: bool) -> Result<Journal, EngineError> {
        let path = run_dir.join("journal.jsonl");
        let dir = run_dir.join("tasks");
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        let mut done = HashMap::new();
        if resume && path.exists() {
            let f = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| EngineError::io(&path, e))?;
                // A torn last line is a task to redo.
                if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                    done.insert((e.phase, e.task), e);
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| EngineError::io(&path, e))?;
        let (tx, rx) = crossbeam_channel::unbounded::<(PathBuf, Entry)>();
        let syncer = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || sync_loop(rx, file, path))
            .map_err(|e| EngineError::io(run_dir, e))?;
        Ok(Journal { dir, done, queue: Mutex::new(Some(tx)), syncer: Mutex::new(Some(syncer)) })
    }

    /// Waits until every recorded task is journaled; reports a sync error.
    pub(crate) fn finish(&self) -> Result<(), EngineError> {
        drop(self.queue.lock().expect("not poisoned").take());
        match self.syncer.lock().expect("not poisoned").take() {
            Some(h) => {
                h.join().unwrap_or_else(|_| Err(EngineError::io(&self.dir, std::io::Error::other("journal panicked"))))
            }
            None => Ok(()),
        }
    }

    /// The saved output of task `task` of phase `phase`, if an earlier run
    /// completed it (its checksum verified).
    pub(crate) fn completed(&self, phase: usize, task: u64) -> Result<Option<Vec<RecordBatch>>, EngineError> {
        let Some(e) = self.done.get(&(phase, task)) else { return Ok(None) };
        let path = self.dir.join(&e.file);
        let io = |err| EngineError::io(&path, err);
        if checksum(&path).map_err(io)? != e.xxh3 {
            return Err(io(std::io::Error::other("checksum mismatch: the saved task output is damaged")));
        }
        let arrow = |err: arrow_schema::ArrowError| EngineError::io(&path, std::io::Error::other(err));
        let reader = arrow_ipc::reader::FileReader::try_new(File::open(&path).map_err(io)?, None).map_err(arrow)?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(arrow)?;
        Ok(Some(batches))
    }

    /// Saves a completed task's output and journals it.
    pub(crate) fn record(
        &self,
        phase: usize,
        task: u64,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(), EngineError> {
        let name = format!("p{phase}-t{task}.arrow");
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| EngineError::io(&p, e)
        };
        let arrow = |e: arrow_schema::ArrowError| EngineError::io(&tmp, std::io::Error::other(e));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = arrow_ipc::writer::FileWriter::try_new(BufWriter::new(file), schema).map_err(arrow)?;
        for b in batches {
            w.write(b).map_err(arrow)?;
        }
        w.finish().map_err(arrow)?;
        let file = w.into_inner().map_err(arrow)?.into_inner().map_err(|e| EngineError::io(&tmp, e.into_error()))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        let entry = Entry {
            phase,
            task,
            file: name,
            xxh3: checksum(&path).map_err(io(&path))?,
            rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
        };
        if let Some(q) = self.queue.lock().expect("not poisoned").as_ref() {
            let _ = q.send((path, entry));
        }
        Ok(())
    }
}

/// The syncer: fsyncs saved outputs, then journals them, a group at a time.
fn sync_loop(
    rx: crossbeam_channel::Receiver<(PathBuf, Entry)>,
    mut journal: File,
    path: PathBuf,
) -> Result<(), EngineError> {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let mut lines = Vec::new();
        for (file, entry) in &group {
            File::open(file).and_then(|f| f.sync_all()).map_err(|e| EngineError::io(file, e))?;
            lines.extend(serde_json::to_vec(entry).expect("serializes"));
            lines.push(b'\n');
        }
        journal.write_all(&lines).and_then(|()| journal.sync_data()).map_err(|e| EngineError::io(&path, e))?;
    }
    Ok(())
}
