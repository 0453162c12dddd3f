//! Records to bytes and back, for functions outside the process: the io
//! formats of exec functions (lines, csv, jsonl, Arrow IPC stream) and the
//! JSON records of Lambda events and responses.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Schema, SchemaRef};
use fanout_jobs::IoFormat;

/// Writes `batches` in `format`. Lines need one utf8 column (checked when
/// the stage is planned); a null is an empty line.
pub(crate) fn encode(format: IoFormat, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.get_array_memory_size()).sum::<usize>() + 64);
    match format {
        IoFormat::Lines => {
            for b in batches {
                let col = b.column(0);
                let lines = col.as_string_opt::<i32>().ok_or("lines io needs a utf8 column")?;
                for i in 0..lines.len() {
                    if lines.is_valid(i) {
                        out.extend_from_slice(lines.value(i).as_bytes());
                    }
                    out.push(b'\n');
                }
            }
        }
        IoFormat::Csv => {
            // The header goes out even when there are no rows, so that a
            // tool always sees the columns.
            let mut w = arrow_csv::WriterBuilder::new().with_header(false).build(&mut out);
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let header = RecordBatch::try_new(
                Arc::new(Schema::new(
                    names.iter().map(|n| arrow_schema::Field::new(*n, DataType::Utf8, false)).collect::<Vec<_>>(),
                )),
                names.iter().map(|n| Arc::new(StringArray::from(vec![*n])) as _).collect(),
            )
            .map_err(|e| e.to_string())?;
            w.write(&header).map_err(|e| e.to_string())?;
            for b in batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
        }
        IoFormat::Jsonl => {
            let mut w = arrow_json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow_json::writer::LineDelimited>(&mut out);
            for b in batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
        }
        IoFormat::Arrow => {
            let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, schema).map_err(|e| e.to_string())?;
            for b in batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;

/// The batch size for decoding `bytes` of one record per line: readers
/// reserve their batch size up front, and most outputs are small.
fn batch_rows(bytes: &[u8]) -> usize {
    (memchr::memchr_iter(b'\n', bytes).take(BATCH_ROWS).count() + 1).min(BATCH_ROWS)
}

/// Reads what a function wrote in `format` as batches of `schema`. Errors
/// say what did not fit and where (line numbers count from 1).
pub(crate) fn decode(format: IoFormat, bytes: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    match format {
        IoFormat::Lines => {
            let mut lines = Vec::new();
            let mut batches = Vec::new();
            if bytes.is_empty() {
                return Ok(batches);
            }
            // The last line may or may not end with a newline.
            let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            for (n, mut line) in body.split(|&b| b == b'\n').enumerate() {
                if let [rest @ .., b'\r'] = line {
                    line = rest;
                }
                let text = std::str::from_utf8(line).map_err(|e| format!("line {}: invalid UTF-8: {e}", n + 1))?;
                lines.push(text);
                if lines.len() == BATCH_ROWS {
                    batches.push(lines_batch(schema, &mut lines)?);
                }
            }
            if !lines.is_empty() {
                batches.push(lines_batch(schema, &mut lines)?);
            }
            Ok(batches)
        }
        IoFormat::Csv => {
            if bytes.is_empty() {
                return Ok(Vec::new());
            }
            let header_end = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len());
            let header = String::from_utf8_lossy(&bytes[..header_end]);
            let names: Vec<&str> =
                header.trim_end_matches('\r').split(',').map(|s| s.trim().trim_matches('"')).collect();
            let want: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            if names != want {
                return Err(format!(
                    "the csv header `{}` does not match the declared columns `{}`",
                    header.trim_end(),
                    want.join(",")
                ));
            }
            let reader = arrow_csv::ReaderBuilder::new(schema.clone())
                .with_header(true)
                .with_batch_size(batch_rows(bytes))
                .build(Cursor::new(bytes))
                .map_err(|e| e.to_string())?;
            reader.map(|b| b.map_err(|e| e.to_string())).collect()
        }
        IoFormat::Jsonl => {
            let reader = arrow_json::ReaderBuilder::new(schema.clone())
                .with_batch_size(batch_rows(bytes))
                .build(Cursor::new(bytes))
                .map_err(|e| e.to_string())?;
            reader.map(|b| b.map_err(|e| e.to_string())).collect()
        }
        IoFormat::Arrow => {
            if bytes.is_empty() {
                return Ok(Vec::new());
            }
            let reader =
                arrow_ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).map_err(|e| e.to_string())?;
            let got = reader.schema();
            if !same_columns(&got, schema) {
                return Err(format!(
                    "the arrow stream's schema {} is not the declared {}",
                    columns(&got),
                    columns(schema)
                ));
            }
            reader
                .map(|b| {
                    b.map_err(|e| e.to_string()).and_then(|b| b.with_schema(schema.clone()).map_err(|e| e.to_string()))
                })
                .collect()
        }
    }
}

fn lines_batch(schema: &SchemaRef, lines: &mut Vec<&str>) -> Result<RecordBatch, String> {
    let array = StringArray::from_iter_values(lines.drain(..));
    RecordBatch::try_new(schema.clone(), vec![Arc::new(array)]).map_err(|e| e.to_string())
}

/// Whether two schemas have the same column names and types (nullability
/// aside).
fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// `(name: type, ...)`, for messages.
pub(crate) fn columns(s: &Schema) -> String {
    let cols: Vec<String> = s.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
    format!("({})", cols.join(", "))
}

/// Writes `batches` as a JSON array of objects (nulls written as null).
pub(crate) fn json_records(batches: &[RecordBatch], out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    let mut w =
        arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::JsonArray>(&mut *out);
    for b in batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    // A writer that saw no rows writes nothing at all.
    if out.len() == start {
        out.extend_from_slice(b"[]");
    }
    Ok(())
}

/// Builds batches of `schema` from JSON objects. A value of the wrong
/// type is an error naming the record and column.
pub(crate) fn from_json_records(records: &[serde_json::Value], schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    // A declared column that no record has is a misspelling far more often
    // than a column of nulls (which a function writes as `null`).
    if !records.is_empty() {
        for f in schema.fields() {
            if !records.iter().any(|r| r.get(f.name()).is_some()) {
                let mut keys: Vec<&str> =
                    records.iter().filter_map(|r| r.as_object()).flat_map(|o| o.keys().map(String::as_str)).collect();
                keys.sort_unstable();
                keys.dedup();
                return Err(format!(
                    "has no record with the declared column `{}`; its records have: {}",
                    f.name(),
                    keys.join(", ")
                ));
            }
        }
    }
    let mut out = Vec::new();
    for (chunk_no, chunk) in records.chunks(BATCH_ROWS).enumerate() {
        // Sized to the chunk: the decoder reserves its batch size up front.
        let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
            .with_batch_size(chunk.len())
            .build_decoder()
            .map_err(|e| e.to_string())?;
        if let Some(bad) = chunk.iter().position(|r| !r.is_object()) {
            return Err(format!("record {} is not a JSON object: {}", chunk_no * BATCH_ROWS + bad, chunk[bad]));
        }
        let decoded = decoder.serialize(chunk).and_then(|_| decoder.flush());
        match decoded {
            Ok(Some(b)) => out.push(b),
            Ok(None) => {}
            Err(e) => {
                // Find the record at fault, one by one.
                for (i, r) in chunk.iter().enumerate() {
                    let mut one = arrow_json::ReaderBuilder::new(schema.clone())
                        .with_batch_size(1)
                        .build_decoder()
                        .map_err(|e| e.to_string())?;
                    if let Err(e) = one.serialize(std::slice::from_ref(r)).and_then(|_| one.flush()) {
                        return Err(format!(
                            "record {}: {e} (declared columns {})",
                            chunk_no * BATCH_ROWS + i,
                            columns(schema)
                        ));
                    }
                }
                return Err(e.to_string());
            }
        }
    }
    Ok(out)
}

/// The io format a stage uses when the job does not say: the input's own
/// for a first stage over text, csv or jsonl (arrow for parquet and
/// arrow), lines for one `line` column, else jsonl.
pub fn default_io(input_format: Option<fanout_datasets::Format>, schema: &Schema) -> IoFormat {
    use fanout_datasets::Format;
    match input_format {
        Some(Format::Text) => IoFormat::Lines,
        Some(Format::Csv) => IoFormat::Csv,
        Some(Format::Jsonl) => IoFormat::Jsonl,
        Some(Format::Parquet | Format::Arrow) => IoFormat::Arrow,
        None if schema.fields().len() == 1
            && schema.field(0).name() == "line"
            && schema.field(0).data_type() == &DataType::Utf8 =>
        {
            IoFormat::Lines
        }
        None => IoFormat::Jsonl,
    }
}
