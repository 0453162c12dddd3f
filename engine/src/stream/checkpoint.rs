//! A stream's checkpoint: where its source is, its open windows' partial
//! aggregates, and what it has committed, written together so that a
//! resume after `kill -9` starts from one consistent moment. Each
//! checkpoint is a directory `checkpoint/NNNNNNNNNNNN/` (the state as JSON,
//! each open window's partials as an Arrow IPC file), made whole and
//! fsync'ed before `checkpoint/CURRENT` is renamed to name it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

use super::source::Position;
use super::window::Clock;
use crate::error::EngineError;

/// What a checkpoint holds besides the windows' partials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The checkpoint's number (1, 2, ...).
    pub(crate) number: u64,
    /// Where the source is.
    pub(crate) position: Position,
    /// The watermark's clock.
    pub(crate) clock: Clock,
    /// The number the next part of a map-only output (or of the late
    /// records) gets.
    pub(crate) next_part: u64,
    /// The number the next part of the late records gets.
    pub(crate) next_late: u64,
    /// The number the next part of the failed records gets.
    #[serde(default)]
    pub(crate) next_reject: u64,
    /// The start of the last window committed, epoch ms.
    pub(crate) last_window: Option<i64>,
    /// Counts over the whole stream.
    pub(crate) counts: Counts,
    /// The open windows' starts, epoch ms (session windows: the
    /// sessions' ids).
    pub(crate) windows: Vec<i64>,
    /// The sessions not committed yet, for session windows.
    #[serde(default)]
    pub(crate) sessions: super::session::Sessions,
    /// What the source asked of its service before this process (the
    /// run's and earlier resumes'), to price.
    #[serde(default)]
    pub(crate) usage: super::usage::Usage,
}

/// A stream's counts, kept across resumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counts {
    /// Records read from the source.
    pub(crate) records_in: u64,
    /// Rows committed to the output.
    pub(crate) rows_out: u64,
    /// Batches processed.
    pub(crate) batches: u64,
    /// Windows committed.
    pub(crate) windows: u64,
    /// Records whose window had closed when they came.
    pub(crate) late: u64,
    /// Records a function failed on, set aside (`on_failure`).
    #[serde(default)]
    pub(crate) failed: u64,
    /// Output files committed (windows or parts).
    pub(crate) files: u64,
}

const CURRENT: &str = "CURRENT";

/// The directory of a run's checkpoints.
pub(crate) fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

/// Writes checkpoint `state.number` with the open windows' partials, then
/// makes it the current one and removes the one before.
pub(crate) fn save(
    run_dir: &Path,
    state: &State,
    partials: &BTreeMap<i64, Vec<RecordBatch>>,
    schema: Option<&SchemaRef>,
) -> Result<(), EngineError> {
    let root = dir(run_dir);
    let here = root.join(format!("{:012}", state.number));
    let io = |p: &Path, e: std::io::Error| EngineError::io(p, e);
    // A directory left by a checkpoint that was cut short is made again.
    let _ = std::fs::remove_dir_all(&here);
    std::fs::create_dir_all(&here).map_err(|e| io(&here, e))?;
    if let Some(schema) = schema {
        for (start, batches) in partials {
            let path = here.join(format!("{start}.arrow"));
            let file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
            let mut w = arrow_ipc::writer::FileWriter::try_new(std::io::BufWriter::new(file), schema)
                .map_err(|e| io(&path, std::io::Error::other(e)))?;
            for b in batches {
                w.write(b).map_err(|e| io(&path, std::io::Error::other(e)))?;
            }
            w.finish().map_err(|e| io(&path, std::io::Error::other(e)))?;
            let file = w.into_inner().map_err(|e| io(&path, std::io::Error::other(e)))?;
            file.into_inner().map_err(|e| io(&path, e.into_error()))?.sync_all().map_err(|e| io(&path, e))?;
        }
    }
    let path = here.join("state.json");
    let text = serde_json::to_vec_pretty(state).expect("a state serializes");
    write_synced(&path, &text)?;
    sync_dir(&here)?;
    let temp = root.join(".CURRENT");
    write_synced(&temp, format!("{:012}\n", state.number).as_bytes())?;
    std::fs::rename(&temp, root.join(CURRENT)).map_err(|e| io(&root, e))?;
    sync_dir(&root)?;
    // Older checkpoints are no longer needed.
    for entry in std::fs::read_dir(&root).map_err(|e| io(&root, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u64>().is_ok_and(|n| n != state.number) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The current checkpoint of the run in `run_dir`, with its windows'
/// partials; `None` if it has none yet.
#[allow(clippy::type_complexity)]
pub(crate) fn load(run_dir: &Path) -> Result<Option<(State, BTreeMap<i64, Vec<RecordBatch>>)>, EngineError> {
    let root = dir(run_dir);
    let current = match std::fs::read_to_string(root.join(CURRENT)) {
        Ok(c) => c.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(root.join(CURRENT), e)),
    };
    let here = root.join(&current);
    let path = here.join("state.json");
    let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
    let state: State = serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let mut partials = BTreeMap::new();
    for start in &state.windows {
        let path = here.join(format!("{start}.arrow"));
        let file = std::fs::File::open(&path).map_err(|e| EngineError::io(&path, e))?;
        let reader = arrow_ipc::reader::FileReader::try_new(std::io::BufReader::new(file), None)
            .map_err(|e| EngineError::io(&path, std::io::Error::other(e)))?;
        let batches =
            reader.collect::<Result<Vec<_>, _>>().map_err(|e| EngineError::io(&path, std::io::Error::other(e)))?;
        partials.insert(*start, batches);
    }
    Ok(Some((state, partials)))
}

/// Writes `bytes` to `path` and fsyncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| EngineError::io(path, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| EngineError::io(path, e))
}

/// Fsyncs a directory, so that a rename in it lasts.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| EngineError::io(dir, e))
}
