//! The shuffle through object storage (as Starling and Locus shuffle),
//! for keyed stages whose functions run on other hosts, when the job names
//! a scratch prefix (`[storage] scratch = "s3://bucket/tmp/"`).
//!
//! Each map task's output is partitioned by key exactly as the local
//! shuffle partitions it ([`Partitioner`]) and written as one object,
//! `{scratch}{run id}/{stage}/m{task}.jsonl`: every partition's records as
//! JSON lines, partition after partition, then one last line, the index
//! (`{"index": [[partition, offset, length, records], ...]}`). The
//! coordinator keeps only the pieces' descriptors. A reduce task is sent
//! its partition's pieces, in map task order, and its function reads them
//! with ranged GETs ([`Invocation::pieces`](fanout_workers::Invocation)),
//! so a partition is never held by the coordinator nor bound by the
//! payload limit. The objects are deleted once the run's tasks are done,
//! whether it succeeded or failed (a resumed run writes them again from
//! the journal).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fanout_datasets::{OpenFiles, Storage};
use fanout_workers::Piece;
use fanout_workers::external::codec::{IoFormat, encode};

use crate::error::EngineError;
use crate::shuffle::Partitioner;
use crate::sink::{Outputs, TaskSink};
use crate::source::{Input, Loaded, TaskSource};

/// One keyed stage's shuffle through object storage.
pub(crate) struct Scratch {
    schema: SchemaRef,
    partitioner: Partitioner,
    /// Where its objects go: `{scratch}{run id}/{stage}/`.
    prefix: String,
    storage: Arc<Storage>,
    /// Per partition: the map task and its piece, in the order written.
    parts: Vec<Mutex<Vec<(u64, Piece)>>>,
    /// The objects written, to delete.
    objects: Mutex<Vec<String>>,
    /// Bytes written.
    pub(crate) written: AtomicU64,
}

impl Scratch {
    /// A shuffle of `schema`'s rows into `partitions` by `key`, written
    /// under `prefix`.
    pub(crate) fn new(
        schema: SchemaRef,
        key: Vec<usize>,
        partitions: usize,
        storage: Arc<Storage>,
        prefix: String,
    ) -> Result<Self, EngineError> {
        let partitioner = Partitioner::new(&schema, key, partitions).map_err(|e| scratch_error(&prefix, e))?;
        Ok(Scratch {
            schema,
            partitioner,
            prefix,
            storage,
            parts: (0..partitions.max(1)).map(|_| Mutex::default()).collect(),
            objects: Mutex::default(),
            written: AtomicU64::new(0),
        })
    }

    /// The number of partitions.
    pub(crate) fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// Partitions map task `task`'s output and writes it as one object.
    /// A task with no rows writes nothing.
    pub(crate) fn insert(&self, task: u64, batches: Vec<RecordBatch>) -> Result<(), EngineError> {
        let url = format!("{}m{task}.jsonl", self.prefix);
        let pieces = self.partitioner.split(batches).map_err(|e| scratch_error(&url, e))?;
        let mut body = Vec::new();
        let mut index = Vec::new();
        for (p, batches) in pieces.iter().enumerate() {
            let records: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if records == 0 {
                continue;
            }
            let offset = body.len() as u64;
            body.extend(encode(IoFormat::Jsonl, &self.schema, batches).map_err(|e| scratch_error(&url, e))?);
            index.push((
                p,
                Piece { path: url.clone(), offset, length: body.len() as u64 - offset, records: records as u64 },
            ));
        }
        if index.is_empty() {
            return Ok(());
        }
        let trailer: Vec<[u64; 4]> = index.iter().map(|(p, x)| [*p as u64, x.offset, x.length, x.records]).collect();
        body.extend(serde_json::json!({ "index": trailer }).to_string().bytes());
        body.push(b'\n');
        let n = body.len() as u64;
        self.storage.put(&url, body).map_err(EngineError::Output)?;
        self.written.fetch_add(n, Relaxed);
        self.objects.lock().expect("not poisoned").push(url);
        for (p, piece) in index {
            self.parts[p].lock().expect("not poisoned").push((task, piece));
        }
        Ok(())
    }

    /// Partition `p`'s pieces, in map task order.
    fn pieces(&self, p: usize) -> Arc<[Piece]> {
        let mut pieces = self.parts[p].lock().expect("not poisoned").clone();
        pieces.sort_by_key(|(task, _)| *task);
        pieces.into_iter().map(|(_, piece)| piece).collect()
    }

    /// Deletes the objects written so far.
    pub(crate) fn delete(&self) -> Result<(), EngineError> {
        let objects = std::mem::take(&mut *self.objects.lock().expect("not poisoned"));
        self.storage.delete(&objects).map_err(EngineError::Output)
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

    fn push(&self, outputs: &mut Outputs) -> Result<(), EngineError> {
        outputs.drain(..).try_for_each(|(task, out)| self.insert(task, out))
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
