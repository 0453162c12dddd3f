//! The journal: an append-only, fsync'ed record of completed tasks, each
//! with its output saved beside it (an Arrow IPC file and its checksum), so
//! that `fanout run --resume RUN_DIR` after a crash or `kill -9` redoes only
//! the tasks that were not finished, and produces the same output.
//!
//! A task's output file is written, fsync'ed and renamed into place before
//! its journal line is appended and fsync'ed: a journal line always names
//! a complete file. A torn last line (a crash mid-append) is ignored, and
//! its task is redone.

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
    path: PathBuf,
    file: Mutex<File>,
    done: HashMap<(usize, u64), Entry>,
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
        Ok(Journal { dir, path, file: Mutex::new(file), done })
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
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        let entry = Entry {
            phase,
            task,
            file: name,
            xxh3: checksum(&path).map_err(io(&path))?,
            rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
        };
        let mut line = serde_json::to_vec(&entry).expect("serializes");
        line.push(b'\n');
        let mut f = self.file.lock().expect("not poisoned");
        f.write_all(&line).map_err(io(&self.path))?;
        f.sync_data().map_err(io(&self.path))
    }
}
