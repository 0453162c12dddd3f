//! The gather: the last phase's output, in a deterministic order, sorted
//! and limited as the job asks, written to a staging file and committed
//! atomically.
//!
//! Without a sort, tasks' outputs are written in task order as soon as the
//! lowest unwritten task is done (memory holds only the tasks that finished
//! out of order). With a sort, rows are kept in memory — with a limit, only
//! the best `limit` rows so far — with the task id and row position as the
//! final sort keys, so ties break the same way on every run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use arrow_ord::sort::SortOptions;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use fanout_datasets::{CsvOptions, Format, Writer};

use crate::error::EngineError;

/// What a committed output holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct OutputInfo {
    /// The output file.
    pub path: PathBuf,
    /// Its format.
    pub format: String,
    /// Rows written.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// XXH3-64 of its bytes, in hex.
    pub xxh3: String,
}

enum Mode {
    Ordered { next: u64, pending: BTreeMap<u64, Vec<RecordBatch>> },
    Sorted { keys: Vec<(usize, SortOptions)>, batches: Vec<RecordBatch>, rows: usize },
}

/// Collects the output and writes it to a staging file.
pub(crate) struct Gather {
    schema: SchemaRef,
    limit: Option<u64>,
    mode: Mode,
    writer: Option<Writer>,
    staged: PathBuf,
    rows: u64,
    /// Small batches waiting to be written together (writing a batch has a
    /// fixed cost, and a tiny task's output is a tiny batch).
    small: Vec<RecordBatch>,
    small_rows: usize,
}

/// Rows of small batches gathered before one write.
const COALESCE_ROWS: usize = 8192;

impl Gather {
    /// A gather of batches of `schema` into `staged` (a file in the staging
    /// directory).
    pub(crate) fn new(
        schema: SchemaRef,
        format: Format,
        staged: PathBuf,
        sort: Vec<(usize, SortOptions)>,
        limit: Option<u64>,
    ) -> Result<Gather, EngineError> {
        let writer =
            Writer::create(&staged, format, schema.clone(), &CsvOptions::default()).map_err(EngineError::Output)?;
        let mode = if sort.is_empty() {
            Mode::Ordered { next: 0, pending: BTreeMap::new() }
        } else {
            Mode::Sorted { keys: sort, batches: Vec::new(), rows: 0 }
        };
        Ok(Gather { schema, limit, mode, writer: Some(writer), staged, rows: 0, small: Vec::new(), small_rows: 0 })
    }

    /// Adds the output of task `task`. Tasks are numbered from 0 with no
    /// gaps; each is added once.
    pub(crate) fn push(&mut self, task: u64, batches: Vec<RecordBatch>) -> Result<(), EngineError> {
        match &mut self.mode {
            Mode::Ordered { next, pending } => {
                if task != *next {
                    pending.insert(task, batches);
                    return Ok(());
                }
                // The next task in order: written, then the ones it freed.
                *next += 1;
                for b in batches {
                    self.write(b)?;
                }
                while let Some(batches) = self.next_pending() {
                    for b in batches {
                        self.write(b)?;
                    }
                }
            }
            Mode::Sorted { keys, batches: held, rows } => {
                for b in with_position(task, batches) {
                    *rows += b.num_rows();
                    held.push(b);
                }
                if let Some(limit) = self.limit.map(|l| l as usize)
                    && *rows > (2 * limit).max(65_536)
                {
                    let compacted = sort_with_position(keys, held, Some(limit))?;
                    *rows = compacted.num_rows();
                    *held = vec![compacted];
                }
            }
        }
        Ok(())
    }

    /// The held output of the next task in order, if it is done.
    fn next_pending(&mut self) -> Option<Vec<RecordBatch>> {
        let Mode::Ordered { next, pending } = &mut self.mode else { return None };
        let batches = pending.remove(next)?;
        *next += 1;
        Some(batches)
    }

    fn write(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        let batch = match self.limit {
            Some(l) if self.rows >= l => return Ok(()),
            Some(l) if self.rows + batch.num_rows() as u64 > l => batch.slice(0, (l - self.rows) as usize),
            _ => batch,
        };
        self.rows += batch.num_rows() as u64;
        self.small_rows += batch.num_rows();
        self.small.push(batch);
        if self.small_rows >= COALESCE_ROWS { self.flush() } else { Ok(()) }
    }

    /// Writes the small batches held, as one.
    fn flush(&mut self) -> Result<(), EngineError> {
        let batch = match self.small.len() {
            0 => return Ok(()),
            1 => self.small.pop().expect("one"),
            _ => arrow_select::concat::concat_batches(&self.schema, &self.small).map_err(arrow_io)?,
        };
        self.small.clear();
        self.small_rows = 0;
        self.writer.as_mut().expect("open until finished").write(&batch).map_err(EngineError::Output)
    }

    /// Writes what is held and closes the staging file.
    pub(crate) fn finish(mut self) -> Result<(PathBuf, u64), EngineError> {
        if let Mode::Sorted { keys, batches, .. } =
            std::mem::replace(&mut self.mode, Mode::Ordered { next: 0, pending: BTreeMap::new() })
            && !batches.is_empty()
        {
            let sorted = sort_with_position(&keys, &batches, self.limit.map(|l| l as usize))?;
            let visible = sorted.project(&(0..self.schema.fields().len()).collect::<Vec<_>>()).map_err(arrow_io)?;
            self.write(visible)?;
        }
        self.flush()?;
        let rows = self.writer.take().expect("open until finished").finish().map_err(EngineError::Output)?;
        Ok((self.staged.clone(), rows))
    }
}

fn arrow_io(e: arrow_schema::ArrowError) -> EngineError {
    EngineError::io("output", std::io::Error::other(e))
}

/// Appends hidden `__task` and `__row` columns for deterministic ties.
fn with_position(task: u64, batches: Vec<RecordBatch>) -> impl Iterator<Item = RecordBatch> {
    let mut row = 0u64;
    batches.into_iter().map(move |b| {
        let n = b.num_rows() as u64;
        let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("__task", DataType::UInt64, false));
        fields.push(Field::new("__row", DataType::UInt64, false));
        let mut columns: Vec<ArrayRef> = b.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from_value(task, n as usize)));
        columns.push(Arc::new(UInt64Array::from_iter_values(row..row + n)));
        row += n;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns fit")
    })
}

/// Sorts batches that carry the hidden position columns by `keys`, then
/// task, then row.
fn sort_with_position(
    keys: &[(usize, SortOptions)],
    batches: &[RecordBatch],
    limit: Option<usize>,
) -> Result<RecordBatch, EngineError> {
    let schema = batches[0].schema();
    let n = schema.fields().len();
    let mut all_keys = keys.to_vec();
    all_keys.push((n - 2, SortOptions::default()));
    all_keys.push((n - 1, SortOptions::default()));
    fanout_workers::builtins::sort_batches(&schema, batches, &all_keys, limit)
        .map_err(|e| EngineError::io("output", std::io::Error::other(e.message)))
}

/// Moves the staged output into place and writes its manifest beside it.
pub(crate) fn commit(
    staged: &Path,
    target: &Path,
    format: Format,
    rows: u64,
    manifest: serde_json::Value,
) -> Result<OutputInfo, EngineError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| EngineError::io(&p, e)
    };
    let bytes = std::fs::metadata(staged).map_err(io(staged))?.len();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut f = std::fs::File::open(staged).map_err(io(staged))?;
    let mut buf = vec![0; 1 << 20];
    loop {
        use std::io::Read;
        let n = f.read(&mut buf).map_err(io(staged))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let info = OutputInfo {
        path: target.to_path_buf(),
        format: format.name().to_string(),
        rows,
        bytes,
        xxh3: format!("{:016x}", hasher.digest()),
    };
    std::fs::rename(staged, target).map_err(io(target))?;
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let mut m = manifest;
    m["output"] = serde_json::to_value(&info).expect("serializes");
    let manifest_path = PathBuf::from(format!("{}.manifest.json", target.display()));
    let tmp = PathBuf::from(format!("{}.tmp", manifest_path.display()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&m).expect("serializes")).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &manifest_path).map_err(io(&manifest_path))?;
    Ok(info)
}
