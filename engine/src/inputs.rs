//! The input files a run has read, each with its identity (size, and
//! modification time or ETag), kept in the run directory's `inputs.jsonl`
//! so that a resume can tell whether its input changed since: journaled
//! tasks hold outputs of the old bytes, and re-running the rest on new ones
//! would mix two inputs in one output. A resume whose input changed fails
//! before it runs anything, naming the files.
//!
//! Files are listed lazily, so the record is too: a line per file as it is
//! listed, before its splits, written through at once (it survives the
//! process's death) and fsync'ed when the run ends. The files a resume
//! checks are the recorded ones, a prefix of the listing: a file not yet
//! listed when the run stopped has no journaled task.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fanout_datasets::{Dataset, InputFile};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// The file of a run directory that lists its input files.
const FILE: &str = "inputs.jsonl";

/// One input file's identity, as recorded.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Identity {
    path: PathBuf,
    size: u64,
    version: String,
}

impl Identity {
    fn of(file: &InputFile) -> Identity {
        Identity { path: file.path.clone(), size: file.size, version: file.version.clone() }
    }
}

/// The record of a run's input files, appended to as they are listed.
pub(crate) struct Inputs {
    file: Mutex<Writer>,
}

struct Writer {
    file: File,
    path: PathBuf,
    /// Files listed so far in this attempt (the listing starts over on a
    /// resume; those already recorded are not written again).
    listed: u64,
    recorded: u64,
}

impl Inputs {
    /// Opens the record in `run_dir`: a new one, or on `resume` the one
    /// `check` read (`recorded` lines), to be extended.
    pub(crate) fn open(run_dir: &Path, resume: bool, recorded: u64) -> Result<Inputs, EngineError> {
        let path = run_dir.join(FILE);
        if resume {
            crate::lines::drop_torn_line(&path).map_err(|e| EngineError::io(&path, e))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.create(true);
        match resume {
            true => options.append(true),
            false => options.write(true).truncate(true),
        };
        let file = options.open(&path).map_err(|e| EngineError::io(&path, e))?;
        let recorded = if resume { recorded } else { 0 };
        Ok(Inputs { file: Mutex::new(Writer { file, path, listed: 0, recorded }) })
    }

    /// Notes that `file` is listed: one not recorded yet gets its line.
    pub(crate) fn listed(&self, file: &InputFile) -> Result<(), fanout_datasets::Error> {
        let mut w = self.file.lock().expect("not poisoned");
        w.listed += 1;
        if w.listed <= w.recorded {
            return Ok(());
        }
        let mut line = serde_json::to_vec(&Identity::of(file)).expect("an identity serializes");
        line.push(b'\n');
        let path = w.path.clone();
        w.file.write_all(&line).map_err(|e| fanout_datasets::Error::io(path, e))?;
        w.recorded += 1;
        Ok(())
    }

    /// Makes the record durable (the run ends, and may be resumed).
    pub(crate) fn sync(&self) -> Result<(), EngineError> {
        let w = self.file.lock().expect("not poisoned");
        w.file.sync_all().map_err(|e| EngineError::io(&w.path, e))
    }
}

/// Checks a resumed run's input against its record: every recorded file
/// must be listed again, in the same place, with the same size and
/// version. Returns how many files the record holds.
pub(crate) fn check(run_dir: &Path, dataset: &Dataset) -> Result<u64, EngineError> {
    let path = run_dir.join(FILE);
    let recorded: Vec<Identity> = match File::open(&path) {
        // A run directory of an earlier fanout, or of a run that listed
        // nothing: nothing to check.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(EngineError::io(&path, e)),
        // A torn last line (the run was killed writing it) is not a file.
        Ok(f) => BufReader::new(f).lines().map_while(Result::ok).map_while(|l| serde_json::from_str(&l).ok()).collect(),
    };
    // The listing now, as far as it reaches the recorded files: each
    // recorded file found again is compared; one not recorded that comes
    // before the last recorded one is new (it would shift the tasks after
    // it); a recorded one not found is gone.
    let mut left: std::collections::HashMap<&Path, &Identity> =
        recorded.iter().map(|r| (r.path.as_path(), r)).collect();
    let mut changed = Vec::new();
    let mut order = Vec::with_capacity(recorded.len());
    let mut files = dataset.files();
    while !left.is_empty() {
        let file = match files.next() {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                changed.push(e.to_string());
                break;
            }
            None => break,
        };
        let Some(old) = left.remove(file.path.as_path()) else {
            changed.push(format!("{} (new, listed before files the run read)", file.path.display()));
            continue;
        };
        let new = Identity::of(&file);
        if new.size != old.size {
            changed.push(format!("{} (was {} bytes, now {})", old.path.display(), old.size, new.size));
        } else if new.version != old.version {
            changed.push(format!("{} (modified)", old.path.display()));
        }
        order.push(file.path);
    }
    let mut gone: Vec<&Identity> = left.into_values().collect();
    gone.sort_by_key(|g| recorded.iter().position(|r| r.path == g.path));
    changed.extend(gone.iter().map(|g| format!("{} (no longer listed)", g.path.display())));
    if changed.is_empty() && !order.iter().eq(recorded.iter().map(|r| &r.path)) {
        changed.push("the files are listed in another order".to_string());
    }
    if changed.is_empty() {
        return Ok(recorded.len() as u64);
    }
    Err(EngineError::InputChanged(changed))
}
