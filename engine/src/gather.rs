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
use fanout_datasets::store::Stamp;
use fanout_datasets::{CsvOptions, Format, Storage, Writer};

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

/// How an output is committed.
pub(crate) struct Commit<'a> {
    /// Fail rather than replace an existing output (`mode = "error"`).
    pub(crate) create: bool,
    /// The run's name for its objects ([`Stamp::run`]).
    pub(crate) owner: &'a str,
    /// The run resumes: an object this run uploaded before it was killed
    /// is its own, not a stranger's.
    pub(crate) resume: bool,
    /// Notes a multipart upload as it starts (see [`Storage::upload`]).
    pub(crate) started: &'a mut dyn FnMut(fanout_datasets::store::UploadNote<'_>) -> std::io::Result<()>,
}

/// Moves the staged output into place and writes its manifest beside it.
/// An output in object storage (`target` a URL) is uploaded so that it
/// appears whole or not at all (see [`Storage::upload`]), stamped with the
/// run and its hash; with `create`, an existing object is not replaced,
/// unless a resumed run finds its own (the upload it made before it was
/// killed, which stands if its hash is this one's).
pub(crate) fn commit(
    staged: &Path,
    target: &Path,
    format: Format,
    rows: u64,
    manifest: serde_json::Value,
    storage: &Storage,
    how: Commit<'_>,
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
    let mut m = manifest;
    m["output"] = serde_json::to_value(&info).expect("serializes");
    let manifest_json = serde_json::to_vec_pretty(&m).expect("serializes");
    let manifest_path = PathBuf::from(format!("{}.manifest.json", target.display()));
    if let Some(url) = target.to_str().filter(|t| fanout_datasets::store::is_url(t)) {
        let stamp = Stamp { run: how.owner.to_string(), xxh3: info.xxh3.clone() };
        let found = if how.resume { storage.stamp(url).map_err(EngineError::Output)? } else { None };
        match found {
            // Uploaded whole by this run before it was killed.
            Some(Some(s)) if s == stamp => {}
            // This run's, of other content: its own to replace.
            Some(Some(s)) if s.run == stamp.run => {
                storage.upload(staged, url, false, Some(&stamp), how.started).map_err(EngineError::Output)?
            }
            _ => storage.upload(staged, url, how.create, Some(&stamp), how.started).map_err(EngineError::Output)?,
        }
        let manifest_url = manifest_path.to_string_lossy();
        storage.put(&manifest_url, manifest_json).map_err(EngineError::Output)?;
        return Ok(info);
    }
    std::fs::rename(staged, target).map_err(io(target))?;
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let tmp = PathBuf::from(format!("{}.tmp", manifest_path.display()));
    std::fs::write(&tmp, manifest_json).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &manifest_path).map_err(io(&manifest_path))?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("v", DataType::Int64, false)]))
    }

    /// A task's output: rows (k, v).
    fn rows(pairs: &[(i64, i64)]) -> Vec<RecordBatch> {
        let k = Int64Array::from_iter_values(pairs.iter().map(|p| p.0));
        let v = Int64Array::from_iter_values(pairs.iter().map(|p| p.1));
        vec![RecordBatch::try_new(schema(), vec![Arc::new(k), Arc::new(v)]).unwrap()]
    }

    /// Gathers `tasks` (pushed in the order given) and returns the csv.
    fn gather(tasks: &[(u64, Vec<(i64, i64)>)], sort: Vec<(usize, SortOptions)>, limit: Option<u64>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("out.csv");
        let mut g = Gather::new(schema(), Format::Csv, staged.clone(), sort, limit).unwrap();
        for (task, pairs) in tasks {
            g.push(*task, rows(pairs)).unwrap();
        }
        let (path, _) = g.finish().unwrap();
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn outputs_are_written_in_task_order_whatever_order_they_come_in() {
        let tasks = vec![(2, vec![(5, 0)]), (0, vec![(1, 0), (2, 0)]), (3, vec![]), (1, vec![(9, 0)])];
        assert_eq!(gather(&tasks, vec![], None), "k,v\n1,0\n2,0\n9,0\n5,0\n");
        // A limit without a sort: the first rows in task order.
        assert_eq!(gather(&tasks, vec![], Some(2)), "k,v\n1,0\n2,0\n");
    }

    #[test]
    fn sorted_output_breaks_ties_by_task_and_row_and_limits_after_compaction() {
        // Ties on k: task order, then row order, decide.
        let tasks = vec![(1, vec![(7, 10), (3, 11)]), (0, vec![(7, 0), (3, 1), (7, 2)])];
        let descending = SortOptions { descending: true, nulls_first: false };
        assert_eq!(gather(&tasks, vec![(0, descending)], None), "k,v\n7,0\n7,2\n7,10\n3,1\n3,11\n");
        // Past the compaction threshold (65,536 held rows), with a limit.
        let many: Vec<(u64, Vec<(i64, i64)>)> =
            (0..40u64).rev().map(|t| (t, (0..3000).map(|r| (r % 7, t as i64 * 10_000 + r)).collect())).collect();
        let out = gather(&many, vec![(0, SortOptions::default())], Some(70_000));
        let got: Vec<(i64, i64)> = out
            .lines()
            .skip(1)
            .map(|l| {
                let (k, v) = l.split_once(',').unwrap();
                (k.parse().unwrap(), v.parse().unwrap())
            })
            .collect();
        let mut want: Vec<(i64, i64)> = (0..40).flat_map(|t| (0..3000).map(move |r| (r % 7, t * 10_000 + r))).collect();
        want.sort_by_key(|&(k, _)| k); // stable: task, then row
        want.truncate(70_000);
        assert_eq!(got, want);
    }
}
