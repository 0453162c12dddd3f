//! The journal: an append-only, fsync'ed record of completed tasks with
//! their outputs, so that `fanout run --resume RUN_DIR` after a crash or
//! `kill -9` redoes only the tasks that were not finished, and produces the
//! same output.
//!
//! Two files in the run directory: `tasks.data`, the task outputs as Arrow
//! IPC messages, and `journal.jsonl`, a line per task naming its bytes in
//! `tasks.data` and their checksum. A task's bytes are its record batch
//! messages alone — the schema is the phase's, known again on resume and
//! put in front when they are read — unless the schema has dictionaries:
//! then they are a whole IPC stream. Small outputs (under
//! [`SHARED_BYTES`]) of a worker's task group are saved together, as one
//! record batch whose rows each task's line locates (`skip`, `rows`):
//! encoding a message costs some microseconds, more than a tiny task. Batch
//! boundaries within a task's output are not kept. Workers gather their
//! finished tasks into a [`Batch`] and hand it over between task groups,
//! once it holds enough or its oldest task is 2 ms old, and always before
//! they wait for more tasks. A syncer thread
//! takes the batches in groups ([`WRITE_INTERVAL`] at least between them,
//! so that tiny tasks share a write and a worker handing a task over never
//! has to wake it) and appends their outputs, then their lines. Once
//! written, a task survives the process's death (`kill -9`, a panic, the
//! OOM killer): the bytes are in the page cache. To survive the machine's
//! crash they must reach the disk: the syncer fsyncs the data, then the
//! journal, when [`SYNC_INTERVAL`] has passed since the first write not yet
//! synced, and at the end of a run that will be resumed — a group of fsyncs
//! every tenth of a second however many tasks finish, instead of two per
//! group, which on tiny tasks cost more than the tasks. A machine crash
//! loses at most the last interval's tasks: a journal line whose bytes did
//! not reach the disk fails its checksum, and the task is redone, as is a
//! task finished but not yet written when the process died; a torn last
//! line is ignored.

mod index;
mod local;
mod syncer;

pub(crate) use local::Local;

use local::{Batch, has_dictionaries};

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Cursor};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::EngineError;
use crate::records::Log;
use index::{Entry, Index};

/// How many saved outputs read back on resume are kept.
const KEPT_SAVED: usize = 16;

/// How many emptied batches wait for reuse.
const SPARE_BATCHES: usize = 64;

/// How many batches wait for the syncer before a worker handing one over
/// waits too.
const QUEUED_BATCHES: usize = 64;

/// A worker hands its batch over once it holds this many tasks, this many
/// bytes, or a task this old (checked between task groups), or when it has
/// nothing else to do: tiny tasks share a hand-off, an encode and a
/// channel message, and no task waits long.
const HAND_OVER_TASKS: usize = 256;
const HAND_OVER_BYTES: usize = 256 * 1024;
pub(crate) const HAND_OVER_AGE: std::time::Duration = std::time::Duration::from_millis(2);

/// The least time between two groups written.
const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

/// The most time a written task waits for its fsync.
const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Outputs smaller than this (Arrow memory) are saved together with the
/// other small outputs of the worker's task group.
const SHARED_BYTES: usize = 64 * 1024;

/// Bytes of small outputs a worker holds before it saves them.
const PENDING_BYTES: usize = 1 << 20;

/// A journaled task as a resumed run gets it back.
pub(crate) struct Completed {
    /// Its output.
    pub(crate) batches: Vec<RecordBatch>,
    /// The records it read from its split.
    pub(crate) input_records: u64,
    /// The records of its split that could not be read.
    pub(crate) bad_records: u64,
}

/// Saved bytes read back: their offset, length and checksum, and their
/// batches.
type Saved = ((u64, u64, u64), Vec<RecordBatch>);

/// The journal of a run directory.
pub(crate) struct Journal {
    data_path: PathBuf,
    /// Tasks completed by earlier runs.
    done: Index,
    queue: Mutex<Option<crossbeam_channel::Sender<Batch>>>,
    /// Emptied batches back from the syncer, their buffers still
    /// allocated: workers reuse them instead of growing new ones.
    spare: crossbeam_channel::Receiver<Batch>,
    syncer: Mutex<Option<std::thread::JoinHandle<Result<(), EngineError>>>>,
    /// Tells the syncer to drop what is left instead of syncing it.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The saved outputs read back last, most recent first: the tasks
    /// sharing one are resumed close together (a worker's task groups
    /// alternate with the other workers').
    last: Mutex<Vec<Saved>>,
}

impl Journal {
    /// Opens `run_dir`'s journal; with `resume`, reads the tasks it holds.
    pub(crate) fn open(run_dir: &Path, resume: bool, log: Arc<Log>) -> Result<Journal, EngineError> {
        let path = run_dir.join("journal.jsonl");
        let data_path = run_dir.join("tasks.data");
        let mut done = Index::default();
        if resume && path.exists() {
            let f = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
            let mut failed = None;
            let lines = BufReader::new(f).lines().map_while(|l| l.map_err(|e| failed = Some(e)).ok());
            done = Index::read(lines);
            if let Some(e) = failed {
                return Err(EngineError::io(&path, e));
            }
        }
        let append = |p: &Path| {
            OpenOptions::new().create(true).append(true).truncate(false).open(p).map_err(|e| EngineError::io(p, e))
        };
        // A line cut short by a crash would swallow the next line written.
        crate::lines::drop_torn_line(&path).map_err(|e| EngineError::io(&path, e))?;
        let journal = append(&path)?;
        let data = append(&data_path)?;
        // Bounded: workers that finish tasks faster than the disk takes
        // them wait, rather than hold every batch in memory.
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(QUEUED_BATCHES);
        let (spare_tx, spare) = crossbeam_channel::bounded::<Batch>(SPARE_BATCHES);
        let dp = data_path.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let syncer = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || syncer::run(rx, &spare_tx, data, dp, journal, path, &log, &halt))
            .map_err(|e| EngineError::io(run_dir, e))?;
        Ok(Journal {
            data_path,
            done,
            queue: Mutex::new(Some(tx)),
            spare,
            syncer: Mutex::new(Some(syncer)),
            stop,
            last: Mutex::new(Vec::new()),
        })
    }

    /// Ends the journal and reports a sync error. With `all_done` (every
    /// task finished, so nothing will be resumed) what is still queued is
    /// dropped rather than synced; otherwise it waits until every recorded
    /// task is journaled.
    pub(crate) fn finish(&self, all_done: bool) -> Result<(), EngineError> {
        self.stop.store(all_done, std::sync::atomic::Ordering::Relaxed);
        drop(self.queue.lock().expect("not poisoned").take());
        match self.syncer.lock().expect("not poisoned").take() {
            Some(h) => {
                h.thread().unpark();
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::io(&self.data_path, std::io::Error::other("journal panicked")))
                })
            }
            None => Ok(()),
        }
    }

    /// Whether an earlier run journaled task `task` of phase `phase`.
    pub(crate) fn has(&self, phase: usize, task: u64) -> bool {
        self.done.get(phase, task).is_some()
    }

    /// The saved output of task `task` of phase `phase`, whose output
    /// schema is `schema`, if an earlier run completed it and its bytes
    /// are on disk as they were written (their checksum verified). Bytes
    /// that are missing or differ — a machine crash before their fsync —
    /// mean the task is redone.
    pub(crate) fn completed(
        &self,
        phase: usize,
        task: u64,
        schema: &SchemaRef,
    ) -> Result<Option<Completed>, EngineError> {
        let Some(e) = self.done.get(phase, task) else { return Ok(None) };
        let mut last = self.last.lock().expect("not poisoned");
        // The checksum is part of the key: after a machine crash, a line
        // may name bytes that were lost and later overwritten by others at
        // the same place.
        let key = (e.offset, e.len, e.xxh3);
        match last.iter().position(|(k, _)| *k == key) {
            Some(i) => last[..=i].rotate_right(1),
            None => {
                let Some(batches) = self.read_saved(&e, schema)? else { return Ok(None) };
                last.truncate(KEPT_SAVED - 1);
                last.insert(0, (key, batches));
            }
        }
        let saved = &last[0].1;
        let arrow = |err| EngineError::io(&self.data_path, std::io::Error::other(err));
        let batches = rows(saved, e.skip as usize, e.rows as usize).map_err(arrow)?;
        Ok(Some(Completed { batches, input_records: e.input, bad_records: e.bad }))
    }

    /// The batches saved at `e`'s bytes; `None` if they are not on disk as
    /// they were written.
    fn read_saved(&self, e: &Entry, schema: &SchemaRef) -> Result<Option<Vec<RecordBatch>>, EngineError> {
        let path = &self.data_path;
        let io = |err| EngineError::io(path, err);
        let mut bytes = vec![0; e.len as usize];
        match File::open(path).and_then(|f| f.read_exact_at(&mut bytes, e.offset)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(io(err)),
        }
        if xxhash_rust::xxh3::xxh3_64(&bytes) != e.xxh3 {
            return Ok(None);
        }
        let arrow = |err: arrow_schema::ArrowError| EngineError::io(path, std::io::Error::other(err));
        if !has_dictionaries(schema) {
            let mut stream = Vec::with_capacity(bytes.len() + 256);
            let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut stream, schema).map_err(arrow)?;
            w.flush().map_err(arrow)?;
            drop(w);
            stream.extend_from_slice(&bytes);
            bytes = stream;
        }
        let reader = arrow_ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).map_err(arrow)?;
        Ok(Some(reader.collect::<Result<Vec<_>, _>>().map_err(arrow)?))
    }
}

/// Rows `[skip, skip + rows)` of `batches`: all of them when that is every
/// row, else copied out (a slice would keep, and be counted by the
/// shuffle's memory budget as, the whole saved output it shares).
fn rows(batches: &[RecordBatch], skip: usize, rows: usize) -> Result<Vec<RecordBatch>, arrow_schema::ArrowError> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if skip == 0 && rows == total {
        return Ok(batches.to_vec());
    }
    let (mut at, end) = (skip, skip + rows);
    let mut first = 0;
    let mut out = Vec::new();
    for b in batches {
        let last = first + b.num_rows();
        if at < end && at < last && first <= at {
            let take = last.min(end) - at;
            // `take` copies: a slice would share the whole buffer.
            let indices = arrow_array::UInt32Array::from_iter_values((at - first) as u32..(at - first + take) as u32);
            out.push(arrow_select::take::take_record_batch(b, &indices)?);
            at += take;
        }
        first = last;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, DictionaryArray, Int64Array, RecordBatch, StringArray, types::Int32Type};
    use arrow_schema::{DataType, Field, Schema};
    use arrow_select::concat::concat_batches;

    use super::*;

    /// The journal of run directory `dir` (resumed: reading what it holds).
    fn open(dir: &std::path::Path, resume: bool) -> Journal {
        let log = Arc::new(Log::create(&dir.join(crate::records::FILE), resume, &["s".to_string()]).unwrap());
        Journal::open(dir, resume, log).unwrap()
    }

    fn plain() -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
        let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
        RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap()
    }

    fn dictionary() -> RecordBatch {
        let keys: DictionaryArray<Int32Type> = vec!["x", "y", "x"].into_iter().collect();
        let schema = Schema::new(vec![Field::new(
            "k",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        )]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(keys)]).unwrap()
    }

    #[test]
    fn tasks_come_back_as_they_were_recorded_with_and_without_dictionaries() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [(0, plain()), (1, dictionary())];
        {
            let journal = open(dir.path(), false);
            let mut local = Local::default();
            for (phase, batch) in &cases {
                let schema = batch.schema();
                journal.record(&mut local, *phase, 7, (42, 3), &schema, &[batch.clone(), batch.slice(1, 2)]).unwrap();
                journal.record(&mut local, *phase, 8, (0, 0), &schema, &[]).unwrap();
                local.batch.records.push(0, &crate::records::tests::record(*phase as u64, None));
                journal.hand_over(&mut local, true).unwrap();
            }
            journal.finish(false).unwrap();
        }
        let journal = open(dir.path(), true);
        for (phase, batch) in &cases {
            let schema = batch.schema();
            let back = journal.completed(*phase, 7, &schema).unwrap().map(|c| c.batches).expect("journaled");
            // The rows come back; batch boundaries need not.
            let expected = concat_batches(&schema, &[batch.clone(), batch.slice(1, 2)]).unwrap();
            assert_eq!(concat_batches(&schema, &back).unwrap(), expected);
            assert_eq!(journal.completed(*phase, 8, &schema).unwrap().map(|c| c.batches).expect("journaled"), vec![]);
            // The records a task read come back with it, for the summary.
            assert_eq!(
                journal.completed(*phase, 7, &schema).unwrap().map(|c| (c.input_records, c.bad_records)),
                Some((42, 3))
            );
            assert!(journal.completed(*phase, 9, &schema).unwrap().map(|c| c.batches).is_none());
        }
        journal.finish(true).unwrap();
        let records: Vec<u64> = crate::records::read(dir.path()).unwrap().map(|r| r.unwrap().task).collect();
        assert_eq!(records, [0, 1]);
    }

    #[test]
    fn a_task_whose_bytes_did_not_reach_the_disk_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let batch = plain();
        let schema = batch.schema();
        {
            let journal = open(dir.path(), false);
            let mut local = Local::default();
            // One task per hand-over: each saved on its own.
            for task in 0..3 {
                journal.record(&mut local, 0, task, (0, 0), &schema, std::slice::from_ref(&batch)).unwrap();
                journal.hand_over(&mut local, true).unwrap();
            }
            journal.finish(false).unwrap();
        }
        // As after a machine crash between the writes and their fsync:
        // task 1's bytes changed, task 2's lost.
        let data = dir.path().join("tasks.data");
        let mut bytes = std::fs::read(&data).unwrap();
        let third = bytes.len() / 3;
        bytes[third + 8] ^= 0xff;
        bytes.truncate(2 * third + 1);
        std::fs::write(&data, bytes).unwrap();
        let journal = open(dir.path(), true);
        assert_eq!(journal.completed(0, 0, &schema).unwrap().map(|c| c.batches), Some(vec![batch.clone()]));
        assert_eq!(journal.completed(0, 1, &schema).unwrap().map(|c| c.batches), None);
        assert_eq!(journal.completed(0, 2, &schema).unwrap().map(|c| c.batches), None);
        journal.finish(true).unwrap();
    }

    #[test]
    fn small_outputs_saved_together_come_back_task_by_task() {
        let dir = tempfile::tempdir().unwrap();
        let schema = plain().schema();
        let ids = |n: i64| -> RecordBatch {
            let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n));
            let names: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("row {i}"))));
            RecordBatch::try_new(schema.clone(), vec![ids, names]).unwrap()
        };
        // Small, empty, two batches, large enough to be saved alone, small.
        let large = ids(10_000);
        assert!(large.get_array_memory_size() > SHARED_BYTES);
        let tasks: Vec<Vec<RecordBatch>> =
            vec![vec![ids(3)], vec![], vec![ids(2), ids(4).slice(1, 3)], vec![large], vec![ids(1)]];
        {
            let journal = open(dir.path(), false);
            let mut local = Local::default();
            for (task, out) in tasks.iter().enumerate() {
                journal.record(&mut local, 0, task as u64, (0, 0), &schema, out).unwrap();
            }
            journal.hand_over(&mut local, true).unwrap();
            journal.finish(false).unwrap();
        }
        let lines = std::fs::read_to_string(dir.path().join("journal.jsonl")).unwrap();
        // The four small outputs share one saved batch (one line), the
        // large one not.
        assert_eq!(lines.lines().count(), 2, "{lines}");
        let index = Index::read(lines.lines().map(String::from));
        let shared: Vec<_> =
            [0, 1, 2, 4].into_iter().map(|t| index.get(0, t).unwrap()).map(|e| (e.offset, e.skip, e.rows)).collect();
        let at = shared[0].0;
        assert_eq!(shared, vec![(at, 0, 3), (at, 3, 0), (at, 3, 5), (at, 8, 1)]);
        let journal = open(dir.path(), true);
        // In any order, each task gets its own rows back.
        for task in [4, 0, 3, 1, 2] {
            let back = journal.completed(0, task as u64, &schema).unwrap().map(|c| c.batches).expect("journaled");
            let want = concat_batches(&schema, &tasks[task]).unwrap();
            assert_eq!(concat_batches(&schema, &back).unwrap(), want, "task {task}");
            // A task's rows of a shared output are its own memory, not
            // slices holding (and counted as) the whole saved batch.
            if task != 3 {
                let size: usize = back.iter().map(RecordBatch::get_array_memory_size).sum();
                assert!(
                    size <= want.get_array_memory_size(),
                    "task {task}: {size} bytes, want {}",
                    want.get_array_memory_size()
                );
            }
        }
        journal.finish(true).unwrap();
    }

    #[test]
    fn a_worker_hands_tasks_over_when_asked_or_when_they_wait_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let batch = plain();
        let schema = batch.schema();
        {
            let journal = open(dir.path(), false);
            let mut local = Local::default();
            journal.record(&mut local, 0, 0, (0, 0), &schema, std::slice::from_ref(&batch)).unwrap();
            // Time as the hand-over sees it, not as this (maybe busy)
            // machine runs the test.
            let recorded = local.since.unwrap();
            journal.hand_over_at(&mut local, false, recorded + HAND_OVER_AGE / 2).unwrap();
            assert_eq!(local.pending.len(), 1, "one fresh task is not handed over yet");
            journal.hand_over_at(&mut local, false, recorded + HAND_OVER_AGE).unwrap();
            assert!(local.pending.is_empty() && local.batch.tasks.is_empty(), "an old one is");
            journal.record(&mut local, 0, 1, (0, 0), &schema, std::slice::from_ref(&batch)).unwrap();
            journal.hand_over(&mut local, true).unwrap();
            journal.record(&mut local, 0, 2, (0, 0), &schema, std::slice::from_ref(&batch)).unwrap();
            journal.hand_over(&mut local, false).unwrap();
            journal.finish(false).unwrap();
        }
        let journal = open(dir.path(), true);
        assert!(journal.completed(0, 0, &schema).unwrap().map(|c| c.batches).is_some());
        assert!(journal.completed(0, 1, &schema).unwrap().map(|c| c.batches).is_some());
        assert!(journal.completed(0, 2, &schema).unwrap().map(|c| c.batches).is_none(), "never handed over");
        journal.finish(true).unwrap();
    }

    #[test]
    fn a_line_cut_short_by_a_crash_does_not_swallow_the_next_run_s_lines() {
        let dir = tempfile::tempdir().unwrap();
        let batch = plain();
        let schema = batch.schema();
        let record = |resume: bool, task: u64| {
            let journal = open(dir.path(), resume);
            let mut local = Local::default();
            journal.record(&mut local, 0, task, (0, 0), &schema, std::slice::from_ref(&batch)).unwrap();
            journal.hand_over(&mut local, true).unwrap();
            journal.finish(false).unwrap();
        };
        record(false, 0);
        // Killed while writing a line.
        let path = dir.path().join("journal.jsonl");
        let mut lines = std::fs::read(&path).unwrap();
        lines.extend_from_slice(b"{\"phase\":0,\"off");
        std::fs::write(&path, lines).unwrap();
        record(true, 1);
        let journal = open(dir.path(), true);
        assert!(journal.has(0, 0) && journal.has(0, 1), "{}", std::fs::read_to_string(&path).unwrap());
        journal.finish(true).unwrap();
    }

    #[test]
    fn a_stale_line_naming_bytes_since_overwritten_is_not_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let batch = plain();
        let schema = batch.schema();
        {
            let journal = open(dir.path(), false);
            let mut local = Local::default();
            journal.record(&mut local, 0, 1, (0, 0), &schema, std::slice::from_ref(&batch)).unwrap();
            journal.hand_over(&mut local, true).unwrap();
            journal.finish(false).unwrap();
        }
        // Task 0's line names the same place, but bytes that were lost
        // (another checksum), as after a machine crash and a later run.
        let path = dir.path().join("journal.jsonl");
        let mut lines = std::fs::read(&path).unwrap();
        let e = Index::read(std::str::from_utf8(&lines).unwrap().lines().map(String::from)).get(0, 1).unwrap();
        index::write_line(&mut lines, 0, e.offset, e.len, 0, 0, [(0, e.rows, 0, 0)].into_iter());
        std::fs::write(&path, lines).unwrap();
        let journal = open(dir.path(), true);
        assert_eq!(journal.completed(0, 1, &schema).unwrap().map(|c| c.batches), Some(vec![batch.clone()]));
        assert_eq!(journal.completed(0, 0, &schema).unwrap().map(|c| c.batches), None);
        journal.finish(true).unwrap();
    }
}
