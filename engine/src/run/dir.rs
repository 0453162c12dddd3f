//! The run directory: `.fanout/runs/<id>` or one given, holding the
//! resolved job (`job.json`), the invocation records, the journal, the
//! failed tasks and the summary. A run that succeeded is not run again; one
//! that failed or was interrupted may be resumed.

use std::path::{Path, PathBuf};

use fanout_jobs::JobFile;

use crate::error::EngineError;
use crate::summary::Summary;

/// A run's directory and id.
pub(crate) struct RunDir {
    /// The run's id: the directory's name, the same when the run resumes
    /// (so its staging directory is the same too).
    pub(crate) id: String,
    pub(crate) path: PathBuf,
}

impl RunDir {
    /// `.fanout/runs/<UTC time>-<pid>`, or the given directory; with
    /// `resume`, the directory of the run to resume.
    pub(crate) fn create(given: Option<&Path>, resume: bool) -> Result<RunDir, EngineError> {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(['-', ':'], "");
        let path = match given {
            Some(d) => d.to_path_buf(),
            None => PathBuf::from(".fanout/runs").join(format!("{stamp}-{}", std::process::id())),
        };
        if resume && !path.join("job.json").is_file() {
            return Err(EngineError::io(&path, std::io::Error::other("not a run directory (no job.json)")));
        }
        let id = path.file_name().map_or_else(|| stamp.clone(), |n| n.to_string_lossy().into_owned());
        // A run that failed or was interrupted may be resumed (its failed
        // tasks run again); one that succeeded is not run again.
        if !resume && path.join("summary.json").exists() {
            let e = std::io::Error::other("this run directory already holds a finished run");
            return Err(EngineError::io(&path, e));
        }
        std::fs::create_dir_all(&path).map_err(|e| EngineError::io(&path, e))?;
        Ok(RunDir { id, path })
    }

    /// Keeps the resolved job, for `--resume`.
    pub(crate) fn write_job(&self, job: &JobFile) -> Result<(), EngineError> {
        let path = self.path.join("job.json");
        let json = serde_json::to_vec_pretty(job).expect("a job serializes");
        std::fs::write(&path, json).map_err(|e| EngineError::io(&path, e))
    }

    /// Writes `summary.json`.
    pub(crate) fn write_summary(&self, summary: &Summary) -> Result<(), EngineError> {
        let path = self.path.join("summary.json");
        let json = serde_json::to_vec_pretty(summary).expect("a summary serializes");
        std::fs::write(&path, json).map_err(|e| EngineError::io(&path, e))
    }

    /// Removes what only a resume needs (the run succeeded) and what only
    /// the run needed (spilled shuffle data).
    pub(super) fn tidy(&self, succeeded: bool) {
        let _ = std::fs::remove_dir_all(self.path.join("shuffle"));
        if succeeded {
            let _ = std::fs::remove_file(self.path.join("tasks.data"));
        }
    }
}

/// The summary of the run in `dir` if it finished successfully (its
/// output committed), so that resuming it has nothing to do; `None` for
/// a run that has not finished, or failed, or was interrupted.
pub fn finished_run(dir: &Path) -> Result<Option<Summary>, EngineError> {
    let path = dir.join("summary.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(&path, e)),
    };
    let summary: Summary = serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    Ok((summary.status == "succeeded").then_some(summary))
}
