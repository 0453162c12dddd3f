//! The shuffle: map-side output of a keyed stage, partitioned by a hash of
//! its key columns, held in memory up to a budget shared by the run and
//! spilled to Arrow IPC files in the run directory beyond it.
//!
//! A task's output for a partition is one contiguous piece. Small pieces
//! (a tiny task's few rows) are not kept one by one: a partition collects
//! them and, every [`COALESCE_ROWS`] rows or [`COALESCE_PIECES`] pieces,
//! concatenates them, sorted by task, into one segment that knows the task
//! of each row. A large piece is a segment of its own. So a million
//! one-row tasks make a few hundred segments (and spill files), not a
//! million.
//!
//! A partition's rows are handed to its reduce task in (map task, row)
//! order, whatever order they arrived in: segments are each sorted by
//! task, and [`Shuffle::take`] merges them. So a reduce sees the same
//! input on every run and at every concurrency.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::UInt32Type;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use fanout_workers::shuffle::Partitioner;

use crate::error::EngineError;

/// Rows of small pieces concatenated into one segment.
pub(crate) const COALESCE_ROWS: usize = 8192;
/// Small pieces concatenated into one segment, whatever their rows.
pub(crate) const COALESCE_PIECES: usize = 1024;
/// Rows of the batches a reduce gets when segments are merged.
const MERGED_ROWS: usize = 8192;
/// The hidden column a spilled segment keeps its rows' tasks in.
const TASK_COLUMN: &str = "__fanout_task";

/// Which task each row of a segment came from.
#[derive(Debug, Clone)]
enum Tasks {
    /// Every row is this task's.
    One(u64),
    /// Per row, ascending: `first` plus the row's offset (4 bytes a row,
    /// not 8; a segment spans less than 2^32 task ids). The offsets are
    /// `None` while the segment is spilled (its file holds them).
    Rows { first: u64, last: u64, offsets: Option<UInt32Array> },
}

impl Tasks {
    fn first(&self) -> u64 {
        match self {
            Tasks::One(t) => *t,
            Tasks::Rows { first, .. } => *first,
        }
    }

    fn last(&self) -> u64 {
        match self {
            Tasks::One(t) => *t,
            Tasks::Rows { last, .. } => *last,
        }
    }

    fn at(&self, row: usize) -> u64 {
        match self {
            Tasks::One(t) => *t,
            Tasks::Rows { first, offsets, .. } => {
                first + u64::from(offsets.as_ref().expect("a held segment's offsets").value(row))
            }
        }
    }

    fn size(&self) -> usize {
        match self {
            Tasks::Rows { offsets: Some(o), .. } => o.get_array_memory_size(),
            _ => 0,
        }
    }
}

/// Where a segment's rows are.
enum Stored {
    Memory(RecordBatch),
    /// A spill file holding the rows, with the tasks as a last column when
    /// they are `Tasks::Rows`.
    Spilled(PathBuf),
}

/// Rows of a partition, sorted by task.
struct Segment {
    tasks: Tasks,
    data: Stored,
}

/// One partition: its segments, and the small pieces not yet coalesced.
#[derive(Default)]
struct Part {
    segments: Vec<Segment>,
    open: Vec<(u64, RecordBatch)>,
    open_rows: usize,
}

/// One keyed stage's shuffle.
pub(crate) struct Shuffle<'a> {
    schema: SchemaRef,
    partitioner: Partitioner,
    parts: Vec<Mutex<Part>>,
    budget: u64,
    used: &'a AtomicU64,
    dir: PathBuf,
    /// Spill files written, for their names.
    files: AtomicU64,
    /// Bytes written to spill files.
    pub(crate) spilled: AtomicU64,
}

impl<'a> Shuffle<'a> {
    /// A shuffle into `partitions` partitions by `key` (column positions in
    /// `schema`), spilling to `dir` once `used` passes `budget`.
    pub(crate) fn new(
        schema: SchemaRef,
        key: Vec<usize>,
        partitions: usize,
        budget: u64,
        used: &'a AtomicU64,
        dir: PathBuf,
    ) -> Result<Self, EngineError> {
        let partitioner =
            Partitioner::new(&schema, key, partitions).map_err(|e| EngineError::io(&dir, std::io::Error::other(e)))?;
        Ok(Shuffle {
            schema,
            partitioner,
            parts: (0..partitions.max(1)).map(|_| Mutex::new(Part::default())).collect(),
            budget,
            used,
            dir,
            files: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
        })
    }

    /// The number of partitions.
    pub(crate) fn partitions(&self) -> usize {
        self.parts.len()
    }

    fn arrow(&self) -> impl Fn(arrow_schema::ArrowError) -> EngineError + '_ {
        |e| EngineError::io(&self.dir, std::io::Error::other(e))
    }

    /// The schema of what it holds: the keyed stage's combine output.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Partitions the output of map task `task` and stores it. Each task is
    /// inserted once.
    pub(crate) fn insert(&self, task: u64, batches: Vec<RecordBatch>) -> Result<(), EngineError> {
        let pieces = self.partitioner.split(batches).map_err(self.arrow())?;
        for (p, batches) in pieces.into_iter().enumerate() {
            // The task's rows of a partition are one piece.
            let piece = match batches.len() {
                0 => continue,
                1 => batches.into_iter().next().expect("one"),
                _ => arrow_select::concat::concat_batches(&self.schema, &batches).map_err(self.arrow())?,
            };
            self.add(p, task, piece)?;
        }
        Ok(())
    }

    /// Stores task `task`'s piece of partition `p`: a large one as a
    /// segment, a small one with the partition's other small pieces.
    fn add(&self, p: usize, task: u64, piece: RecordBatch) -> Result<(), EngineError> {
        let size = piece.get_array_memory_size() as u64;
        if piece.num_rows() >= COALESCE_ROWS {
            let segment = self.segment(p, Tasks::One(task), piece)?;
            self.parts[p].lock().expect("not poisoned").segments.push(segment);
            return Ok(());
        }
        // Held pieces count against the budget too.
        self.used.fetch_add(size, Relaxed);
        let full = {
            let mut part = self.parts[p].lock().expect("not poisoned");
            part.open_rows += piece.num_rows();
            part.open.push((task, piece));
            if part.open_rows >= COALESCE_ROWS || part.open.len() >= COALESCE_PIECES {
                part.open_rows = 0;
                Some(std::mem::take(&mut part.open))
            } else {
                None
            }
        };
        // Coalesced outside the lock: other tasks go on adding pieces.
        if let Some(open) = full {
            let segments = self.coalesce(p, open)?;
            self.parts[p].lock().expect("not poisoned").segments.extend(segments);
        }
        Ok(())
    }

    /// Small pieces as segments sorted by task: one, unless their tasks
    /// span more than offsets from the first can say.
    fn coalesce(&self, p: usize, mut open: Vec<(u64, RecordBatch)>) -> Result<Vec<Segment>, EngineError> {
        let held: u64 = open.iter().map(|(_, b)| b.get_array_memory_size() as u64).sum();
        self.used.fetch_sub(held, Relaxed);
        open.sort_by_key(|(task, _)| *task);
        let mut segments = Vec::new();
        let mut rest = &open[..];
        while let Some(&(first, _)) = rest.first() {
            let n = rest.iter().take_while(|(t, _)| t - first <= u64::from(u32::MAX)).count();
            let (these, more) = rest.split_at(n);
            rest = more;
            let last = these[n - 1].0;
            let tasks = if first == last {
                Tasks::One(first)
            } else {
                let rows = these.iter().flat_map(|(t, b)| std::iter::repeat_n((t - first) as u32, b.num_rows()));
                Tasks::Rows { first, last, offsets: Some(UInt32Array::from_iter_values(rows)) }
            };
            let batches: Vec<&RecordBatch> = these.iter().map(|(_, b)| b).collect();
            let batch = arrow_select::concat::concat_batches(&self.schema, batches).map_err(self.arrow())?;
            segments.push(self.segment(p, tasks, batch)?);
        }
        Ok(segments)
    }

    /// A segment of `batch`, in memory or, past the budget, spilled.
    fn segment(&self, p: usize, tasks: Tasks, batch: RecordBatch) -> Result<Segment, EngineError> {
        let size = (batch.get_array_memory_size() + tasks.size()) as u64;
        if self.used.fetch_add(size, Relaxed) + size <= self.budget {
            return Ok(Segment { tasks, data: Stored::Memory(batch) });
        }
        self.used.fetch_sub(size, Relaxed);
        let path = self.spill(p, &tasks, &batch)?;
        // A spilled segment keeps only its first and last task in memory.
        let tasks = match tasks {
            Tasks::Rows { first, last, .. } => Tasks::Rows { first, last, offsets: None },
            t => t,
        };
        Ok(Segment { tasks, data: Stored::Spilled(path) })
    }

    fn spill(&self, p: usize, tasks: &Tasks, batch: &RecordBatch) -> Result<PathBuf, EngineError> {
        let n = self.files.fetch_add(1, Relaxed);
        let path = self.dir.join(format!("p{p}-{n}.arrow"));
        let io = |e: std::io::Error| EngineError::io(&path, e);
        if n == 0 || !self.dir.exists() {
            std::fs::create_dir_all(&self.dir).map_err(io)?;
        }
        let arrow = |e: arrow_schema::ArrowError| EngineError::io(&path, std::io::Error::other(e));
        let batch = match tasks {
            Tasks::One(_) => batch.clone(),
            Tasks::Rows { offsets, .. } => {
                let mut fields: Vec<Field> = self.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new(TASK_COLUMN, DataType::UInt32, false));
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(offsets.clone().expect("a held segment's offsets")) as ArrayRef);
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow)?
            }
        };
        let file = File::create(&path).map_err(io)?;
        let mut w = arrow_ipc::writer::FileWriter::try_new(BufWriter::new(file), &batch.schema()).map_err(arrow)?;
        w.write(&batch).map_err(arrow)?;
        w.finish().map_err(arrow)?;
        self.spilled.fetch_add(std::fs::metadata(&path).map_err(io)?.len(), Relaxed);
        Ok(path)
    }

    /// A spilled segment's rows and tasks, read back (the file deleted).
    fn load(&self, segment: Segment) -> Result<(RecordBatch, Tasks), EngineError> {
        let path = match segment.data {
            Stored::Memory(b) => {
                self.used.fetch_sub((b.get_array_memory_size() + segment.tasks.size()) as u64, Relaxed);
                return Ok((b, segment.tasks));
            }
            Stored::Spilled(path) => path,
        };
        let io = |e: std::io::Error| EngineError::io(&path, e);
        let arrow = |e: arrow_schema::ArrowError| EngineError::io(&path, std::io::Error::other(e));
        let file = File::open(&path).map_err(io)?;
        let batches = arrow_ipc::reader::FileReader::try_new(file, None)
            .map_err(arrow)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(arrow)?;
        std::fs::remove_file(&path).map_err(io)?;
        let batch = match batches.len() {
            1 => batches.into_iter().next().expect("one"),
            _ => arrow_select::concat::concat_batches(&batches[0].schema(), &batches).map_err(arrow)?,
        };
        match segment.tasks {
            Tasks::One(t) => Ok((batch, Tasks::One(t))),
            Tasks::Rows { first, last, .. } => {
                let column = batch.num_columns() - 1;
                let offsets = batch.column(column).as_primitive::<UInt32Type>().clone();
                let batch = batch.project(&(0..column).collect::<Vec<_>>()).map_err(arrow)?;
                let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(arrow)?;
                Ok((batch, Tasks::Rows { first, last, offsets: Some(offsets) }))
            }
        }
    }

    /// Takes partition `p`'s rows, in (task, row) order, reading back and
    /// deleting its spill files.
    pub(crate) fn take(&self, p: usize) -> Result<Vec<RecordBatch>, EngineError> {
        let (mut segments, open) = {
            let mut part = self.parts[p].lock().expect("not poisoned");
            part.open_rows = 0;
            (std::mem::take(&mut part.segments), std::mem::take(&mut part.open))
        };
        if !open.is_empty() {
            segments.extend(self.coalesce(p, open)?);
        }
        // In order of their first task; segments whose tasks do not
        // overlap the next one's need no merge.
        segments.sort_by_key(|s| (s.tasks.first(), s.tasks.last()));
        let disjoint = segments.windows(2).all(|w| w[0].tasks.last() < w[1].tasks.first());
        if disjoint {
            return segments.into_iter().map(|s| self.load(s).map(|(b, _)| b)).collect();
        }
        merge(segments, |s| self.load(s), self.arrow())
    }
}

/// A segment in the merge: not read yet (spilled), read, or merged.
enum Merging {
    Pending(Segment),
    Held(RecordBatch, Tasks),
    Merged,
}

impl Merging {
    fn held(&self) -> (&RecordBatch, &Tasks) {
        match self {
            Merging::Held(b, t) => (b, t),
            _ => unreachable!("a segment being merged is held"),
        }
    }
}

/// Merges segments, each sorted by task, into batches in (task, row) order.
/// A task's rows are all in one segment. A segment is read (`load`) only
/// when the merge reaches its first task, and dropped as soon as the merge
/// has taken its last row, so the rows held beside the output are those
/// of the segments the merge is in, not the whole partition again.
fn merge(
    segments: Vec<Segment>,
    mut load: impl FnMut(Segment) -> Result<(RecordBatch, Tasks), EngineError>,
    arrow: impl Fn(arrow_schema::ArrowError) -> EngineError,
) -> Result<Vec<RecordBatch>, EngineError> {
    // The segment with the lowest task at its cursor comes first.
    let mut heap: BinaryHeap<std::cmp::Reverse<(u64, usize)>> =
        segments.iter().enumerate().map(|(i, s)| std::cmp::Reverse((s.tasks.first(), i))).collect();
    let mut segments: Vec<Merging> = segments.into_iter().map(Merging::Pending).collect();
    let mut cursor = vec![0usize; segments.len()];
    let mut out = Vec::new();
    // The next output batch: (segment, row) pairs.
    let mut rows: Vec<(usize, usize)> = Vec::with_capacity(MERGED_ROWS);
    while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
        if let Merging::Pending(_) = segments[i] {
            let Merging::Pending(segment) = std::mem::replace(&mut segments[i], Merging::Merged) else {
                unreachable!("pending")
            };
            let (batch, tasks) = load(segment)?;
            segments[i] = Merging::Held(batch, tasks);
        }
        // Take rows from this segment while they come before the next
        // segment's first task (galloping: nearly sorted input moves in
        // long runs).
        let next = heap.peek().map_or(u64::MAX, |r| r.0.0);
        let n = segments[i].held().0.num_rows();
        let mut row = cursor[i];
        while row < n {
            rows.push((i, row));
            row += 1;
            cursor[i] = row;
            if rows.len() == MERGED_ROWS {
                out.push(emit(&mut segments, &cursor, &mut rows).map_err(&arrow)?);
            }
            // A tie (the same task at the head of two segments) cannot
            // happen, since a task's rows are one piece; had it, the row
            // taken above would keep the merge moving.
            if row < n && segments[i].held().1.at(row) >= next {
                break;
            }
        }
        // A finished segment is dropped by the `emit` that takes its last
        // row.
        if row < n {
            heap.push(std::cmp::Reverse((segments[i].held().1.at(row), i)));
        }
    }
    if !rows.is_empty() {
        out.push(emit(&mut segments, &cursor, &mut rows).map_err(&arrow)?);
    }
    Ok(out)
}

/// One output batch of the merge, from `rows` (then emptied); drops the
/// segments it finished.
fn emit(
    segments: &mut [Merging],
    cursor: &[usize],
    rows: &mut Vec<(usize, usize)>,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    // The segments this batch takes rows from, numbered as interleave
    // wants them.
    let mut used: Vec<usize> = rows.iter().map(|r| r.0).collect();
    used.sort_unstable();
    used.dedup();
    let batches: Vec<&RecordBatch> = used.iter().map(|&i| segments[i].held().0).collect();
    let indices: Vec<(usize, usize)> =
        rows.iter().map(|&(i, row)| (used.binary_search(&i).expect("listed"), row)).collect();
    let batch = arrow_select::interleave::interleave_record_batch(&batches, &indices)?;
    rows.clear();
    for i in used {
        if cursor[i] >= segments[i].held().0.num_rows() {
            segments[i] = Merging::Merged;
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use proptest::prelude::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("v", DataType::Int64, false)]))
    }

    /// A task's output: `rows` rows with keys from the task and values
    /// (task, row) that say where each row came from.
    fn output(task: u64, rows: usize, batches: usize) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        let mut row = 0;
        for b in 0..batches {
            let n = rows / batches + usize::from(b < rows % batches);
            let keys =
                StringArray::from_iter_values((row..row + n).map(|r| format!("k{}", (task as usize * 7 + r) % 13)));
            let values = Int64Array::from_iter_values((row..row + n).map(|r| (task * 1_000_000 + r as u64) as i64));
            out.push(RecordBatch::try_new(schema(), vec![Arc::new(keys), Arc::new(values)]).unwrap());
            row += n;
        }
        out
    }

    /// The values of a partition's rows, in order.
    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<arrow_array::types::Int64Type>().values().to_vec())
            .collect()
    }

    /// What a partition must hold: each task's rows of it, in task order
    /// then in the order the task produced them.
    fn expected(tasks: &[(u64, usize, usize)], shuffle: &Shuffle<'_>, p: usize) -> Vec<i64> {
        let mut sorted = tasks.to_vec();
        sorted.sort();
        let mut want = Vec::new();
        for (task, rows, batches) in sorted {
            for b in output(task, rows, batches) {
                for (q, piece) in shuffle.partitioner.partition(&b).unwrap() {
                    if q == p {
                        want.extend(values(&[piece]));
                    }
                }
            }
        }
        want
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn a_partition_comes_back_in_task_order_whatever_the_arrival_order(
            sizes in prop::collection::vec((0usize..40, 1usize..4), 1..300),
            order in any::<u64>(),
            partitions in 1usize..5,
            budget in prop::sample::select(vec![0u64, 4096, u64::MAX]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let used = AtomicU64::new(0);
            let shuffle = Shuffle::new(schema(), vec![0], partitions, budget, &used, dir.path().join("s")).unwrap();
            // Some tasks are large enough for a segment of their own.
            let mut tasks: Vec<(u64, usize, usize)> = sizes
                .iter()
                .enumerate()
                .map(|(t, &(rows, batches))| (t as u64, if t % 97 == 5 { COALESCE_ROWS * partitions + 3 } else { rows }, batches))
                .collect();
            // Arrival order: shuffled by the seed.
            let mut arrival = tasks.clone();
            let mut x = order | 1;
            for i in (1..arrival.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                arrival.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for &(task, rows, batches) in &arrival {
                shuffle.insert(task, output(task, rows, batches)).unwrap();
            }
            tasks.sort();
            for p in 0..partitions {
                let got = shuffle.take(p).unwrap();
                prop_assert_eq!(values(&got), expected(&tasks, &shuffle, p));
                prop_assert!(got.iter().all(|b| b.schema() == schema()));
            }
            prop_assert_eq!(used.load(Relaxed), 0, "everything taken is released");
            if budget == 0 {
                prop_assert!(shuffle.spilled.load(Relaxed) > 0);
                let left = std::fs::read_dir(dir.path().join("s")).map_or(0, |d| d.count());
                prop_assert_eq!(left, 0, "spill files are deleted once read");
            }
        }
    }

    #[test]
    fn tasks_far_apart_are_coalesced_into_segments_each_can_number() {
        let dir = tempfile::tempdir().unwrap();
        let used = AtomicU64::new(0);
        let shuffle = Shuffle::new(schema(), vec![0], 1, u64::MAX, &used, dir.path().join("s")).unwrap();
        let far = [1u64 << 40, 3, (1 << 40) + 7, 1 << 33, 5];
        for &task in &far {
            shuffle.insert(task, output(task, 1, 1)).unwrap();
        }
        let mut want: Vec<u64> = far.to_vec();
        want.sort();
        let got: Vec<i64> = values(&shuffle.take(0).unwrap());
        assert_eq!(got, want.iter().map(|t| (t * 1_000_000) as i64).collect::<Vec<_>>());
    }

    #[test]
    fn tiny_pieces_are_coalesced_into_few_segments_and_spill_files() {
        let dir = tempfile::tempdir().unwrap();
        let used = AtomicU64::new(0);
        let shuffle = Shuffle::new(schema(), vec![0], 2, 0, &used, dir.path().join("s")).unwrap();
        for task in 0..20_000 {
            shuffle.insert(task, output(task, 1, 1)).unwrap();
        }
        let files = std::fs::read_dir(dir.path().join("s")).unwrap().count();
        assert!(files <= 2 * 20_000 / COALESCE_PIECES + 2, "{files} spill files for 20,000 one-row tasks");
        let rows: usize =
            (0..2).map(|p| shuffle.take(p).unwrap().iter().map(RecordBatch::num_rows).sum::<usize>()).sum();
        assert_eq!(rows, 20_000);
    }
}
