//! Bad input records under a job's `on_bad_record` policy: counted as the
//! tasks that read them are decided, held to `max_bad_records` (a count at
//! once, a percentage once the input is read), and with `reject` written
//! to `rejects.jsonl` in the run directory, a line each.
//!
//! A task's rejects are written when a run decides the task, before it is
//! journaled: a task's backup or retry reads the same split, and its
//! rejects are written once. A resumed run keeps the rejects of the tasks
//! its journal holds and drops the others' (those tasks run again and
//! write them again), so each reject is listed exactly once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use fanout_datasets::{BadRecord, BadRecords, OnBadRecord};

use crate::error::EngineError;

/// The rejects file's name in the run directory.
pub(crate) const REJECTS: &str = "rejects.jsonl";

/// A run's bad input records.
pub(super) struct BadInput {
    policy: BadRecords,
    /// Records skipped or rejected, resumed tasks' included.
    count: AtomicU64,
    /// The rejects file, when rejecting.
    rejects: Option<(PathBuf, Mutex<std::fs::File>)>,
    /// The last bad record seen, for the error past the limit.
    last: Mutex<Option<String>>,
}

impl BadInput {
    /// The bad input of the run in `run_dir` under `policy`. With
    /// `reject`, the rejects file is created; a resumed run keeps the
    /// lines of the tasks that `journaled` says are done.
    pub(super) fn open(
        run_dir: &Path,
        resume: bool,
        policy: BadRecords,
        journaled: impl Fn(u64) -> bool,
    ) -> Result<BadInput, EngineError> {
        let path = run_dir.join(REJECTS);
        let rejects = match policy.on_bad {
            OnBadRecord::Reject => {
                let kept = if resume { kept_lines(&path, journaled)? } else { Vec::new() };
                // Written whole and renamed: a crash now leaves the old file.
                let tmp = run_dir.join(format!("{REJECTS}.tmp"));
                std::fs::write(&tmp, &kept).map_err(|e| EngineError::io(&tmp, e))?;
                std::fs::rename(&tmp, &path).map_err(|e| EngineError::io(&path, e))?;
                let file =
                    std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| EngineError::io(&path, e))?;
                Some((path, Mutex::new(file)))
            }
            _ => {
                let _ = std::fs::remove_file(&path);
                None
            }
        };
        Ok(BadInput { policy, count: AtomicU64::new(0), rejects, last: Mutex::new(None) })
    }

    /// The rejects file, when rejecting.
    pub(super) fn rejects_path(&self) -> Option<&Path> {
        self.rejects.as_ref().map(|(p, _)| p.as_path())
    }

    /// Bad records so far.
    pub(super) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Counts the bad records of a task taken from the journal.
    pub(super) fn resumed(&self, records: u64) {
        self.count.fetch_add(records, Relaxed);
    }

    /// Task `task` was decided with these bad records: they are counted,
    /// and written to the rejects file when rejecting. An error when they
    /// take the count past `max_bad_records`.
    pub(super) fn decided(&self, task: u64, bad: &[BadRecord]) -> Result<(), EngineError> {
        let Some(last) = bad.last() else { return Ok(()) };
        if let Some((path, file)) = &self.rejects {
            let mut lines = Vec::new();
            for b in bad {
                b.write_json(task, &mut lines);
            }
            file.lock().expect("not poisoned").write_all(&lines).map_err(|e| EngineError::io(path, e))?;
        }
        *self.last.lock().expect("not poisoned") = Some(last.to_string());
        let n: u64 = bad.iter().map(|b| b.records).sum();
        let count = self.count.fetch_add(n, Relaxed) + n;
        match self.policy.max {
            Some(max @ fanout_datasets::MaxBad::Count(_)) if max.exceeded(count, count) => Err(self.too_many(count)),
            _ => Ok(()),
        }
    }

    /// The input is read, `good` records of it: an error when the bad ones
    /// are past a percentage limit.
    pub(super) fn input_read(&self, good: u64) -> Option<EngineError> {
        let count = self.count();
        let max = self.policy.max?;
        max.exceeded(count, count + good).then(|| self.too_many(count))
    }

    fn too_many(&self, count: u64) -> EngineError {
        EngineError::TooManyBadRecords {
            count,
            limit: self.policy.max.map(|m| m.to_string()).unwrap_or_default(),
            last: self.last.lock().expect("not poisoned").clone().unwrap_or_default(),
            rejects: self.rejects_path().map(Path::to_path_buf),
        }
    }

    /// The run is over: the rejects file reaches the disk.
    pub(super) fn finish(&self) -> Result<(), EngineError> {
        if let Some((path, file)) = &self.rejects {
            file.lock().expect("not poisoned").sync_all().map_err(|e| EngineError::io(path, e))?;
        }
        Ok(())
    }
}

/// The lines of the rejects file at `path` whose task `journaled` says is
/// done (a line cut short by a crash is dropped).
fn kept_lines(path: &Path, journaled: impl Fn(u64) -> bool) -> Result<Vec<u8>, EngineError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    #[derive(serde::Deserialize)]
    struct Task {
        task: u64,
    }
    let mut kept = Vec::with_capacity(text.len());
    for line in text.split_inclusive(|&b| b == b'\n').filter(|l| l.ends_with(b"\n")) {
        if serde_json::from_slice::<Task>(line).is_ok_and(|t| journaled(t.task)) {
            kept.extend_from_slice(line);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_datasets::{Location, MaxBad};

    fn bad(line: u64) -> BadRecord {
        BadRecord {
            path: "in.csv".into(),
            location: Location { line: Some(line), byte: line * 10 },
            len: 4,
            raw: b"x,y\n".to_vec(),
            range: None,
            records: 1,
            error: "wrong number of fields".into(),
        }
    }

    #[test]
    fn a_resumed_run_keeps_the_rejects_of_journaled_tasks_only() {
        let dir = tempfile::tempdir().unwrap();
        let policy = BadRecords { on_bad: OnBadRecord::Reject, max: Some(MaxBad::Count(3)), ..Default::default() };
        let first = BadInput::open(dir.path(), false, policy, |_| false).unwrap();
        first.decided(1, &[bad(2)]).unwrap();
        first.decided(2, &[bad(5), bad(6)]).unwrap();
        drop(first);
        // A torn last line, as a crash leaves it.
        let path = dir.path().join(REJECTS);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"task\":3,").unwrap();
        let again = BadInput::open(dir.path(), true, policy, |t| t == 2).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let tasks: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["task"].as_u64().unwrap())
            .collect();
        assert_eq!(tasks, [2, 2]);
        again.resumed(2);
        again.decided(4, &[bad(9)]).unwrap();
        let err = again.decided(5, &[bad(12)]).unwrap_err().to_string();
        assert!(err.contains("4 bad input records, more than max_bad_records = 3"), "{err}");
        assert!(err.contains("in.csv: line 12 (byte 120): wrong number of fields"), "{err}");
    }

    #[test]
    fn a_percentage_is_checked_when_the_input_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let policy = BadRecords { on_bad: OnBadRecord::Skip, max: Some(MaxBad::Fraction(0.1)), ..Default::default() };
        let b = BadInput::open(dir.path(), false, policy, |_| false).unwrap();
        b.decided(0, &[bad(1), bad(2)]).unwrap();
        assert!(b.input_read(18).is_none());
        assert!(b.input_read(17).is_some());
        assert!(!dir.path().join(REJECTS).exists());
    }
}
