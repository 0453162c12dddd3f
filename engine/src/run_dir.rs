//! The run directory: `.fanout/runs/<id>` or one given, holding the
//! resolved job (`job.json`), the invocation records, the journal, the
//! failed tasks and the summary. A run that succeeded is not run again; one
//! that failed or was interrupted may be resumed.

use std::path::{Path, PathBuf};

use fanout_datasets::store::UploadNote;
use fanout_jobs::JobFile;
use nix::fcntl::{Flock, FlockArg};

use crate::error::EngineError;
use crate::summary::Summary;

/// A run's directory and id.
pub(crate) struct RunDir {
    /// The run's id: the directory's name, the same when the run resumes
    /// (so its staging directory is the same too).
    pub(crate) id: String,
    pub(crate) path: PathBuf,
    /// The run's own name for what it writes to object storage, unique
    /// where the id is not (two runs in `--run-dir out` elsewhere): its id
    /// and a random part, kept in the file `owner` for its resumes.
    pub(crate) owner: String,
    /// The directory's lock, held while the run lives (an `flock`, so a
    /// killed run holds it no longer).
    _lock: Flock<std::fs::File>,
}

/// The file of a run directory its run locks, holding the run's pid.
const LOCK: &str = "lock";

/// The file of a run directory that holds the directory the run was
/// started in: a job's relative paths lead from there, also on a resume.
pub const CWD: &str = "cwd";

/// The file of a run directory that lists the multipart uploads its
/// commits started (JSON lines `{"url", "id"}`) or were about to start
/// (`{"url", "creating", "before"}`: the key's uploads pending then), so that a resume aborts any that a killed run
/// left pending.
const UPLOADS: &str = "uploads.jsonl";

/// A multipart upload of a commit, as its run directory notes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upload {
    /// Created, with this id.
    Started(String),
    /// About to be created, its key's uploads pending then being these:
    /// its id may never have been heard.
    Creating(Vec<String>),
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
        std::fs::create_dir_all(&path).map_err(|e| EngineError::io(&path, e))?;
        let lock = lock(&path)?;
        // A run that failed or was interrupted may be resumed (its failed
        // tasks run again); one that succeeded is not run again; a new run
        // never takes another's directory (checked under the lock: a run
        // in it now is said to be so).
        if !resume {
            taken(&path)?;
            // Where the run's relative paths lead from, for its resumes.
            let cwd = path.join(CWD);
            let here = std::env::current_dir().map_err(|e| EngineError::io(".", e))?;
            std::fs::write(&cwd, here.as_os_str().as_encoded_bytes()).map_err(|e| EngineError::io(&cwd, e))?;
        }
        let file = path.join("owner");
        let owner = match std::fs::read_to_string(&file) {
            Ok(o) if !o.trim().is_empty() => o.trim().to_string(),
            _ => {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u128(
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
                );
                h.write_u32(std::process::id());
                let owner = format!("{id}/{:016x}", h.finish());
                std::fs::write(&file, &owner).map_err(|e| EngineError::io(&file, e))?;
                owner
            }
        };
        Ok(RunDir { id, path, owner, _lock: lock })
    }

    /// Notes what a commit's upload to `url` tells (fsync'ed before the
    /// upload is created, and again before its first part goes up).
    pub(crate) fn record_upload(&self, url: &str, note: UploadNote<'_>) -> std::io::Result<()> {
        let line = match note {
            UploadNote::Creating { pending } => serde_json::json!({ "url": url, "creating": true, "before": pending }),
            UploadNote::Created { id } => serde_json::json!({ "url": url, "id": id }),
        };
        self.append_upload(line)
    }

    fn append_upload(&self, line: serde_json::Value) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.path.join(UPLOADS))?;
        writeln!(f, "{line}")?;
        f.sync_all()
    }

    /// The multipart uploads earlier attempts of the run started, or were
    /// about to start (one whose id was then noted is told by its id
    /// alone); a torn last line is skipped.
    pub(crate) fn uploads(&self) -> Vec<(String, Upload)> {
        let text = std::fs::read_to_string(self.path.join(UPLOADS)).unwrap_or_default();
        let notes: Vec<(String, Upload)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                let url = v["url"].as_str()?.to_string();
                let upload = match (v["id"].as_str(), v["before"].as_array()) {
                    (Some(id), _) => Upload::Started(id.to_string()),
                    (None, Some(before)) => {
                        Upload::Creating(before.iter().filter_map(|id| Some(id.as_str()?.to_string())).collect())
                    }
                    (None, None) => return None,
                };
                Some((url, upload))
            })
            .collect();
        let heard =
            |i: usize, url: &str| notes[i + 1..].iter().any(|(u, n)| u == url && matches!(n, Upload::Started(_)));
        (0..notes.len())
            .filter(|&i| !matches!(notes[i].1, Upload::Creating(_)) || !heard(i, &notes[i].0))
            .map(|i| notes[i].clone())
            .collect()
    }

    /// Forgets the uploads noted so far (each completed or aborted).
    pub(crate) fn forget_uploads(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.path.join(UPLOADS)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
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

/// The process running the run in `dir` now (its pid, as it wrote it),
/// or `None` when no process holds the directory.
pub fn running(dir: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(dir.join(LOCK)).ok()?;
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((mut f, _)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            Some(Some(pid.trim().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| "unknown".into()))
        }
    }
}

/// Refuses a new run in the directory of another (finished, or to be
/// resumed).
fn taken(path: &Path) -> Result<(), EngineError> {
    let why = if path.join("summary.json").exists() {
        "this run directory already holds a finished run".to_string()
    } else if path.join("job.json").exists() {
        let dir = path.display();
        format!("this run directory holds a run that did not finish: `fanout run --resume {dir}` finishes it")
    } else {
        return Ok(());
    };
    Err(EngineError::io(path, std::io::Error::other(why)))
}

/// Locks the run directory `path` for this process, or says which
/// process has it.
fn lock(path: &Path) -> Result<Flock<std::fs::File>, EngineError> {
    use std::io::{Read, Seek, Write};
    let file = path.join(LOCK);
    let io = |e| EngineError::io(&file, e);
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&file).map_err(io)?;
    let mut f = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            // The holder writes its pid just after it locks: wait for it a
            // moment.
            let mut pid = String::new();
            for _ in 0..100 {
                pid.clear();
                let _ = f.rewind().and_then(|()| f.read_to_string(&mut pid));
                if !pid.trim().is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let pid = Some(pid.trim().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| "unknown".into());
            return Err(EngineError::InUse { dir: path.to_path_buf(), pid });
        }
        Err((_, e)) => return Err(io(e.into())),
    };
    f.set_len(0).map_err(io)?;
    f.rewind().map_err(io)?;
    write!(f, "{}", std::process::id()).map_err(io)?;
    Ok(f)
}

/// The summary of the run in `dir` if it finished successfully (its
/// output committed), so that resuming it has nothing to do; `None` for
/// a run that has not finished, or failed, or was interrupted.
pub fn finished_run(dir: &Path) -> Result<Option<Summary>, EngineError> {
    match read_summary(dir) {
        Ok(summary) => Ok((summary.status == "succeeded").then_some(summary)),
        Err(EngineError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The summary of the run in `dir`, which ended (succeeded or failed).
pub(crate) fn read_summary(dir: &Path) -> Result<Summary, EngineError> {
    let path = dir.join("summary.json");
    let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_whose_id_was_heard_is_told_by_its_id_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(Some(&tmp.path().join("rd")), false).unwrap();
        let before = ["old".to_string()];
        dir.record_upload("s3://b/a", UploadNote::Creating { pending: &before }).unwrap();
        dir.record_upload("s3://b/a", UploadNote::Created { id: "u1" }).unwrap();
        dir.record_upload("s3://b/c", UploadNote::Creating { pending: &[] }).unwrap();
        let notes = dir.uploads();
        assert_eq!(
            notes,
            [
                ("s3://b/a".to_string(), Upload::Started("u1".into())),
                ("s3://b/c".to_string(), Upload::Creating(vec![]))
            ]
        );
        // A torn last line is skipped; forgetting leaves nothing.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path.join(UPLOADS))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"url\": \"s3://b/d\", \"id"))
            .unwrap();
        assert_eq!(dir.uploads().len(), 2);
        dir.forget_uploads().unwrap();
        assert!(dir.uploads().is_empty());
    }
}
