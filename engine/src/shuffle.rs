//! The shuffle: map-side output of a keyed stage, partitioned by a hash of
//! its key columns, held in memory up to a budget shared by the run and
//! spilled to Arrow IPC files in the run directory beyond it.
//!
//! A partition's batches are handed to its reduce task in (map task,
//! batch) order, whatever order they arrived in, so a reduce sees the same
//! input on every run and at every concurrency.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::SchemaRef;

use crate::error::EngineError;

/// Where a batch of a partition is.
enum Stored {
    Memory(RecordBatch),
    Spilled(PathBuf),
}

/// One keyed stage's shuffle.
pub(crate) struct Shuffle<'a> {
    schema: SchemaRef,
    key: Vec<usize>,
    parts: Vec<Mutex<Vec<(u64, u32, Stored)>>>,
    budget: u64,
    used: &'a AtomicU64,
    dir: PathBuf,
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
    ) -> Self {
        Shuffle {
            schema,
            key,
            parts: (0..partitions.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            budget,
            used,
            dir,
            spilled: AtomicU64::new(0),
        }
    }

    /// The number of partitions.
    pub(crate) fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// Partitions the output of map task `task` and stores it.
    pub(crate) fn insert(&self, task: u64, batches: Vec<RecordBatch>) -> Result<(), EngineError> {
        let arrow = |e: arrow_schema::ArrowError| EngineError::io(&self.dir, std::io::Error::other(e));
        let n = self.parts.len();
        let converter = if n > 1 {
            let fields = self.key.iter().map(|&k| SortField::new(self.schema.field(k).data_type().clone())).collect();
            Some(RowConverter::new(fields).map_err(arrow)?)
        } else {
            None
        };
        let mut seq = 0u32;
        for batch in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            let pieces: Vec<(usize, RecordBatch)> = if let Some(converter) = &converter {
                let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n];
                let mut place = |i: usize, bytes: &[u8]| {
                    let p = (xxhash_rust::xxh3::xxh3_64(bytes) % n as u64) as usize;
                    indices[p].push(i as u32);
                };
                match self.utf8_key(&batch) {
                    // One string key: hash its bytes (a null goes with "").
                    Some(strings) => {
                        for i in 0..strings.len() {
                            place(i, if strings.is_valid(i) { strings.value(i).as_bytes() } else { b"" });
                        }
                    }
                    None => {
                        let keys: Vec<_> = self.key.iter().map(|&k| batch.column(k).clone()).collect();
                        let rows = converter.convert_columns(&keys).map_err(arrow)?;
                        for (i, row) in rows.iter().enumerate() {
                            place(i, row.as_ref());
                        }
                    }
                }
                let mut pieces = Vec::new();
                for (p, idx) in indices.into_iter().enumerate() {
                    if !idx.is_empty() {
                        let idx = UInt32Array::from(idx);
                        pieces.push((p, arrow_select::take::take_record_batch(&batch, &idx).map_err(arrow)?));
                    }
                }
                pieces
            } else {
                vec![(0, batch)]
            };
            for (p, piece) in pieces {
                let size = piece.get_array_memory_size() as u64;
                let stored = if self.used.fetch_add(size, Relaxed) + size > self.budget {
                    self.used.fetch_sub(size, Relaxed);
                    Stored::Spilled(self.spill(p, task, seq, &piece)?)
                } else {
                    Stored::Memory(piece)
                };
                self.parts[p].lock().expect("not poisoned").push((task, seq, stored));
                seq += 1;
            }
        }
        Ok(())
    }

    /// The key column, when the key is one utf8 column.
    fn utf8_key<'b>(&self, batch: &'b RecordBatch) -> Option<&'b arrow_array::StringArray> {
        match self.key[..] {
            [k] => batch.column(k).as_string_opt::<i32>(),
            _ => None,
        }
    }

    fn spill(&self, p: usize, task: u64, seq: u32, batch: &RecordBatch) -> Result<PathBuf, EngineError> {
        let path = self.dir.join(format!("p{p}-t{task}-{seq}.arrow"));
        let io = |e: std::io::Error| EngineError::io(&path, e);
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir).map_err(io)?;
        }
        let file = File::create(&path).map_err(io)?;
        let arrow = |e: arrow_schema::ArrowError| EngineError::io(&path, std::io::Error::other(e));
        let mut w = arrow_ipc::writer::FileWriter::try_new(BufWriter::new(file), &batch.schema()).map_err(arrow)?;
        w.write(batch).map_err(arrow)?;
        w.finish().map_err(arrow)?;
        self.spilled.fetch_add(std::fs::metadata(&path).map_err(io)?.len(), Relaxed);
        Ok(path)
    }

    /// Takes partition `p`'s batches, in (task, batch) order, reading back
    /// and deleting its spill files.
    pub(crate) fn take(&self, p: usize) -> Result<Vec<RecordBatch>, EngineError> {
        let mut entries = std::mem::take(&mut *self.parts[p].lock().expect("not poisoned"));
        entries.sort_by_key(|(task, seq, _)| (*task, *seq));
        let mut out = Vec::with_capacity(entries.len());
        for (_, _, stored) in entries {
            match stored {
                Stored::Memory(b) => {
                    self.used.fetch_sub(b.get_array_memory_size() as u64, Relaxed);
                    out.push(b);
                }
                Stored::Spilled(path) => {
                    let io = |e: std::io::Error| EngineError::io(&path, e);
                    let file = File::open(&path).map_err(io)?;
                    let arrow = |e: arrow_schema::ArrowError| EngineError::io(&path, std::io::Error::other(e));
                    for b in arrow_ipc::reader::FileReader::try_new(file, None).map_err(arrow)? {
                        out.push(b.map_err(arrow)?);
                    }
                    std::fs::remove_file(&path).map_err(io)?;
                }
            }
        }
        Ok(out)
    }
}
