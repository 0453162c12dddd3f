//! JSON text columns on the way in and out: the arrow-json reader and
//! writer settings every JSON path of fanout shares (input files, the
//! events and replies of external functions, jsonl outputs), so that a
//! column holding JSON text (Utf8 marked `arrow.json`, see
//! [`json_text_field`](crate::json_text_field)) reads any JSON value and
//! is written back as the JSON it holds, not as a quoted string.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, StringArray};
use arrow_json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use arrow_json::{ReaderBuilder, WriterBuilder};
use arrow_schema::{ArrowError, DataType, FieldRef, SchemaRef};

use crate::json_infer::is_json_text;

/// An arrow-json reader builder for `schema` with fanout's settings:
/// numbers and booleans read into Utf8 columns as their text, and JSON
/// text columns hold each value's JSON text.
pub fn json_reader(schema: SchemaRef) -> ReaderBuilder {
    crate::jsonl::builder(schema, 1024, false)
}

/// The schema of the JSON objects in `lines` (one a line), as a jsonl
/// input's is inferred from its first `rows` lines.
pub fn infer_json_schema(lines: impl std::io::Read, rows: usize) -> Result<arrow_schema::Schema, String> {
    crate::jsonl::infer_schema(lines, rows, false)
}

/// An arrow-json writer builder that writes JSON text columns as the JSON
/// they hold (a value that is not valid JSON is written as a string).
pub fn json_writer() -> WriterBuilder {
    WriterBuilder::new().with_encoder_factory(Arc::new(JsonTextEncoders))
}

/// Gives JSON text columns their encoder; every other the writer's own.
#[derive(Debug)]
struct JsonTextEncoders;

impl EncoderFactory for JsonTextEncoders {
    fn make_default_encoder<'a>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        if !is_json_text(field) || array.data_type() != &DataType::Utf8 {
            return Ok(None);
        }
        let values = array.as_string::<i32>();
        Ok(Some(NullableEncoder::new(Box::new(RawJson(values)), values.nulls().cloned())))
    }
}

/// Writes each value as it is when it is JSON, else as a JSON string.
struct RawJson<'a>(&'a StringArray);

impl Encoder for RawJson<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let text = self.0.value(idx);
        if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            out.extend_from_slice(text.as_bytes());
        } else {
            serde_json::to_writer(&mut *out, text).expect("writing to a vector");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use arrow_schema::{Field, Schema};

    #[test]
    fn json_text_round_trips_as_json() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            crate::json_text_field("v"),
            Field::new("s", DataType::Utf8, true),
        ]));
        let lines = b"{\"id\":1,\"v\":{\"a\":[1,\"x\"]},\"s\":\"{}\"}\n{\"id\":2,\"v\":\"MIT\",\"s\":7}\n{\"id\":3,\"v\":null}\n";
        let mut decoder = json_reader(schema.clone()).build_decoder().unwrap();
        decoder.decode(lines).unwrap();
        let batch = decoder.flush().unwrap().unwrap();
        let mut out = Vec::new();
        let mut w = json_writer().build::<_, arrow_json::writer::LineDelimited>(&mut out);
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":1,\"v\":{\"a\":[1,\"x\"]},\"s\":\"{}\"}\n{\"id\":2,\"v\":\"MIT\",\"s\":\"7\"}\n{\"id\":3}\n"
        );
        // Text that is not JSON, in a column marked as JSON text, stays a string.
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let v: ArrayRef = Arc::new(StringArray::from(vec!["not json"]));
        let s: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        let batch = RecordBatch::try_new(schema, vec![ids, v, s]).unwrap();
        let mut out = Vec::new();
        let mut w = json_writer().build::<_, arrow_json::writer::LineDelimited>(&mut out);
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        assert_eq!(String::from_utf8(out).unwrap(), "{\"id\":1,\"v\":\"not json\",\"s\":\"x\"}\n");
    }
}
