//! Row-wise builtins: `sample` (keep a seeded fraction), `hash` (a digest
//! per row) and `json_extract` (JSON text to typed columns).

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::catalog::{FunctionInfo, Shape, p};
use crate::function::{Builtin, FunctionError, Invocation, PerBatch, Planned, StageSpec, per_batch};
use crate::params::{Params, column};

/// Writes row `row` of `columns` as the documented digest input: each
/// value's text (Arrow's display form), or the byte 0x00 for a null,
/// followed by the unit separator 0x1f.
fn row_text(formatters: &[ArrayFormatter<'_>], columns: &[&ArrayRef], row: usize, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    for (f, c) in formatters.iter().zip(columns) {
        if c.is_null(row) {
            out.push('\0');
        } else {
            let _ = write!(out, "{}", f.value(row));
        }
        out.push('\x1f');
    }
}

/// The registered `sample`.
pub struct Sample;

impl Builtin for Sample {
    fn info(&self) -> &'static FunctionInfo {
        &SAMPLE
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let p = Params::new("sample", self.info().params, spec.params)?;
        let fraction = p.float("fraction");
        if !(0.0..=1.0).contains(&fraction) {
            return Err(FunctionError::permanent(format!("sample: fraction must be between 0 and 1, got {fraction}")));
        }
        let seed = p.int("seed");
        // Keep a row when the top 53 bits of its digest, as a fraction, fall
        // under `fraction`: the same rows whatever the splits or retries.
        Ok(Arc::new(PerBatch {
            schema: spec.input.clone(),
            make: move || {
                let mut text = String::new();
                Ok(per_batch(move |_: &Invocation<'_>, batch: &RecordBatch| {
                    let columns: Vec<&ArrayRef> = batch.columns().iter().collect();
                    let opts = FormatOptions::default();
                    let formatters = columns
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut keep = BooleanBuilder::with_capacity(batch.num_rows());
                    for row in 0..batch.num_rows() {
                        row_text(&formatters, &columns, row, &mut text);
                        let mut h = Sha256::new();
                        h.update(seed.to_le_bytes());
                        h.update(text.as_bytes());
                        let d = h.finalize();
                        let x = u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) >> 11;
                        keep.append_value((x as f64) / ((1u64 << 53) as f64) < fraction);
                    }
                    let keep: BooleanArray = keep.finish();
                    Ok(arrow_select::filter::filter_record_batch(batch, &keep)?)
                }))
            },
        }))
    }
}

/// The registered `hash`.
pub struct Hash;

impl Builtin for Hash {
    fn info(&self) -> &'static FunctionInfo {
        &HASH
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let p = Params::new("hash", self.info().params, spec.params)?;
        let cols: Vec<usize> = p.strings("columns").iter().map(|c| column(spec.input, c)).collect::<Result<_, _>>()?;
        if cols.is_empty() {
            return Err(FunctionError::permanent("hash: name at least one column"));
        }
        let name = p.string("name");
        if spec.input.index_of(&name).is_ok() {
            return Err(FunctionError::permanent(format!("hash: the input already has a column `{name}`")));
        }
        let mut fields: Vec<Field> = spec.input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(&name, DataType::Utf8, false));
        let schema = Arc::new(Schema::new(fields));
        let out = schema.clone();
        Ok(Arc::new(PerBatch {
            schema,
            make: move || {
                let (cols, out) = (cols.clone(), out.clone());
                let mut text = String::new();
                Ok(per_batch(move |_: &Invocation<'_>, batch: &RecordBatch| {
                    let columns: Vec<&ArrayRef> = cols.iter().map(|&c| batch.column(c)).collect();
                    let opts = FormatOptions::default();
                    let formatters = columns
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut digests = StringBuilder::with_capacity(batch.num_rows(), batch.num_rows() * 64);
                    for row in 0..batch.num_rows() {
                        row_text(&formatters, &columns, row, &mut text);
                        let d = Sha256::digest(text.as_bytes());
                        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
                        digests.append_value(hex);
                    }
                    let mut all: Vec<ArrayRef> = batch.columns().to_vec();
                    all.push(Arc::new(digests.finish()));
                    Ok(RecordBatch::try_new(out.clone(), all)?)
                }))
            },
        }))
    }
}

/// The registered `json_extract`.
pub struct JsonExtract;

#[derive(Clone)]
struct JsonField {
    path: Vec<String>,
    ty: DataType,
}

impl Builtin for JsonExtract {
    fn info(&self) -> &'static FunctionInfo {
        &JSON_EXTRACT
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let p = Params::new("json_extract", self.info().params, spec.params)?;
        let name = p.string("column");
        let col = column(spec.input, &name)?;
        if spec.input.field(col).data_type() != &DataType::Utf8 {
            return Err(FunctionError::permanent(format!("json_extract: column `{name}` is not text (utf8)")));
        }
        let mut fields = Vec::new();
        let mut out = Vec::new();
        for f in p.strings("fields") {
            let (path, ty) = f
                .rsplit_once(':')
                .ok_or_else(|| FunctionError::permanent(format!("json_extract: field `{f}` must be path:type")))?;
            let ty = match ty.trim() {
                "bool" | "boolean" => DataType::Boolean,
                "int64" | "int" => DataType::Int64,
                "float64" | "float" | "double" => DataType::Float64,
                "utf8" | "string" | "str" => DataType::Utf8,
                other => {
                    return Err(FunctionError::permanent(format!(
                        "json_extract: unknown type `{other}` in `{f}`, expected one of: bool, int64, float64, utf8"
                    )));
                }
            };
            let name = path.trim().replace('.', "_");
            if out.iter().any(|f: &Field| f.name() == &name) {
                return Err(FunctionError::permanent(format!("json_extract: two fields are named `{name}`")));
            }
            out.push(Field::new(name, ty.clone(), true));
            fields.push(JsonField { path: path.trim().split('.').map(str::to_string).collect(), ty });
        }
        if fields.is_empty() {
            return Err(FunctionError::permanent("json_extract: name at least one field"));
        }
        let schema = Arc::new(Schema::new(out));
        let out = schema.clone();
        Ok(Arc::new(PerBatch {
            schema,
            make: move || {
                let (fields, out) = (fields.clone(), out.clone());
                Ok(per_batch(move |inv: &Invocation<'_>, batch: &RecordBatch| extract(inv, batch, col, &fields, &out)))
            },
        }))
    }
}

fn extract(
    inv: &Invocation<'_>,
    batch: &RecordBatch,
    col: usize,
    fields: &[JsonField],
    schema: &Arc<Schema>,
) -> Result<RecordBatch, FunctionError> {
    let text = batch.column(col).as_string::<i32>();
    let n = batch.num_rows();
    enum B {
        Bool(BooleanBuilder),
        Int(Int64Builder),
        Float(Float64Builder),
        Str(StringBuilder),
    }
    let mut builders: Vec<B> = fields
        .iter()
        .map(|f| match f.ty {
            DataType::Boolean => B::Bool(BooleanBuilder::with_capacity(n)),
            DataType::Int64 => B::Int(Int64Builder::with_capacity(n)),
            DataType::Float64 => B::Float(Float64Builder::with_capacity(n)),
            _ => B::Str(StringBuilder::new()),
        })
        .collect();
    for row in 0..n {
        let value: Value = match text.is_null(row) {
            true => Value::Null,
            false => serde_json::from_str(text.value(row)).map_err(|e| {
                FunctionError::permanent(format!("json_extract: task {} row {}: invalid JSON: {e}", inv.task, row))
            })?,
        };
        for (f, b) in fields.iter().zip(&mut builders) {
            let v = f.path.iter().try_fold(&value, |v, k| v.get(k)).unwrap_or(&Value::Null);
            let wrong = || {
                FunctionError::permanent(format!(
                    "json_extract: task {} row {}: `{}` is {v}, not {}",
                    inv.task,
                    row,
                    f.path.join("."),
                    f.ty
                ))
            };
            match (b, v) {
                (B::Bool(b), Value::Null) => b.append_null(),
                (B::Int(b), Value::Null) => b.append_null(),
                (B::Float(b), Value::Null) => b.append_null(),
                (B::Str(b), Value::Null) => b.append_null(),
                (B::Bool(b), Value::Bool(x)) => b.append_value(*x),
                (B::Int(b), v) => b.append_value(v.as_i64().ok_or_else(wrong)?),
                (B::Float(b), v) => b.append_value(v.as_f64().ok_or_else(wrong)?),
                (B::Str(b), Value::String(s)) => b.append_value(s),
                (B::Str(b), v @ (Value::Object(_) | Value::Array(_) | Value::Number(_) | Value::Bool(_))) => {
                    b.append_value(v.to_string())
                }
                _ => return Err(wrong()),
            }
        }
    }
    let columns: Vec<ArrayRef> = builders
        .into_iter()
        .map(|b| -> ArrayRef {
            match b {
                B::Bool(mut b) => Arc::new(b.finish()),
                B::Int(mut b) => Arc::new(b.finish()),
                B::Float(mut b) => Arc::new(b.finish()),
                B::Str(mut b) => Arc::new(b.finish()),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `sample` in the catalog: what `fanout functions sample` says, and the
/// parameters validation checks.
pub(crate) const SAMPLE: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "sample",
        shape: Shape::Map,
        summary: "keep a seeded random fraction of the rows",
        doc: "Each row is kept with probability `fraction`, decided by a SHA-256 digest of `seed` and the row's \
              values, so a rerun, a retry or another chunk size keeps exactly the same rows (equal rows are \
              kept or dropped together).",
        params: &[
            p("fraction", Float, None, "the probability of keeping a row, 0 to 1"),
            p("seed", Int, Some("0"), "the seed"),
        ],
    }
};

/// `hash` in the catalog: what `fanout functions hash` says, and the
/// parameters validation checks.
pub(crate) const HASH: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "hash",
        shape: Shape::Map,
        summary: "add a digest of chosen columns to each row",
        doc: "Appends a column holding the hex SHA-256 digest of the named columns' values: for each column \
              in order, the value's text (as fanout writes it in csv; a null is the byte 0x00) followed by the \
              byte 0x1f.",
        params: &[
            p("columns", StrList, None, "the columns to digest"),
            p("name", Str, Some("\"hash\""), "the new column's name"),
        ],
    }
};

/// `json_extract` in the catalog: what `fanout functions json_extract` says, and the
/// parameters validation checks.
pub(crate) const JSON_EXTRACT: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "json_extract",
        shape: Shape::Map,
        summary: "parse a JSON text column into typed columns",
        doc: "Each field is `path:type`, a dotted path into the JSON object (e.g. user.id) and a type \
              (bool, int64, float64, utf8). Output: one column per field, named by its path with dots as \
              underscores; a missing field or a JSON null is null; a value of the wrong type is an error.",
        params: &[
            p("fields", StrList, None, "the fields to extract, e.g. [\"user.id:int64\", \"event.amount:float64\"]"),
            p("column", Str, Some("\"line\""), "the column holding JSON text"),
        ],
    }
};

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;
    use arrow_array::types::Int64Type;

    #[test]
    fn json_extract_reads_json_text_columns() {
        // A JSON text column as the jsonl reader fills it: a string value
        // keeps its quotes, an object or a number is its JSON text.
        let values = StringArray::from(vec![
            Some(r#""MIT""#),
            Some(r#"{"type":"Apache-2.0","n":2,"url":{"u":1}}"#),
            Some("3"),
            None,
            Some(r#"[{"type":"x"}]"#),
        ]);
        let schema = Arc::new(Schema::new(vec![fanout_datasets::json_text_field("license")]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap();
        let params = serde_json::json!({"column": "license", "fields": ["type:utf8", "n:int64", "url:utf8"]});
        let spec = StageSpec { params: params.as_object().unwrap(), input: &batch.schema(), key: None };
        let plan = JsonExtract.plan(&spec).unwrap();
        let inv = Invocation::plain("s", 0);
        let out = plan.init().unwrap().call(&inv, vec![batch]).unwrap();
        let text = |c: usize| -> Vec<Option<String>> {
            out[0].column(c).as_string::<i32>().iter().map(|v| v.map(String::from)).collect()
        };
        assert_eq!(text(0), [None, Some("Apache-2.0".into()), None, None, None]);
        let n: Vec<_> = out[0].column(1).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(n, [None, Some(2), None, None, None]);
        assert_eq!(text(2), [None, Some(r#"{"u":1}"#.into()), None, None, None]);
    }
}
