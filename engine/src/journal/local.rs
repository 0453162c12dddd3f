//! A worker's side of the journal: the finished tasks it collects
//! ([`Local`]), their outputs encoded as Arrow IPC record batch messages
//! (small ones saved together, one message for many tiny tasks), handed to
//! the syncer in bunches ([`Journal::hand_over`]).

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::{HAND_OVER_AGE, HAND_OVER_BYTES, HAND_OVER_TASKS, Journal, PENDING_BYTES, SHARED_BYTES};
use crate::error::EngineError;
use crate::records::Columns;

/// A worker's side of the journal: the batch it fills, its small outputs
/// waiting to be saved together, and its IPC encoder's buffers, reused
/// from task to task.
#[derive(Default)]
pub(crate) struct Local {
    /// Finished tasks not yet handed over.
    pub(crate) batch: Batch,
    pub(super) context: arrow_ipc::writer::IpcWriteContext,
    /// Small outputs not yet encoded: each task's line (its `skip` still
    /// to be set), their batches, their schema and size.
    pub(super) pending: Vec<Done>,
    pub(super) pending_batches: Vec<RecordBatch>,
    pub(super) pending_schema: Option<SchemaRef>,
    pub(super) pending_bytes: usize,
    /// When the oldest task not yet handed over finished.
    pub(super) since: Option<std::time::Instant>,
}

/// A worker's finished tasks on their way to the syncer.
#[derive(Default)]
pub(crate) struct Batch {
    /// The saved outputs, one after another.
    pub(super) bytes: Vec<u8>,
    /// Per saved output: its bytes' length, and how many tasks of `tasks`
    /// (the next ones) it holds.
    pub(super) saved: Vec<(usize, usize)>,
    /// Per task: its line, with the rows before its own in its saved output.
    pub(super) tasks: Vec<Done>,
    /// Invocation records of the worker's, up to its last task: they
    /// reach the log before the tasks are journaled.
    pub(crate) records: Columns,
}

/// A finished task, as a worker's batch holds it until the syncer
/// journals it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Done {
    pub(super) phase: usize,
    pub(super) task: u64,
    /// Rows of its saved output before its own.
    pub(super) skip: u64,
    pub(super) rows: u64,
    /// Records it read from its split.
    pub(super) input: u64,
    /// Records of its split that could not be read.
    pub(super) bad: u64,
}

impl Journal {
    /// Adds a completed task's output to a worker's batch: encoded now if
    /// it is large or has dictionaries, else held to be saved with the
    /// other small outputs of the task group. `input` is the records the
    /// task read from its split, and `bad` those it could not.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        local: &mut Local,
        phase: usize,
        task: u64,
        (input, bad): (u64, u64),
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(), EngineError> {
        local.since.get_or_insert_with(std::time::Instant::now);
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let size: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        let done = Done { phase, task, skip: 0, rows, input, bad };
        if size > SHARED_BYTES || has_dictionaries(schema) {
            let len = self.encode(local, schema, batches)?;
            local.batch.saved.push((len, 1));
            local.batch.tasks.push(done);
            return Ok(());
        }
        if local.pending_schema.as_ref().is_some_and(|s| !Arc::ptr_eq(s, schema) && s != schema) {
            self.save_pending(local)?;
        }
        local.pending_schema.get_or_insert_with(|| schema.clone());
        local.pending.push(done);
        local.pending_batches.extend(batches.iter().filter(|b| b.num_rows() > 0).cloned());
        local.pending_bytes += size;
        if local.pending_bytes > PENDING_BYTES {
            self.save_pending(local)?;
        }
        Ok(())
    }

    /// Encodes the small outputs held as one record batch.
    /// On an error the held outputs are dropped (their tasks are not
    /// journaled, and will run again on resume) and the batch is left as
    /// it was before.
    fn save_pending(&self, local: &mut Local) -> Result<(), EngineError> {
        let Some(schema) = local.pending_schema.take() else { return Ok(()) };
        let batches = std::mem::take(&mut local.pending_batches);
        local.pending_bytes = 0;
        let merged = match batches.len() {
            0 => Ok(None),
            1 => Ok(batches.into_iter().next()),
            _ => arrow_select::concat::concat_batches(&schema, &batches).map(Some),
        };
        let start = local.batch.bytes.len();
        let len = merged
            .map_err(|e| EngineError::io(&self.data_path, std::io::Error::other(e)))
            .and_then(|merged| self.encode(local, &schema, merged.as_slice()));
        let len = match len {
            Ok(len) => len,
            Err(e) => {
                local.batch.bytes.truncate(start);
                local.pending.clear();
                return Err(e);
            }
        };
        local.batch.saved.push((len, local.pending.len()));
        let mut skip = 0;
        for done in local.pending.drain(..) {
            local.batch.tasks.push(Done { skip, ..done });
            skip += done.rows;
        }
        Ok(())
    }

    /// Appends `batches` to the worker's bytes; returns their length.
    fn encode(&self, local: &mut Local, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<usize, EngineError> {
        let arrow = |e: arrow_schema::ArrowError| EngineError::io(&self.data_path, std::io::Error::other(e));
        let Local { batch, context, .. } = local;
        let start = batch.bytes.len();
        if has_dictionaries(schema) {
            let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut batch.bytes, schema).map_err(arrow)?;
            for b in batches {
                w.write(b).map_err(arrow)?;
            }
            w.finish().map_err(arrow)?;
        } else {
            // Record batch messages alone: no schema message per task.
            let generator = arrow_ipc::writer::IpcDataGenerator::default();
            let options = arrow_ipc::writer::IpcWriteOptions::default();
            let mut tracker = arrow_ipc::writer::DictionaryTracker::new(false);
            for b in batches {
                let (_, message) = generator.encode(b, &mut tracker, &options, context).map_err(arrow)?;
                arrow_ipc::writer::write_message(&mut batch.bytes, message, &options).map_err(arrow)?;
            }
        }
        Ok(batch.bytes.len() - start)
    }

    /// Hands a worker's batch to the syncer, its small outputs saved
    /// first: `now`, or once it holds enough (see [`HAND_OVER_TASKS`]).
    /// Called between task groups.
    pub(crate) fn hand_over(&self, local: &mut Local, now: bool) -> Result<(), EngineError> {
        self.hand_over_at(local, now, std::time::Instant::now())
    }

    /// [`Journal::hand_over`] at time `at`.
    pub(super) fn hand_over_at(&self, local: &mut Local, now: bool, at: std::time::Instant) -> Result<(), EngineError> {
        let tasks = local.batch.tasks.len() + local.pending.len();
        let full = tasks >= HAND_OVER_TASKS
            || local.batch.bytes.len() + local.pending_bytes >= HAND_OVER_BYTES
            || local.since.is_some_and(|t| at.saturating_duration_since(t) >= HAND_OVER_AGE);
        if !now && !full {
            return Ok(());
        }
        local.since = None;
        // What is already in the batch (invocation records, large outputs)
        // goes over even if the small outputs cannot be saved.
        let saved = self.save_pending(local);
        if !(local.batch.tasks.is_empty() && local.batch.records.is_empty()) {
            let batch = std::mem::replace(&mut local.batch, self.spare.try_recv().unwrap_or_default());
            if let Some(q) = self.queue.lock().expect("not poisoned").as_ref() {
                let _ = q.send(batch);
            }
        }
        saved
    }
}

/// Whether a schema has dictionary-encoded columns, at any depth (their
/// messages need the schema's dictionary ids: such tasks are saved as
/// whole streams).
pub(super) fn has_dictionaries(schema: &SchemaRef) -> bool {
    fn dict(t: &arrow_schema::DataType) -> bool {
        use arrow_schema::DataType as T;
        match t {
            T::Dictionary(..) => true,
            T::List(f)
            | T::LargeList(f)
            | T::FixedSizeList(f, _)
            | T::ListView(f)
            | T::LargeListView(f)
            | T::Map(f, _) => dict(f.data_type()),
            T::Struct(fs) => fs.iter().any(|f| dict(f.data_type())),
            T::Union(fs, _) => fs.iter().any(|(_, f)| dict(f.data_type())),
            T::RunEndEncoded(_, v) => dict(v.data_type()),
            _ => false,
        }
    }
    schema.fields().iter().any(|f| dict(f.data_type()))
}
