//! JSON lines: one JSON object per line, read through arrow-json.
//!
//! The schema is inferred from a sample of the first file or given; nested
//! objects become Struct columns and arrays List columns. Blank lines are
//! skipped. A line that is not valid JSON, or whose values do not fit the
//! schema, is an error naming its line.

use std::io::{BufRead, BufReader, Read};

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};

/// Infers a schema from the first `rows` lines of `source`.
pub(crate) fn infer_schema(source: impl Read, rows: usize) -> Result<Schema, String> {
    let reader = BufReader::new(source);
    let (schema, _) = arrow_json::reader::infer_json_schema(reader, Some(rows.max(1))).map_err(|e| e.to_string())?;
    Ok(schema)
}

/// Reads the lines of `source` as batches of `schema`.
pub(crate) fn read<R: Read + Send + 'static>(
    source: R,
    schema: SchemaRef,
    batch_rows: usize,
    buffer: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch, String>> + Send, String> {
    let reader = arrow_json::ReaderBuilder::new(schema)
        .with_batch_size(batch_rows)
        .build(BufReader::with_capacity(buffer.max(64), source))
        .map_err(|e| e.to_string())?;
    Ok(reader.map(|r| r.map_err(|e| e.to_string())))
}

/// Finds the first line of `source` that does not decode with `schema`:
/// its 0-based line number, stream offset and the decoder's complaint.
/// Runs only after an error, one line at a time.
pub(crate) fn locate(source: impl Read, schema: SchemaRef) -> Option<(u64, u64, String)> {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    let (mut number, mut offset) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).ok()?;
        if n == 0 {
            return None;
        }
        let mut decoder = arrow_json::ReaderBuilder::new(schema.clone()).build_decoder().ok()?;
        let bad = match decoder.decode(&line) {
            Ok(_) => decoder.flush().err(),
            Err(e) => Some(e),
        };
        if let Some(e) = bad {
            return Some((number, offset, e.to_string()));
        }
        number += 1;
        offset += n as u64;
    }
}

/// The first of the first `rows` non-blank lines of `source` that is not
/// a JSON object: its 0-based line, stream offset and the parser's
/// complaint. Runs only after schema inference failed.
pub(crate) fn first_invalid(source: impl Read, rows: usize) -> Option<(u64, u64, String)> {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    let (mut number, mut offset, mut seen) = (0u64, 0u64, 0usize);
    while seen < rows {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).ok()?;
        if n == 0 {
            return None;
        }
        if !line.trim_ascii().is_empty() {
            seen += 1;
            match serde_json::from_slice::<serde_json::Value>(&line) {
                Ok(v) if v.is_object() => {}
                Ok(_) => return Some((number, offset, "not a JSON object".into())),
                Err(e) => return Some((number, offset, format!("invalid JSON: {e}"))),
            }
        }
        number += 1;
        offset += n as u64;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::DataType;
    use std::sync::Arc;

    #[test]
    fn nested_objects_become_structs() {
        let data = br#"{"a": 1, "u": {"id": 2, "c": "x"}, "t": ["p"]}
{"a": 3, "u": {"id": 4, "c": null}, "t": []}
"#;
        let schema = infer_schema(&data[..], 10).unwrap();
        assert_eq!(schema.field_with_name("a").unwrap().data_type(), &DataType::Int64);
        assert!(matches!(
            schema.field_with_name("u").unwrap().data_type(),
            DataType::Struct(f) if f.len() == 2
        ));
        let batches: Vec<_> = read(&data[..], Arc::new(schema), 1, 64).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(batches.len(), 2);
    }

    #[test]
    fn locate_finds_the_bad_line() {
        let data = b"{\"a\": 1}\n\n{\"a\": 2}\n{\"a\": \"x\"}\n";
        let schema = Arc::new(infer_schema(&b"{\"a\": 1}"[..], 10).unwrap());
        let (line, offset, msg) = locate(&data[..], schema).unwrap();
        assert_eq!((line, offset), (3, 19));
        assert!(msg.contains("expected") || msg.contains("parse"), "{msg}");
    }
}
