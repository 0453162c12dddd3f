//! Records to bytes and back, for functions outside the process: the io
//! formats of exec functions (lines, csv, jsonl, Arrow IPC stream) and the
//! JSON records of Lambda events and responses.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Schema, SchemaRef};

/// How records travel to and from an exec function's process (its `io`
/// and `output` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoFormat {
    /// One record per line (a single `line` column).
    Lines,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// An Arrow IPC stream.
    Arrow,
}

impl IoFormat {
    /// Its name in job files.
    pub fn name(self) -> &'static str {
        match self {
            IoFormat::Lines => "lines",
            IoFormat::Csv => "csv",
            IoFormat::Jsonl => "jsonl",
            IoFormat::Arrow => "arrow",
        }
    }
}

impl std::str::FromStr for IoFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lines" | "text" => Ok(IoFormat::Lines),
            "csv" => Ok(IoFormat::Csv),
            "jsonl" | "ndjson" => Ok(IoFormat::Jsonl),
            "arrow" | "ipc" => Ok(IoFormat::Arrow),
            _ => Err(format!("unknown io format `{s}`, expected one of: lines, csv, jsonl, arrow")),
        }
    }
}

/// Writes `batches` in `format`. Lines need one utf8 column (checked when
/// the stage is planned); a null is an empty line.
pub fn encode(format: IoFormat, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
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
            let mut w = fanout_datasets::json_writer()
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
            let reader = fanout_datasets::json_reader(schema.clone())
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

/// Whether [`json_records`] writes a column of this type itself.
fn simple_json(t: &DataType) -> bool {
    t.is_integer()
        || matches!(
            t,
            DataType::Float32
                | DataType::Float64
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Boolean
                | DataType::Null
        )
}

/// Writes one value of a [`simple_json`] column.
fn json_value(col: &dyn Array, row: usize, out: &mut Vec<u8>) {
    use arrow_array::types::*;
    if col.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    let mut int = |s: &str| out.extend_from_slice(s.as_bytes());
    let mut i = itoa::Buffer::new();
    match col.data_type() {
        DataType::Int8 => int(i.format(col.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => int(i.format(col.as_primitive::<Int16Type>().value(row))),
        DataType::Int32 => int(i.format(col.as_primitive::<Int32Type>().value(row))),
        DataType::Int64 => int(i.format(col.as_primitive::<Int64Type>().value(row))),
        DataType::UInt8 => int(i.format(col.as_primitive::<UInt8Type>().value(row))),
        DataType::UInt16 => int(i.format(col.as_primitive::<UInt16Type>().value(row))),
        DataType::UInt32 => int(i.format(col.as_primitive::<UInt32Type>().value(row))),
        DataType::UInt64 => int(i.format(col.as_primitive::<UInt64Type>().value(row))),
        // serde_json writes a finite float exactly (ryu), and NaN or an
        // infinity as null: JSON has no such numbers.
        DataType::Float32 => {
            serde_json::to_writer(&mut *out, &col.as_primitive::<Float32Type>().value(row)).expect("to a vec")
        }
        DataType::Float64 => {
            serde_json::to_writer(&mut *out, &col.as_primitive::<Float64Type>().value(row)).expect("to a vec")
        }
        DataType::Boolean => int(if col.as_boolean().value(row) { "true" } else { "false" }),
        DataType::Utf8 => serde_json::to_writer(&mut *out, col.as_string::<i32>().value(row)).expect("to a vec"),
        DataType::LargeUtf8 => serde_json::to_writer(&mut *out, col.as_string::<i64>().value(row)).expect("to a vec"),
        _ => out.extend_from_slice(b"null"),
    }
}

/// Writes `batches` as a JSON array of objects (nulls written as null).
/// Columns of numbers, booleans and strings are written here, row by row
/// (an event of a few records costs no encoder set-up); other types go
/// through arrow_json.
pub(crate) fn json_records(batches: &[RecordBatch], out: &mut Vec<u8>) -> Result<(), String> {
    if batches.iter().all(|b| b.schema_ref().fields().iter().all(|f| simple_json(f.data_type()))) {
        out.push(b'[');
        let mut first = true;
        for b in batches {
            let keys: Vec<Vec<u8>> = b
                .schema_ref()
                .fields()
                .iter()
                .map(|f| {
                    let mut k = serde_json::to_vec(f.name()).expect("a string");
                    k.push(b':');
                    k
                })
                .collect();
            for row in 0..b.num_rows() {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.push(b'{');
                for (c, col) in b.columns().iter().enumerate() {
                    if c > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&keys[c]);
                    json_value(col.as_ref(), row, out);
                }
                out.push(b'}');
            }
        }
        out.push(b']');
        return Ok(());
    }
    let start = out.len();
    let mut w =
        fanout_datasets::json_writer().with_explicit_nulls(true).build::<_, arrow_json::writer::JsonArray>(&mut *out);
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

/// Builds batches of `schema` from the `records` of a response body
/// (`{"records": [...]}`): the records' JSON text goes straight to the
/// decoder. Anything unusual — a body of another shape, a value that does
/// not fit, a column no record has — takes the slow path through
/// [`serde_json::Value`]s, which names what is wrong.
///
/// `decoder` is the caller's to keep between responses of one schema (a
/// decoder costs more to build than a few records do to decode).
pub(crate) fn response_records(
    body: &[u8],
    schema: &SchemaRef,
    decoder: &mut Option<arrow_json::reader::Decoder>,
) -> Result<Vec<RecordBatch>, ResponseError> {
    if let Some(batches) = fast_records(body, schema, decoder) {
        return Ok(batches);
    }
    // The decoder may hold half a batch: build a new one next time.
    *decoder = None;
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| ResponseError::NotJson(e.to_string()))?;
    let records = value.get("records").and_then(|r| r.as_array()).ok_or(ResponseError::NotRecords)?;
    from_json_records(records, schema).map_err(ResponseError::Records)
}

/// Why a response's records could not be read.
#[derive(Debug)]
pub(crate) enum ResponseError {
    /// The body is not JSON (the parser's message).
    NotJson(String),
    /// The body is JSON but not `{"records": [...]}`.
    NotRecords,
    /// A record does not fit the schema.
    Records(String),
}

fn fast_records(
    body: &[u8],
    schema: &SchemaRef,
    decoder: &mut Option<arrow_json::reader::Decoder>,
) -> Option<Vec<RecordBatch>> {
    #[derive(serde::Deserialize)]
    struct Response<'a> {
        #[serde(borrow)]
        records: Vec<&'a serde_json::value::RawValue>,
    }
    let response: Response<'_> = serde_json::from_slice(body).ok()?;
    if response.records.is_empty() {
        return Some(Vec::new());
    }
    let mut text = Vec::with_capacity(body.len());
    for r in &response.records {
        if !r.get().starts_with('{') {
            return None;
        }
        text.extend_from_slice(r.get().as_bytes());
        text.push(b'\n');
    }
    if decoder.is_none() {
        *decoder = Some(fanout_datasets::json_reader(schema.clone()).with_batch_size(BATCH_ROWS).build_decoder().ok()?);
    }
    let decoder = decoder.as_mut().expect("just built");
    let mut out = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let used = decoder.decode(&text[at..]).ok()?;
        at += used;
        match decoder.flush().ok()? {
            Some(b) => out.push(b),
            None if used == 0 => return None,
            None => {}
        }
    }
    // A column of nulls only may be a misspelled name: the slow path tells.
    let rows: usize = out.iter().map(RecordBatch::num_rows).sum();
    if rows != response.records.len()
        || (0..schema.fields().len()).any(|c| out.iter().all(|b| b.column(c).null_count() == b.num_rows()))
    {
        return None;
    }
    Some(out)
}

/// Builds batches of `schema` from JSON objects. A value of the wrong
/// type is an error naming the record and column.
pub(crate) fn from_json_records(records: &[serde_json::Value], schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    if let Some(bad) = records.iter().position(|r| !r.is_object()) {
        return Err(format!("record {bad} is not a JSON object: {}", records[bad]));
    }
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
        let mut decoder = fanout_datasets::json_reader(schema.clone())
            .with_batch_size(chunk.len())
            .build_decoder()
            .map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int32Array, LargeStringArray, UInt64Array};
    use arrow_schema::Field;

    use super::*;

    fn batch() -> RecordBatch {
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("i", Arc::new(Int32Array::from(vec![Some(-3), None, Some(7)]))),
            ("u", Arc::new(UInt64Array::from(vec![u64::MAX, 0, 1]))),
            ("f", Arc::new(Float64Array::from(vec![Some(0.1), Some(-2.5e300), None]))),
            ("b", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]))),
            ("s \"q\"", Arc::new(StringArray::from(vec![Some("a\"b\\c\n"), Some("héllo \u{1}"), None]))),
            ("l", Arc::new(LargeStringArray::from(vec!["x", "", "z"]))),
        ];
        RecordBatch::try_from_iter(cols).unwrap()
    }

    #[test]
    fn records_written_by_hand_read_as_arrow_json_writes_them() {
        let b = batch();
        let mut ours = Vec::new();
        json_records(&[b.clone(), b.slice(1, 2)], &mut ours).unwrap();
        let mut theirs = Vec::new();
        let mut w = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::JsonArray>(&mut theirs);
        w.write_batches(&[&b, &b.slice(1, 2)]).unwrap();
        w.finish().unwrap();
        drop(w);
        let parse = |v: &[u8]| serde_json::from_slice::<serde_json::Value>(v).unwrap();
        assert_eq!(parse(&ours), parse(&theirs));
        let mut empty = Vec::new();
        json_records(&[b.slice(0, 0)], &mut empty).unwrap();
        assert_eq!(empty, b"[]");
        let nan =
            RecordBatch::try_from_iter([("f", Arc::new(Float64Array::from(vec![f64::NAN])) as ArrayRef)]).unwrap();
        let mut out = Vec::new();
        json_records(&[nan], &mut out).unwrap();
        assert_eq!(out, br#"[{"f":null}]"#);
    }

    #[test]
    fn responses_decode_on_the_fast_path_as_on_the_slow_one() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut decoder = None;
        let body = br#"{"records": [{"id": 1, "name": "a"}, {"id": null, "name": "b", "extra": [1]}], "other": 2}"#;
        let fast = response_records(body, &schema, &mut decoder).unwrap();
        assert!(decoder.is_some(), "kept for the next response");
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        let slow = from_json_records(value["records"].as_array().unwrap(), &schema).unwrap();
        assert_eq!(fast, slow);
        // The same decoder again, then the errors of the slow path.
        assert_eq!(response_records(body, &schema, &mut decoder).unwrap(), slow);
        assert!(response_records(br#"{"records": []}"#, &schema, &mut decoder).unwrap().is_empty());
        let err = |body: &[u8], decoder: &mut Option<_>| response_records(body, &schema, decoder).unwrap_err();
        assert!(matches!(err(b"nope", &mut decoder), ResponseError::NotJson(_)));
        assert!(matches!(err(br#"{"rows": []}"#, &mut decoder), ResponseError::NotRecords));
        let ResponseError::Records(m) = err(br#"{"records": [{"id": "x", "name": "a"}]}"#, &mut decoder) else {
            panic!("a type mismatch")
        };
        assert!(m.starts_with("record 0:"), "{m}");
        assert!(decoder.is_none(), "dropped after a failure");
        let ResponseError::Records(m) = err(br#"{"records": [{"id": 1, "nmae": "a"}]}"#, &mut decoder) else {
            panic!("a misspelling")
        };
        assert!(m.contains("`name`") && m.contains("nmae"), "{m}");
        let ResponseError::Records(m) = err(br#"{"records": [1]}"#, &mut decoder) else { panic!("not an object") };
        assert!(m.contains("not a JSON object"), "{m}");
        // A column of nulls the function wrote as such is fine.
        let nulls = response_records(br#"{"records": [{"id": 1, "name": null}]}"#, &schema, &mut decoder).unwrap();
        assert_eq!(nulls[0].column(1).null_count(), 1);
    }
}
