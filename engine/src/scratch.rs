//! The shuffle through object storage (as Starling and Locus shuffle),
//! for keyed stages whose functions run on other hosts, when the job names
//! a scratch prefix (`[storage] scratch = "s3://bucket/tmp/"`).
//!
//! Each map task's output is partitioned by key exactly as the local
//! shuffle partitions it ([`Partitioner`]) and written as one object
//! (see [`fanout_workers::shuffle`]): every partition's records as JSON
//! lines, then an index line. When the map step is a remote function, it
//! is asked to write the object itself (`shuffle_to`,
//! `{scratch}{run id}/{stage}/m{task}.a{attempt}.jsonl`) and answers with
//! the pieces; if it answers with records instead, the attempt writes
//! them. Otherwise the sink writes each map task's records as
//! `.../m{task}.jsonl`. The coordinator keeps only the pieces'
//! descriptors. A reduce task is sent
//! its partition's pieces, in map task order, and its function reads them
//! with ranged GETs ([`Invocation::pieces`](fanout_workers::Invocation)),
//! so a partition is never held by the coordinator nor bound by the
//! payload limit. The objects are deleted (every object under the run's
//! prefix) once the run succeeds, or fails without a journal; a failed
//! run with a journal keeps them for `--resume`, whose journal names them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_datasets::{OpenFiles, Storage};
use fanout_workers::Piece;
use fanout_workers::shuffle::{Partitioner, ShuffleTo, is_pieces, pieces_batch, pieces_of, pieces_schema, write};

use crate::error::EngineError;
use crate::sink::{Outputs, TaskSink};
use crate::source::{Input, Loaded, TaskSource};

/// One keyed stage's shuffle through object storage.
pub(crate) struct Scratch {
    /// The schema of the records shuffled.
    records: SchemaRef,
    /// Whether its tasks hand it pieces (their remote map functions wrote
    /// their output, or the attempt did) rather than records.
    pieces_in: bool,
    /// The schema of what its tasks hand it.
    schema: SchemaRef,
    partitioner: Partitioner,
    key: Vec<String>,
    /// Where its objects go: `{scratch}{run id}/{stage}/`.
    prefix: String,
    storage: Arc<Storage>,
    /// Per partition: the map task and its piece.
    parts: Vec<Mutex<Vec<(u64, Piece)>>>,
    /// Bytes of records written.
    pub(crate) written: AtomicU64,
}

impl Scratch {
    /// A shuffle of `schema`'s rows into `partitions` by `key`, written
    /// under `prefix`; with `pieces_in`, its tasks hand it pieces.
    pub(crate) fn new(
        schema: SchemaRef,
        key: Vec<usize>,
        partitions: usize,
        storage: Arc<Storage>,
        prefix: String,
        pieces_in: bool,
    ) -> Result<Self, EngineError> {
        let names = key.iter().map(|&k| schema.field(k).name().clone()).collect();
        let partitioner = Partitioner::new(&schema, key, partitions).map_err(|e| scratch_error(&prefix, e))?;
        Ok(Scratch {
            schema: if pieces_in { pieces_schema() } else { schema.clone() },
            records: schema,
            pieces_in,
            partitioner,
            key: names,
            prefix,
            storage,
            parts: (0..partitions.max(1)).map(|_| Mutex::default()).collect(),
            written: AtomicU64::new(0),
        })
    }

    /// The number of partitions.
    pub(crate) fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// What a remote map function of task `task`'s attempt `attempt` is
    /// asked to do with its output.
    pub(crate) fn shuffle_to(&self, task: u64, attempt: u32, backup: bool) -> ShuffleTo {
        let b = if backup { "b" } else { "" };
        ShuffleTo {
            key: self.key.clone(),
            partitions: self.partitions(),
            path: format!("{}m{task}.a{attempt}{b}.jsonl", self.prefix),
        }
    }

    /// Partitions `batches` and writes them as the object `url`: the
    /// pieces, as a batch.
    pub(crate) fn write(&self, url: &str, batches: Vec<RecordBatch>) -> Result<RecordBatch, EngineError> {
        let pieces =
            write(&self.storage, url, &self.records, &self.partitioner, batches).map_err(|e| scratch_error(url, e))?;
        Ok(pieces_batch(&pieces))
    }

    /// Keeps map task `task`'s pieces.
    fn keep(&self, task: u64, pieces: Vec<(usize, Piece)>) {
        for (p, piece) in pieces {
            self.written.fetch_add(piece.length, Relaxed);
            self.parts[p].lock().expect("not poisoned").push((task, piece));
        }
    }

    /// Partition `p`'s pieces, in map task order.
    fn pieces(&self, p: usize) -> Arc<[Piece]> {
        let mut pieces = self.parts[p].lock().expect("not poisoned").clone();
        pieces.sort_by_key(|(task, _)| *task);
        pieces.into_iter().map(|(_, piece)| piece).collect()
    }

    /// Deletes every object under its prefix: those it wrote, those its
    /// remote functions wrote, and those of attempts that lost.
    pub(crate) fn delete(&self) -> Result<(), EngineError> {
        self.storage.delete_prefix(&self.prefix).map(drop).map_err(EngineError::Output)
    }
}

/// An error of the scratch object `url`.
fn scratch_error(url: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::io(url, std::io::Error::other(format!("the shuffle's scratch object: {e}")))
}

impl TaskSink for Scratch {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Records are partitioned and written, an object per task; pieces
    /// (written already) are kept.
    fn push(&self, outputs: &mut Outputs) -> Result<(), EngineError> {
        for (task, out) in outputs.drain(..) {
            if self.pieces_in {
                self.keep(task, out.iter().filter(|b| is_pieces(b)).flat_map(pieces_of).collect());
            } else {
                let pieces = self.write(&format!("{}m{task}.jsonl", self.prefix), out)?;
                self.keep(task, pieces_of(&pieces));
            }
        }
        Ok(())
    }
}

/// The partitions of a shuffle through object storage: a task each, its
/// input the partition's pieces.
pub(crate) struct ScratchPartitions<'a> {
    pub(crate) scratch: &'a Scratch,
}

impl TaskSource for ScratchPartitions<'_> {
    fn tasks(&self) -> Box<dyn Iterator<Item = Result<(u64, Input), EngineError>> + '_> {
        Box::new((0..self.scratch.partitions()).map(|p| Ok((p as u64, Input::Pieces(p, self.scratch.pieces(p))))))
    }

    fn total(&self) -> Option<u64> {
        Some(self.scratch.partitions() as u64)
    }

    fn grouped(&self) -> bool {
        false
    }

    fn skip(&self, _: &Input) -> Result<(), EngineError> {
        Ok(())
    }

    fn shareable(&self, input: Input) -> Result<Input, EngineError> {
        Ok(input)
    }

    fn load(&self, input: &Input, _: &mut OpenFiles) -> Result<Loaded, EngineError> {
        let bytes = input.pieces().map_or(0, |p| p.iter().map(|p| p.length).sum());
        Ok(Loaded { batches: Vec::new(), bytes, bad: Vec::new() })
    }
}
