//! Tasks that failed for good: whether the job tolerates them
//! (`tolerated_failure_count` at once, `tolerated_failure_percent` when
//! the phase ends), and `failures.jsonl`, which lists them as they fail so
//! that a run killed later still reports them when resumed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{EngineError, TaskFailure};
use crate::policy::{tolerated_so_far, too_many};
use crate::step::StepKind;

/// The failed tasks of a run.
pub(super) struct Failures {
    /// Every task that failed for good, tolerated or not.
    list: Mutex<Vec<TaskFailure>>,
    /// Failed tasks of the phase running now.
    phase: AtomicU64,
    /// Where they are listed.
    path: PathBuf,
    count: Option<u64>,
    percent: Option<f64>,
}

impl Failures {
    /// The failures of the run in `run_dir`, tolerated up to `count` and
    /// `percent` (the platform's settings): none for a new run; for a
    /// resumed one, those of its tasks that `journaled` says are done (a
    /// failed task that was journaled was tolerated, and stays failed; one
    /// that was not runs again, and counts only if it fails again).
    pub(super) fn open(
        run_dir: &Path,
        resume: bool,
        (count, percent): (Option<u64>, Option<f64>),
        journaled: impl Fn(&TaskFailure) -> bool,
    ) -> Result<Failures, EngineError> {
        let path = run_dir.join("failures.jsonl");
        let mut list = Vec::new();
        if resume {
            crate::lines::drop_torn_line(&path).map_err(|e| EngineError::io(&path, e))?;
            list = read(&path)?;
            list.retain(|f| journaled(f));
        } else {
            let _ = std::fs::remove_file(&path);
        }
        Ok(Failures { list: Mutex::new(list), phase: AtomicU64::new(0), path, count, percent })
    }

    /// A phase starts; `in_phase` says whether a failure belongs to it.
    pub(super) fn begin_phase(&self, in_phase: impl Fn(&TaskFailure) -> bool) {
        let earlier = self.list.lock().expect("not poisoned").iter().filter(|f| in_phase(f)).count();
        self.phase.store(earlier as u64, Relaxed);
    }

    /// Records a failed task; whether the job tolerates it (so far: the
    /// percentage is checked when the phase ends).
    pub(super) fn tolerate(&self, f: &TaskFailure) -> bool {
        self.list.lock().expect("not poisoned").push(f.clone());
        // Listed at once, so that a run killed later still reports it when
        // resumed (the list is rewritten whole at the end).
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, line(f).as_bytes()));
        let failed = self.phase.fetch_add(1, Relaxed) + 1;
        tolerated_so_far(failed, self.count, self.percent)
    }

    /// The phase of `tasks` tasks ended: an error if more failed than the
    /// percentage tolerates.
    pub(super) fn end_phase(&self, tasks: u64) -> Option<EngineError> {
        let failed = self.phase.load(Relaxed);
        let percent = self.percent?;
        too_many(failed, tasks, percent).then_some(EngineError::TooManyFailures { failed, tasks, percent })
    }

    /// The run is over: the failed tasks (the last failure of each), also
    /// written to `failures.jsonl` (removed when there are none).
    pub(super) fn finish(&self) -> Result<Vec<TaskFailure>, EngineError> {
        let failures = dedupe(std::mem::take(&mut *self.list.lock().expect("not poisoned")));
        if failures.is_empty() {
            // A resumed run whose failed tasks all succeeded this time.
            let _ = std::fs::remove_file(&self.path);
        } else {
            let lines: String = failures.iter().map(line).collect();
            std::fs::write(&self.path, lines).map_err(|e| EngineError::io(&self.path, e))?;
        }
        Ok(failures)
    }
}

/// The failed tasks an interrupted run listed in `path`.
fn read(path: &Path) -> Result<Vec<TaskFailure>, EngineError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    let mut out = Vec::new();
    for line in text.lines() {
        // A line cut short by a crash is left out.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        out.push(TaskFailure {
            stage: text("stage"),
            phase: v["phase"].as_str().and_then(StepKind::parse).unwrap_or(StepKind::Map),
            task: v["task"].as_u64().unwrap_or_default(),
            attempt: v["attempts"].as_u64().unwrap_or_default() as u32,
            input: text("input"),
            message: text("error"),
        });
    }
    Ok(dedupe(out))
}

/// One line of `failures.jsonl`.
fn line(f: &TaskFailure) -> String {
    let v = serde_json::json!({
        "stage": f.stage, "phase": f.phase.name(), "task": f.task, "input": f.input,
        "attempts": f.attempt, "error": f.message,
    });
    format!("{v}\n")
}

/// Keeps the last failure of each task.
fn dedupe(failures: Vec<TaskFailure>) -> Vec<TaskFailure> {
    let mut last = std::collections::HashMap::new();
    for (i, f) in failures.iter().enumerate() {
        last.insert((f.stage.clone(), f.phase, f.task), i);
    }
    failures
        .into_iter()
        .enumerate()
        .filter(|(i, f)| last[&(f.stage.clone(), f.phase, f.task)] == *i)
        .map(|(_, f)| f)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(task: u64, message: &str) -> TaskFailure {
        TaskFailure {
            stage: "s".into(),
            phase: StepKind::Map,
            task,
            attempt: 3,
            input: "in.txt bytes 0..4".into(),
            message: message.into(),
        }
    }

    #[test]
    fn failures_are_listed_as_they_come_and_thresholds_hold() {
        let dir = tempfile::tempdir().unwrap();
        let tolerated = (Some(1), Some(10.0));
        let f = Failures::open(dir.path(), false, tolerated, |_| true).unwrap();
        f.begin_phase(|_| true);
        assert!(f.tolerate(&failure(3, "first")));
        assert_eq!(std::fs::read_to_string(dir.path().join("failures.jsonl")).unwrap().lines().count(), 1);
        assert!(!f.tolerate(&failure(5, "second")), "two are more than the count of 1");
        assert!(f.end_phase(10).is_some(), "2 of 10 is more than 10%");
        assert!(f.end_phase(20).is_none());
        // A resumed run keeps only the failures of tasks it will not run again.
        let resumed = Failures::open(dir.path(), true, tolerated, |t| t.task == 3).unwrap();
        let kept = resumed.finish().unwrap();
        assert_eq!(kept, vec![failure(3, "first")]);
        let again = Failures::open(dir.path(), true, tolerated, |_| false).unwrap();
        assert!(again.finish().unwrap().is_empty());
        assert!(!dir.path().join("failures.jsonl").exists());
    }

    #[test]
    fn a_line_cut_short_is_dropped_before_lines_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines");
        for (before, after) in [("a\nb\n", "a\nb\n"), ("a\nb\n{\"cut", "a\nb\n"), ("{\"cut", ""), ("", "")] {
            std::fs::write(&path, before).unwrap();
            crate::lines::drop_torn_line(&path).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{before:?}");
        }
        // Longer than the block it looks back in.
        let long = format!("x\n{}", "y".repeat(200_000));
        std::fs::write(&path, long).unwrap();
        crate::lines::drop_torn_line(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x\n");
        crate::lines::drop_torn_line(&dir.path().join("absent")).unwrap();
    }

    #[test]
    fn the_last_failure_of_a_task_is_kept() {
        let kept = dedupe(vec![failure(1, "a"), failure(2, "b"), failure(1, "c")]);
        assert_eq!(kept, vec![failure(2, "b"), failure(1, "c")]);
    }
}
