//! JSON lines: one JSON object per line, read through arrow-json.
//!
//! The schema is inferred from a sample of the first file or given; nested
//! objects become Struct columns and arrays List columns, and a field whose
//! values change shape (a string here, an object there) a JSON text column
//! (see [`json_infer`]), which this reader fills with
//! each value's JSON text. Blank lines are skipped. A line that is not
//! valid JSON, or whose values do not fit the schema, is an error naming
//! its line (and the field, for a value that does not fit).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_json::ReaderBuilder;
use arrow_json::reader::{ArrayDecoder, Decoder, DecoderContext, DecoderFactory, Tape, TapeElement};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Schema, SchemaRef};
use serde_json::Value;

use crate::json_infer::{self, is_json_text};

/// Infers a schema from the first `rows` lines of `source` (see
/// [`json_infer`]); with `skip_invalid`, lines that are
/// not JSON objects are passed over instead of failing.
pub(crate) fn infer_schema(source: impl Read, rows: usize, skip_invalid: bool) -> Result<Schema, String> {
    json_infer::infer(source, rows, skip_invalid)
}

/// The reader's settings, shared by [`read`] and [`decoder`]: numbers and
/// booleans read into Utf8 columns as their text, JSON text columns hold
/// their values' JSON text. With `strict`, a field the schema does not
/// have is an error: an inferred schema whose sample missed a field does
/// not drop it without a word (a schema given, or narrowed to the columns
/// a job reads, leaves the other fields out on purpose).
pub(crate) fn builder(schema: SchemaRef, batch_rows: usize, strict: bool) -> ReaderBuilder {
    ReaderBuilder::new(schema)
        .with_batch_size(batch_rows.max(1))
        .with_coerce_primitive(true)
        .with_strict_mode(strict)
        .with_decoder_factory(Arc::new(JsonTextFactory))
}

/// A decoder of JSON lines into batches of up to `batch_rows` rows of
/// `schema`, with the same settings as [`read`].
pub(crate) fn decoder(schema: SchemaRef, batch_rows: usize, strict: bool) -> Result<Decoder, String> {
    builder(schema, batch_rows, strict).build_decoder().map_err(|e| e.to_string())
}

/// Reads the lines of `source` as batches of `schema` (see [`builder`]
/// for `strict`).
pub(crate) fn read<R: Read + Send + 'static>(
    source: R,
    schema: SchemaRef,
    strict: bool,
    batch_rows: usize,
    buffer: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch, String>> + Send, String> {
    let reader = builder(schema, batch_rows, strict)
        .build(BufReader::with_capacity(buffer.max(64), source))
        .map_err(|e| e.to_string())?;
    Ok(reader.map(|r| r.map_err(|e| e.to_string())))
}

/// Gives the JSON text fields their decoder, and integer fields a strict
/// one; every other field the reader's own.
#[derive(Debug)]
struct JsonTextFactory;

impl DecoderFactory for JsonTextFactory {
    fn make_default_decoder(
        &self,
        _ctx: &DecoderContext,
        field: &FieldRef,
        _is_nullable: bool,
    ) -> Result<Option<Box<dyn ArrayDecoder>>, ArrowError> {
        use arrow_array::types::*;
        if is_json_text(field) {
            return Ok(Some(Box::new(JsonTextDecoder)));
        }
        let decoder: Box<dyn ArrayDecoder> = match field.data_type() {
            DataType::Int8 => Box::new(IntDecoder::<Int8Type>::default()),
            DataType::Int16 => Box::new(IntDecoder::<Int16Type>::default()),
            DataType::Int32 => Box::new(IntDecoder::<Int32Type>::default()),
            DataType::Int64 => Box::new(IntDecoder::<Int64Type>::default()),
            DataType::UInt8 => Box::new(IntDecoder::<UInt8Type>::default()),
            DataType::UInt16 => Box::new(IntDecoder::<UInt16Type>::default()),
            DataType::UInt32 => Box::new(IntDecoder::<UInt32Type>::default()),
            DataType::UInt64 => Box::new(IntDecoder::<UInt64Type>::default()),
            _ => return Ok(None),
        };
        Ok(Some(decoder))
    }
}

/// Decodes integers strictly: a number with a fraction (`2.5`), or one
/// past the type's range, is an error, where arrow-json's own decoder
/// would cut it to an integer (`2`) without a word. An integral number
/// written as a float (`2.0`, `1e3`) and a string of an integer (`"7"`,
/// as arrow-json reads one) are taken.
struct IntDecoder<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Default for IntDecoder<T> {
    fn default() -> Self {
        IntDecoder(std::marker::PhantomData)
    }
}

impl<T> ArrayDecoder for IntDecoder<T>
where
    T: arrow_array::ArrowPrimitiveType,
    T::Native: TryFrom<i128>,
{
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut builder = arrow_array::builder::PrimitiveBuilder::<T>::with_capacity(pos.len());
        for &p in pos {
            let whole: Option<i128> = match tape.get(p) {
                TapeElement::Null => {
                    builder.append_null();
                    continue;
                }
                TapeElement::Number(i) | TapeElement::String(i) => integer(tape.get_string(i)),
                TapeElement::I32(v) => Some(i128::from(v)),
                TapeElement::I64(high) => match tape.get(p + 1) {
                    TapeElement::I32(low) => Some(i128::from((i64::from(high) << 32) | i64::from(low as u32))),
                    _ => return Err(tape.error(p, "the low bits of an i64")),
                },
                TapeElement::F32(v) => whole_float(f64::from(f32::from_bits(v))),
                TapeElement::F64(high) => match tape.get(p + 1) {
                    TapeElement::F32(low) => whole_float(f64::from_bits((u64::from(high) << 32) | u64::from(low))),
                    _ => return Err(tape.error(p, "the low bits of an f64")),
                },
                _ => return Err(tape.error(p, "an integer")),
            };
            let value = whole.and_then(|v| T::Native::try_from(v).ok()).ok_or_else(|| {
                let mut text = String::new();
                let _ = write_json(tape, p, &mut text);
                ArrowError::JsonError(format!("{text} is not an integer that {} holds", T::DATA_TYPE))
            })?;
            builder.append_value(value);
        }
        Ok(Arc::new(builder.finish()))
    }
}

/// The integer `text` writes: as an integer, or as a float with no
/// fraction.
fn integer(text: &str) -> Option<i128> {
    match text.parse::<i64>() {
        Ok(v) => Some(i128::from(v)),
        Err(_) => text.parse::<i128>().ok().or_else(|| whole_float(text.parse::<f64>().ok()?)),
    }
}

/// `v` if it is a whole number (within i128).
fn whole_float(v: f64) -> Option<i128> {
    (v.is_finite() && v.fract() == 0.0 && v.abs() < 1.7e38).then_some(v as i128)
}

/// Decodes any JSON value into its compact JSON text; a null (or a missing
/// member) into a null.
struct JsonTextDecoder;

impl ArrayDecoder for JsonTextDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut builder = StringBuilder::with_capacity(pos.len(), pos.len() * 16);
        let mut text = String::new();
        for &p in pos {
            if tape.get(p) == TapeElement::Null {
                builder.append_null();
                continue;
            }
            text.clear();
            write_json(tape, p, &mut text)?;
            builder.append_value(&text);
        }
        Ok(Arc::new(builder.finish()))
    }
}

/// Writes the value at `idx` of `tape` to `out` as compact JSON (members
/// in input order, numbers as written), returning the next value's index.
fn write_json(tape: &Tape<'_>, idx: u32, out: &mut String) -> Result<u32, ArrowError> {
    match tape.get(idx) {
        TapeElement::StartObject(end) => {
            out.push('{');
            let mut cur = idx + 1;
            while cur < end {
                if cur > idx + 1 {
                    out.push(',');
                }
                match tape.get(cur) {
                    TapeElement::String(key) => write_str(tape.get_string(key), out),
                    _ => return Err(tape.error(cur, "field name")),
                }
                out.push(':');
                cur = write_json(tape, cur + 1, out)?;
            }
            out.push('}');
            Ok(end + 1)
        }
        TapeElement::StartList(end) => {
            out.push('[');
            let mut cur = idx + 1;
            while cur < end {
                if cur > idx + 1 {
                    out.push(',');
                }
                cur = write_json(tape, cur, out)?;
            }
            out.push(']');
            Ok(end + 1)
        }
        TapeElement::String(s) => {
            write_str(tape.get_string(s), out);
            Ok(idx + 1)
        }
        TapeElement::Number(n) => {
            out.push_str(tape.get_string(n));
            Ok(idx + 1)
        }
        TapeElement::True => {
            out.push_str("true");
            Ok(idx + 1)
        }
        TapeElement::False => {
            out.push_str("false");
            Ok(idx + 1)
        }
        TapeElement::Null => {
            out.push_str("null");
            Ok(idx + 1)
        }
        // Values serialized from Rust rather than parsed from text.
        TapeElement::I32(v) => {
            let _ = write!(out, "{v}");
            Ok(idx + 1)
        }
        TapeElement::I64(high) => match tape.get(idx + 1) {
            TapeElement::I32(low) => {
                let _ = write!(out, "{}", (i64::from(high) << 32) | i64::from(low as u32));
                Ok(idx + 2)
            }
            _ => Err(tape.error(idx, "the low bits of an i64")),
        },
        TapeElement::F32(v) => {
            write_float(f64::from(f32::from_bits(v)), out);
            Ok(idx + 1)
        }
        TapeElement::F64(high) => match tape.get(idx + 1) {
            TapeElement::F32(low) => {
                write_float(f64::from_bits((u64::from(high) << 32) | u64::from(low)), out);
                Ok(idx + 2)
            }
            _ => Err(tape.error(idx, "the low bits of an f64")),
        },
        _ => Err(tape.error(idx, "a JSON value")),
    }
}

/// A float as serde_json writes it (`1.0`, and `null` when not finite).
fn write_float(v: f64, out: &mut String) {
    match serde_json::Number::from_f64(v) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn write_str(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            "" => {
                let _ = write!(out, "\\u{b:04x}");
            }
            e => out.push_str(e),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Finds the first line of `source` that does not decode with `schema`:
/// its 0-based line number, stream offset and the complaint — naming the
/// field whose value the schema cannot hold, where one is to blame. Runs
/// only after an error, one line at a time.
pub(crate) fn locate(source: impl Read, schema: SchemaRef, strict: bool) -> Option<(u64, u64, String)> {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    let (mut number, mut offset) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(e) = decode_error(&line, schema.clone(), strict) {
            let message = explain(&line, &schema, strict).unwrap_or(e);
            return Some((number, offset, message));
        }
        number += 1;
        offset += n as u64;
    }
}

/// Why `line` does not decode with `schema`, if it does not.
fn decode_error(line: &[u8], schema: SchemaRef, strict: bool) -> Option<String> {
    let mut decoder = decoder(schema, 1, strict).ok()?;
    let bad = match decoder.decode(line) {
        Ok(_) => decoder.flush().err(),
        Err(e) => Some(e),
    };
    bad.map(|e| e.to_string())
}

/// Names the top-level field of `line` (a JSON object that does not decode
/// with `schema`) that is to blame, what it holds and what would hold it.
/// `None` when the line is no JSON object or no single field is to blame.
fn explain(line: &[u8], schema: &Schema, strict: bool) -> Option<String> {
    let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(line) else { return None };
    // A field the schema does not have (read strictly: an inferred schema).
    if let Some(name) = record.keys().find(|k| strict && schema.field_with_name(k).is_err()) {
        return Some(format!(
            "field `{name}` is not in the schema, which was inferred from the first file's first records \
             (input.infer_rows): give input.schema (every column), or raise input.infer_rows if the field \
             appears further into that file"
        ));
    }
    // The first field that fails alone, by the decoder's own rules.
    let (field, error) = schema.fields().iter().find_map(|f| {
        let alone = Arc::new(Schema::new(vec![f.clone()]));
        decode_error(line, alone, false).map(|e| (f, e))
    })?;
    let name = field.name();
    let fix = |ty: &str| {
        format!(
            "; if the schema was inferred, its sample had no such value: raise input.infer_rows, \
             or give input.schema (every column) with `{name}:{ty}`"
        )
    };
    let Some(value) = record.get(name) else { return Some(format!("field `{name}`: {error}")) };
    Some(match misfit(value, field, name.clone()) {
        Some(Misfit { path, found, expected }) => {
            let at = if path == *name { String::new() } else { format!(" at `{path}`") };
            let ty = match (field.data_type(), value) {
                (DataType::Null, Value::Bool(_)) => "bool",
                (DataType::Null, Value::Number(_)) => "float64",
                (DataType::Null, Value::String(_)) => "utf8",
                (dt, Value::Number(_)) if dt.is_integer() => "float64",
                _ => "json",
            };
            format!("field `{name}`{at} is {found} here, but {expected} in the schema{}", fix(ty))
        }
        None => format!("field `{name}`: {error}"),
    })
}

/// A value that `field` cannot hold for its kind — an object where a
/// string goes, a string where a list goes: where it is inside `value`
/// (`path`), what it is and the type expected there. `None` when every
/// value has a kind its type takes (one may still fail to parse).
fn misfit(value: &Value, field: &Field, path: String) -> Option<Misfit> {
    if value.is_null() || is_json_text(field) {
        return None;
    }
    let dt = field.data_type();
    let holds = match (dt, value) {
        (DataType::Struct(fields), Value::Object(members)) => {
            return fields.iter().find_map(|f| misfit(members.get(f.name())?, f, format!("{path}.{}", f.name())));
        }
        (DataType::List(f) | DataType::LargeList(f), Value::Array(items)) => {
            return items.iter().enumerate().find_map(|(i, v)| misfit(v, f, format!("{path}[{i}]")));
        }
        (DataType::Null | DataType::Struct(_) | DataType::List(_) | DataType::LargeList(_), _) => false,
        (DataType::Boolean, v) => v.is_boolean(),
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, v) => !(v.is_object() || v.is_array()),
        (dt, Value::Bool(_)) if dt.is_numeric() => false,
        (dt, Value::Number(n)) if dt.is_integer() => n.as_f64().is_some_and(|v| v.fract() == 0.0),
        (_, v) => !(v.is_object() || v.is_array()),
    };
    let expected = match dt {
        DataType::Null => "null (only nulls were sampled)".to_string(),
        DataType::Boolean => "bool".to_string(),
        DataType::Struct(_) => "an object (struct)".to_string(),
        DataType::List(_) | DataType::LargeList(_) => "a list".to_string(),
        dt => dt.to_string().to_lowercase(),
    };
    let found = match value {
        Value::Number(_) if dt.is_integer() => "a number with a fraction",
        v => describe(v),
    };
    (!holds).then_some(Misfit { path, found, expected })
}

/// A value that does not fit its field; see [`misfit`].
struct Misfit {
    /// Where: the field's name, then `.member` and `[i]` steps.
    path: String,
    /// What the value is, in words.
    found: &'static str,
    /// The type the schema has there, in words.
    expected: String,
}

/// What kind of JSON value `v` is, in words.
fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
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
    use crate::json_infer::json_text_field;
    use arrow_array::cast::AsArray;

    /// `data` read whole, as one batch.
    fn batch(data: &str, schema: Schema) -> RecordBatch {
        let mut batches = read(std::io::Cursor::new(data.to_string()), Arc::new(schema), true, 1024, 64).unwrap();
        let batch = batches.next().unwrap().unwrap();
        assert!(batches.next().is_none());
        batch
    }

    fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
        batch.column_by_name(column).unwrap().as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn nested_objects_become_structs() {
        let data = br#"{"a": 1, "u": {"id": 2, "c": "x"}, "t": ["p"]}
{"a": 3, "u": {"id": 4, "c": null}, "t": []}
"#;
        let schema = infer_schema(&data[..], 10, false).unwrap();
        assert_eq!(schema.field_with_name("a").unwrap().data_type(), &DataType::Int64);
        assert!(matches!(
            schema.field_with_name("u").unwrap().data_type(),
            DataType::Struct(f) if f.len() == 2
        ));
        let batches: Vec<_> =
            read(&data[..], Arc::new(schema), true, 1, 64).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(batches.len(), 2);
    }

    #[test]
    fn fields_that_change_type_read_as_json_text() {
        let data = concat!(
            r#"{"name": "a", "license": "MIT", "n": 1, "bin": "./cli.js"}"#,
            "\n",
            r#"{"name": "b", "license": {"type": "MIT", "url": "http://x/\"q\"\\"}, "n": "two", "bin": {"z": "./z.js", "a": ["./a.js", 1.50, true, null]}}"#,
            "\n",
            r#"{"name": "c", "license": null, "n": true, "bin": ["é\u00e9\n\t\u0001", [[]], {}]}"#,
            "\n",
            r#"{"name": "d"}"#,
            "\n"
        );
        let schema = infer_schema(data.as_bytes(), 100, false).unwrap();
        let b = batch(data, schema);
        assert_eq!(strings(&b, "n"), [Some("1".into()), Some("two".into()), Some("true".into()), None]);
        assert_eq!(
            strings(&b, "license"),
            [Some(r#""MIT""#.into()), Some(r#"{"type":"MIT","url":"http://x/\"q\"\\"}"#.into()), None, None]
        );
        // Members in input order, numbers as written.
        assert_eq!(
            strings(&b, "bin"),
            [
                Some(r#""./cli.js""#.into()),
                Some(r#"{"z":"./z.js","a":["./a.js",1.50,true,null]}"#.into()),
                Some("[\"éé\\n\\t\\u0001\",[[]],{}]".into()),
                None
            ]
        );
        // What serde_json writes for the same values.
        let lines: Vec<Value> = data.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        for (row, line) in lines.iter().enumerate().take(3) {
            let text = strings(&b, "license")[row].clone();
            assert_eq!(text, Some(&line["license"]).filter(|v| !v.is_null()).map(|v| v.to_string()));
        }
        assert_eq!(strings(&b, "bin")[2].as_deref(), Some(lines[2]["bin"].to_string().as_str()));
    }

    #[test]
    fn json_text_escapes_as_serde_json_does() {
        let s: String = (0u8..0x80).map(char::from).chain("é→😀\u{2028}".chars()).collect();
        let mut out = String::new();
        write_str(&s, &mut out);
        assert_eq!(out, serde_json::to_string(&s).unwrap());
    }

    #[test]
    fn a_json_column_in_a_given_schema_holds_any_value() {
        let data = "{\"v\": 1}\n{\"v\": \"s\"}\n{\"v\": [1, {\"a\": null}]}\n{\"v\": null}\n{\"w\": {\"v\": 2}}\n";
        let schema = Schema::new(vec![
            json_text_field("v"),
            Field::new("w", DataType::Struct(vec![json_text_field("v")].into()), true),
        ]);
        let b = batch(data, schema);
        let expected = [Some("1"), Some("\"s\""), Some("[1,{\"a\":null}]"), None, None];
        assert_eq!(strings(&b, "v"), expected.map(|v| v.map(String::from)));
        let w = b.column_by_name("w").unwrap().as_struct().column(0).as_string::<i32>();
        assert_eq!(w.value(4), "2");
        // The same settings decode line by line.
        let mut d = decoder(b.schema(), 2, true).unwrap();
        d.decode(b"{\"v\": {\"x\": [true]}}\n").unwrap();
        let one = d.flush().unwrap().unwrap();
        assert_eq!(strings(&one, "v"), [Some("{\"x\":[true]}".to_string())]);
    }

    #[test]
    fn locate_finds_the_bad_line() {
        let data = b"{\"a\": 1}\n\n{\"a\": 2}\n{\"a\": \"x\"}\n";
        let schema = Arc::new(infer_schema(&b"{\"a\": 1}"[..], 10, false).unwrap());
        let (line, offset, msg) = locate(&data[..], schema, true).unwrap();
        assert_eq!((line, offset), (3, 19));
        assert!(msg.starts_with("field `a`: ") && msg.contains("\"x\" is not an integer"), "{msg}");
    }

    #[test]
    fn integers_are_read_strictly_and_unknown_fields_are_errors_when_inferred() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let read_all = |data: &str, strict: bool| -> Result<Vec<Option<i64>>, String> {
            let batches: Vec<RecordBatch> =
                read(std::io::Cursor::new(data.to_string()), schema.clone(), strict, 10, 64)?
                    .collect::<Result<_, _>>()?;
            Ok(batches
                .iter()
                .flat_map(|b| {
                    let a = b.column(0).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
                    a.iter().collect::<Vec<_>>()
                })
                .collect())
        };
        // Whole numbers however written; never a fraction cut off.
        assert_eq!(
            read_all("{\"n\": 1}\n{\"n\": 2.0}\n{\"n\": 1e3}\n{\"n\": \"7\"}\n{}\n", true).unwrap(),
            [Some(1), Some(2), Some(1000), Some(7), None]
        );
        let e = read_all("{\"n\": 2.5}\n", true).unwrap_err();
        assert!(e.contains("2.5 is not an integer that Int64 holds"), "{e}");
        let e = read_all("{\"n\": 1e30}\n", true).unwrap_err();
        assert!(e.contains("is not an integer that Int64 holds"), "{e}");
        // A field the schema lacks: an error when read strictly (the schema
        // inferred), left out when not (a schema given or narrowed).
        assert!(read_all("{\"n\": 1, \"q\": 2}\n", true).is_err());
        assert_eq!(read_all("{\"n\": 1, \"q\": 2}\n", false).unwrap(), [Some(1)]);
        let (line, _, msg) = locate("{\"n\": 1}\n{\"n\": 1, \"q\": 2}\n".as_bytes(), schema.clone(), true).unwrap();
        assert_eq!(line, 1);
        assert!(msg.starts_with("field `q` is not in the schema, which was inferred"), "{msg}");
        let (_, _, msg) = locate("{\"n\": 2.5}\n".as_bytes(), schema, true).unwrap();
        assert!(msg.starts_with("field `n` is a number with a fraction here, but int64 in the schema"), "{msg}");
        assert!(msg.ends_with("`n:float64`"), "{msg}");
    }

    #[test]
    fn locate_names_the_field_the_schema_cannot_hold() {
        let sample = "{\"name\": \"a\", \"license\": \"MIT\", \"repo\": {\"url\": \"u\"}, \"n\": null}\n";
        let schema = Arc::new(infer_schema(sample.as_bytes(), 10, false).unwrap());
        let data = format!("{sample}{}", "{\"name\": \"b\", \"license\": {\"type\": \"MIT\"}}\n");
        let (line, offset, msg) = locate(data.as_bytes(), schema.clone(), true).unwrap();
        assert_eq!((line, offset), (1, sample.len() as u64));
        assert_eq!(
            msg,
            "field `license` is an object here, but utf8 in the schema; if the schema was inferred, its sample \
             had no such value: raise input.infer_rows, or give input.schema (every column) with `license:json`"
        );
        let (_, _, msg) = locate("{\"repo\": {\"url\": [1]}}".as_bytes(), schema.clone(), true).unwrap();
        assert!(msg.starts_with("field `repo` at `repo.url` is a list here, but utf8 in the schema;"), "{msg}");
        let (_, _, msg) = locate("{\"n\": \"x\"}".as_bytes(), schema.clone(), true).unwrap();
        assert!(msg.starts_with("field `n` is a string here, but null (only nulls"), "{msg}");
        assert!(msg.ends_with("with `n:utf8`"), "{msg}");
        // A line that is not JSON keeps the decoder's word.
        let (_, _, msg) = locate("{\"name\": ".as_bytes(), schema, true).unwrap();
        assert!(!msg.contains("field"), "{msg}");
    }

    #[test]
    fn conflicting_scalars_read_as_text() {
        let data = "{\"id\": 1, \"f\": 1}\n{\"id\": \"x-2\", \"f\": 2.5}\n{\"id\": false, \"f\": -3}\n";
        let b = batch(data, infer_schema(data.as_bytes(), 10, false).unwrap());
        assert_eq!(strings(&b, "id"), [Some("1".into()), Some("x-2".into()), Some("false".into())]);
        assert_eq!(b.column_by_name("f").unwrap().data_type(), &DataType::Float64);
    }

    #[test]
    fn datasets_read_npm_like_manifests() {
        use crate::{Dataset, DatasetOptions};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("packages.jsonl");
        let lines = [
            r#"{"name": "a", "main": "./lib/index.js", "browser": "./lib/index.js", "author": "Ann"}"#,
            r#"{"name": "b", "browser": {"./lib/index.js": false}, "author": {"name": "Bo"}, "bin": {"b": "x"}}"#,
            r#"{"name": "c", "browser": false, "bin": "./c.js"}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let read_all = |opts: DatasetOptions| {
            let ds = Dataset::open(vec![path.display().to_string()], opts).unwrap();
            let batches: Vec<_> = ds.read_all().collect::<Result<_, _>>().unwrap();
            (ds.schema(), batches)
        };
        let (schema, batches) = read_all(DatasetOptions::default());
        assert!(["author", "bin", "browser"].iter().all(|n| is_json_text(schema.field_with_name(n).unwrap())));
        assert_eq!(
            strings(&batches[0], "browser"),
            [Some("\"./lib/index.js\"".into()), Some("{\"./lib/index.js\":false}".into()), Some("false".into())]
        );
        // A given schema with a json column.
        let given = Schema::new(vec![Field::new("name", DataType::Utf8, true), json_text_field("author")]);
        let opts = DatasetOptions { schema: Some(Arc::new(given)), ..DatasetOptions::default() };
        let (_, batches) = read_all(opts);
        assert_eq!(strings(&batches[0], "author"), [Some("\"Ann\"".into()), Some("{\"name\":\"Bo\"}".into()), None]);
    }
}
