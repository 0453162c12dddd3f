//! The shuffle's shared parts: how rows are partitioned by key, and the
//! objects a shuffle through object storage is made of, which the engine
//! (writing for a map task whose function ran here or answered with
//! records) and `fanout serve` (writing its own map output when the event
//! says `shuffle_to`) both write, so that either side's objects read the
//! same.
//!
//! An object holds every partition's records as JSON lines, partition
//! after partition, then one last line indexing them:
//! `{"index": [[partition, offset, length, records], ...]}`. A reduce
//! invocation is sent its partition's [`Piece`]s.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use fanout_datasets::Storage;

use crate::external::codec::{IoFormat, encode};
pub use crate::function::ShuffleTo;
use crate::function::{FunctionError, Piece};
use crate::wire::ShuffleRef;

/// Splits rows by partition: a hash of their key columns (xxh3 of a lone
/// utf8 key's bytes, else of the key's row encoding), modulo the number of
/// partitions.
pub struct Partitioner {
    key: Vec<usize>,
    n: usize,
    converter: RowConverter,
}

impl Partitioner {
    /// Partitions into `n` by `key` (column positions in `schema`).
    pub fn new(schema: &Schema, key: Vec<usize>, n: usize) -> Result<Self, ArrowError> {
        let fields = key.iter().map(|&k| SortField::new(schema.field(k).data_type().clone())).collect();
        Ok(Partitioner { key, n: n.max(1), converter: RowConverter::new(fields)? })
    }

    /// Partitions by the key columns named `key`: an error names a column
    /// `schema` does not have.
    pub fn by_name(schema: &Schema, key: &[String], n: usize) -> Result<Self, ArrowError> {
        let key = key.iter().map(|k| schema.index_of(k)).collect::<Result<Vec<_>, _>>()?;
        Partitioner::new(schema, key, n)
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        self.n
    }

    /// The rows of `batches`, per partition (empty batches dropped).
    pub fn split(&self, batches: Vec<RecordBatch>) -> Result<Vec<Vec<RecordBatch>>, ArrowError> {
        let mut pieces: Vec<Vec<RecordBatch>> = vec![Vec::new(); self.n];
        if self.n == 1 {
            pieces[0] = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
            return Ok(pieces);
        }
        for batch in batches.into_iter().filter(|b| b.num_rows() > 0) {
            for (p, piece) in self.partition(&batch)? {
                pieces[p].push(piece);
            }
        }
        Ok(pieces)
    }

    /// `batch`'s rows, by partition.
    pub fn partition(&self, batch: &RecordBatch) -> Result<Vec<(usize, RecordBatch)>, ArrowError> {
        let n = self.n;
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut place = |i: usize, bytes: &[u8]| {
            let p = (xxhash_rust::xxh3::xxh3_64(bytes) % n as u64) as usize;
            indices[p].push(i as u32);
        };
        match self.utf8_key(batch) {
            // One string key: hash its bytes (a null goes with "").
            Some(strings) => {
                for i in 0..strings.len() {
                    place(i, if strings.is_valid(i) { strings.value(i).as_bytes() } else { b"" });
                }
            }
            None => {
                let keys: Vec<_> = self.key.iter().map(|&k| batch.column(k).clone()).collect();
                let rows = self.converter.convert_columns(&keys)?;
                for (i, row) in rows.iter().enumerate() {
                    place(i, row.as_ref());
                }
            }
        }
        let mut pieces = Vec::new();
        for (p, idx) in indices.into_iter().enumerate() {
            if idx.len() == batch.num_rows() {
                pieces.push((p, batch.clone()));
            } else if !idx.is_empty() {
                let idx = UInt32Array::from(idx);
                pieces.push((p, arrow_select::take::take_record_batch(batch, &idx)?));
            }
        }
        Ok(pieces)
    }

    /// The key column, when the key is one utf8 column.
    fn utf8_key<'b>(&self, batch: &'b RecordBatch) -> Option<&'b StringArray> {
        match self.key[..] {
            [k] => batch.column(k).as_string_opt::<i32>(),
            _ => None,
        }
    }
}

/// Partitions `batches` and writes them as the object `url` with one
/// PUT: the pieces written, by partition (none when there are no rows,
/// and then no object).
pub fn write(
    storage: &Storage,
    url: &str,
    schema: &SchemaRef,
    partitioner: &Partitioner,
    batches: Vec<RecordBatch>,
) -> Result<Vec<(usize, Piece)>, String> {
    let parts = partitioner.split(batches).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    let mut index = Vec::new();
    for (p, batches) in parts.iter().enumerate() {
        let records: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if records == 0 {
            continue;
        }
        let offset = body.len() as u64;
        body.extend(encode(IoFormat::Jsonl, schema, batches)?);
        let length = body.len() as u64 - offset;
        index.push((p, Piece { path: url.to_string(), offset, length, records: records as u64 }));
    }
    if index.is_empty() {
        return Ok(index);
    }
    let trailer: Vec<[u64; 4]> = index.iter().map(|(p, x)| [*p as u64, x.offset, x.length, x.records]).collect();
    body.extend(serde_json::json!({ "index": trailer }).to_string().bytes());
    body.push(b'\n');
    storage.put(url, body).map_err(|e| e.to_string())?;
    Ok(index)
}

impl ShuffleRef {
    /// The pieces' records as JSON object lines, read from `storage` with
    /// a ranged GET each.
    pub(crate) fn lines(&self, storage: &Storage) -> Result<Vec<u8>, FunctionError> {
        if self.format != "jsonl" {
            let message = format!("the shuffle's format is `{}`; this host reads jsonl", self.format);
            return Err(FunctionError::permanent(message));
        }
        let mut lines = Vec::with_capacity(self.pieces.iter().map(|p| p.length as usize).sum());
        for p in &self.pieces {
            // A store that did not answer may answer the next attempt.
            let bytes = (storage.read_range(&p.path, p.offset, p.length))
                .map_err(|e| FunctionError::transient(format!("the shuffle piece: {e}")))?;
            lines.extend_from_slice(&bytes);
        }
        Ok(lines)
    }
}

/// Partitions a map invocation's output `out` and writes it to `storage`
/// as the object `to` names: the reply naming the pieces written.
pub(crate) fn write_reply(storage: &Storage, to: &ShuffleTo, out: Vec<RecordBatch>) -> Result<Vec<u8>, FunctionError> {
    let Some(schema) = out.first().map(RecordBatch::schema) else {
        return Ok(pieces_reply(&[]));
    };
    let partitioner = Partitioner::by_name(&schema, &to.key, to.partitions)
        .map_err(|e| FunctionError::permanent(format!("shuffle_to: the output's key: {e}")))?;
    // A store that failed may not fail the next attempt.
    let pieces = write(storage, &to.path, &schema, &partitioner, out)
        .map_err(|e| FunctionError::transient(format!("shuffle_to {}: {e}", to.path)))?;
    Ok(pieces_reply(&pieces))
}

/// The reply of a map invocation that wrote its output
/// (`{"pieces": [[partition, offset, length, records], ...]}`), for the
/// object `path`.
pub fn pieces_reply(pieces: &[(usize, Piece)]) -> Vec<u8> {
    let rows: Vec<[u64; 4]> = pieces.iter().map(|(p, x)| [*p as u64, x.offset, x.length, x.records]).collect();
    serde_json::json!({ "pieces": rows }).to_string().into_bytes()
}

/// The pieces a map invocation's reply names, if it is such a reply.
pub fn parse_pieces_reply(body: &[u8], path: &str) -> Option<Vec<(usize, Piece)>> {
    #[derive(serde::Deserialize)]
    struct Reply {
        pieces: Vec<[u64; 4]>,
    }
    let reply: Reply = serde_json::from_slice(body).ok()?;
    let piece = |[p, offset, length, records]: [u64; 4]| {
        (p as usize, Piece { path: path.to_string(), offset, length, records })
    };
    Some(reply.pieces.into_iter().map(piece).collect())
}

/// The schema of a batch of pieces: what a map task's output is when its
/// records went to object storage.
pub fn pieces_schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("__fanout_partition", DataType::UInt64, false),
                Field::new("__fanout_path", DataType::Utf8, false),
                Field::new("__fanout_offset", DataType::UInt64, false),
                Field::new("__fanout_length", DataType::UInt64, false),
                Field::new("__fanout_records", DataType::UInt64, false),
            ]))
        })
        .clone()
}

/// Pieces as a batch of [`pieces_schema`].
pub fn pieces_batch(pieces: &[(usize, Piece)]) -> RecordBatch {
    let u64s = |f: &dyn Fn(&(usize, Piece)) -> u64| Arc::new(pieces.iter().map(f).collect::<UInt64Array>()) as ArrayRef;
    let columns = vec![
        u64s(&|(p, _)| *p as u64),
        Arc::new(pieces.iter().map(|(_, x)| Some(x.path.as_str())).collect::<StringArray>()) as ArrayRef,
        u64s(&|(_, x)| x.offset),
        u64s(&|(_, x)| x.length),
        u64s(&|(_, x)| x.records),
    ];
    RecordBatch::try_new(pieces_schema(), columns).expect("the pieces schema")
}

/// Whether `batch` is a batch of pieces.
pub fn is_pieces(batch: &RecordBatch) -> bool {
    // Cheap first: this is asked of every invocation's output.
    let schema = batch.schema_ref();
    schema.fields().len() == 5
        && schema.field(0).name() == "__fanout_partition"
        && schema.as_ref() == pieces_schema().as_ref()
}

/// The pieces of a batch of [`pieces_schema`].
pub fn pieces_of(batch: &RecordBatch) -> Vec<(usize, Piece)> {
    let u64s = |i: usize| batch.column(i).as_primitive::<UInt64Type>();
    let (parts, paths, offsets, lengths, records) =
        (u64s(0), batch.column(1).as_string::<i32>(), u64s(2), u64s(3), u64s(4));
    (0..batch.num_rows())
        .map(|i| {
            let piece = Piece {
                path: paths.value(i).to_string(),
                offset: offsets.value(i),
                length: lengths.value(i),
                records: records.value(i),
            };
            (parts.value(i) as usize, piece)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_go_through_a_batch_and_a_reply_unchanged() {
        let pieces = vec![
            (0, Piece { path: "s3://b/t/m1.jsonl".into(), offset: 0, length: 10, records: 2 }),
            (3, Piece { path: "s3://b/t/m1.jsonl".into(), offset: 10, length: 7, records: 1 }),
        ];
        let batch = pieces_batch(&pieces);
        assert!(is_pieces(&batch));
        assert_eq!(pieces_of(&batch), pieces);
        assert_eq!(parse_pieces_reply(&pieces_reply(&pieces), "s3://b/t/m1.jsonl"), Some(pieces));
        assert_eq!(parse_pieces_reply(b"{\"records\": []}", "x"), None);
    }

    #[test]
    fn rows_of_a_key_go_to_one_partition_whatever_their_batch() {
        let batch = RecordBatch::try_from_iter([
            ("k", Arc::new(StringArray::from(vec!["a", "b", "a", "c", "b"])) as ArrayRef),
            ("v", Arc::new(UInt64Array::from(vec![1, 2, 3, 4, 5])) as ArrayRef),
        ])
        .unwrap();
        let p = Partitioner::by_name(&batch.schema(), &["k".into()], 4).unwrap();
        let parts = p.split(vec![batch.clone(), batch.slice(2, 3)]).unwrap();
        let mut seen = std::collections::HashMap::new();
        for (i, part) in parts.iter().enumerate() {
            for b in part {
                for k in b.column(0).as_string::<i32>().iter().flatten() {
                    assert_eq!(*seen.entry(k.to_string()).or_insert(i), i, "{k} in two partitions");
                }
            }
        }
        assert_eq!(parts.iter().flatten().map(RecordBatch::num_rows).sum::<usize>(), 8);
        assert!(Partitioner::by_name(&batch.schema(), &["nope".into()], 4).is_err());
    }
}
