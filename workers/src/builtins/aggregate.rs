//! `aggregate`: group by the stage's key columns and compute count, sum,
//! min, max and mean — partially on the map side (per split, a combiner)
//! and finally per key partition on the reduce side.
//!
//! Nulls are skipped, as in SQL: a group whose values are all null has a
//! null sum, min, max and mean; `count` counts rows. Integer columns sum
//! to int64 (overflow is an error), floating-point ones to float64; a mean
//! is float64. Partial results carry a mean as two hidden columns
//! (`__mean_sum_<col>`, `__mean_n_<col>`) that the reduce side merges.

use std::sync::Arc;

use arrow_array::builder::Float64Builder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hashbrown::HashMap;

use crate::catalog::{FunctionInfo, Shape, p};
use crate::function::{Builtin, FunctionError, Invocation, MapInstance, Planned, ReduceInstance, StageSpec};
use crate::params::{Params, column};

/// How one output column folds its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Rows in the group.
    Rows,
    /// Non-null values in the group.
    NonNull,
    /// Sum of the values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
}

/// One aggregate column: its input, fold and output.
#[derive(Debug, Clone)]
struct Agg {
    input: Option<usize>,
    op: Op,
    /// Whether values are folded as float64 (else int64).
    float: bool,
    name: String,
}

impl Agg {
    fn field(&self) -> Field {
        let ty = if self.float { DataType::Float64 } else { DataType::Int64 };
        Field::new(&self.name, ty, !matches!(self.op, Op::Rows | Op::NonNull))
    }
}

/// A final column computed from two others: `name = sum / n`.
#[derive(Debug, Clone)]
struct Mean {
    name: String,
    sum: usize,
    n: usize,
}

/// The registered `aggregate`.
pub struct Aggregate;

impl Builtin for Aggregate {
    fn info(&self) -> &'static FunctionInfo {
        &AGGREGATE
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let p = Params::new("aggregate", self.info().params, spec.params)?;
        let key = spec.key.ok_or_else(|| FunctionError::permanent("aggregate needs a keyed stage"))?;
        let input = spec.input;
        let keys: Vec<usize> = key.iter().map(|k| column(input, k)).collect::<Result<_, _>>()?;
        let numeric = |name: &str| -> Result<(usize, bool), FunctionError> {
            let i = column(input, name)?;
            match input.field(i).data_type() {
                t if t.is_integer() => Ok((i, false)),
                t if t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) => {
                    Ok((i, true))
                }
                t => Err(FunctionError::permanent(format!("aggregate: column `{name}` is {t}, not a number"))),
            }
        };
        let mut partial = Vec::new();
        let mut last = Vec::new();
        let base = keys.len();
        if p.boolean("count") {
            partial.push(Agg { input: None, op: Op::Rows, float: false, name: "count".into() });
        }
        for (param, op) in [("sum", Op::Sum), ("min", Op::Min), ("max", Op::Max)] {
            for c in p.strings(param) {
                let (i, float) = numeric(&c)?;
                partial.push(Agg { input: Some(i), op, float, name: format!("{param}_{c}") });
            }
        }
        for c in p.strings("mean") {
            let (i, _) = numeric(&c)?;
            let at = base + partial.len();
            partial.push(Agg { input: Some(i), op: Op::Sum, float: true, name: format!("__mean_sum_{c}") });
            partial.push(Agg { input: Some(i), op: Op::NonNull, float: false, name: format!("__mean_n_{c}") });
            last.push(Mean { name: format!("mean_{c}"), sum: at, n: at + 1 });
        }
        if partial.is_empty() {
            return Err(FunctionError::permanent("aggregate: ask for at least one of count, sum, min, max, mean"));
        }
        let key_fields: Vec<Field> = keys.iter().map(|&k| input.field(k).clone()).collect();
        let partial_schema = schema(&key_fields, &partial, &[]);
        // The reduce side folds the partial columns: counts and sums add up.
        let merge: Vec<Agg> = partial
            .iter()
            .enumerate()
            .map(|(j, a)| Agg {
                input: Some(base + j),
                op: match a.op {
                    Op::Rows | Op::NonNull | Op::Sum => Op::Sum,
                    other => other,
                },
                float: a.float,
                name: a.name.clone(),
            })
            .collect();
        let final_schema = schema(&key_fields, &merge, &last);
        let mut read: Vec<usize> = keys.iter().copied().chain(partial.iter().filter_map(|a| a.input)).collect();
        read.sort_unstable();
        read.dedup();
        let input_columns = read.iter().map(|&i| input.field(i).name().clone()).collect();
        Ok(Arc::new(Plan {
            keys,
            key_fields,
            partial,
            merge,
            means: last,
            partial_schema,
            final_schema,
            input_columns,
        }))
    }
}

fn schema(keys: &[Field], aggs: &[Agg], means: &[Mean]) -> SchemaRef {
    let mut fields: Vec<Field> = keys.to_vec();
    if means.is_empty() {
        fields.extend(aggs.iter().map(Agg::field));
    } else {
        fields.extend(aggs.iter().filter(|a| !a.name.starts_with("__mean_")).map(Agg::field));
        fields.extend(means.iter().map(|m| Field::new(&m.name, DataType::Float64, true)));
    }
    Arc::new(Schema::new(fields))
}

struct Plan {
    keys: Vec<usize>,
    key_fields: Vec<Field>,
    partial: Vec<Agg>,
    merge: Vec<Agg>,
    means: Vec<Mean>,
    partial_schema: SchemaRef,
    final_schema: SchemaRef,
    /// The input columns read: keys and aggregated columns.
    input_columns: Vec<String>,
}

impl Plan {
    fn group_by(
        &self,
        keys: Vec<usize>,
        aggs: Vec<Agg>,
        means: Vec<Mean>,
        out: SchemaRef,
    ) -> Result<GroupBy, FunctionError> {
        let fields = self.key_fields.iter().map(|f| SortField::new(f.data_type().clone())).collect();
        Ok(GroupBy {
            keys,
            aggs,
            means,
            schema: out,
            converter: RowConverter::new(fields)?,
            utf8_key: self.key_fields.len() == 1 && self.key_fields[0].data_type() == &DataType::Utf8,
            null_group: None,
            groups: HashMap::new(),
            rows: Vec::new(),
            acc: Vec::new(),
        })
    }
}

impl Planned for Plan {
    fn output_schema(&self) -> SchemaRef {
        self.partial_schema.clone()
    }

    fn input_columns(&self) -> Option<Vec<String>> {
        Some(self.input_columns.clone())
    }

    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError> {
        let g = self.group_by(self.keys.clone(), self.partial.clone(), vec![], self.partial_schema.clone())?;
        Ok(Box::new(g))
    }

    fn reduce_schema(&self) -> Option<SchemaRef> {
        Some(self.final_schema.clone())
    }

    fn init_reduce(&self) -> Option<Result<Box<dyn ReduceInstance>, FunctionError>> {
        let keys = (0..self.keys.len()).collect();
        let g = self.group_by(keys, self.merge.clone(), self.means.clone(), self.final_schema.clone());
        Some(g.map(|g| Box::new(g) as Box<dyn ReduceInstance>))
    }
}

/// One accumulator column, one slot per group.
enum Acc {
    Count(Vec<i64>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
}

/// A hash group-by over arrow-row encoded keys.
struct GroupBy {
    keys: Vec<usize>,
    aggs: Vec<Agg>,
    means: Vec<Mean>,
    schema: SchemaRef,
    converter: RowConverter,
    /// A single utf8 key column: groups are found by the string's bytes,
    /// with no row encoding (the common case: words, names, ids).
    utf8_key: bool,
    /// The group of the null key, in `utf8_key` mode.
    null_group: Option<usize>,
    groups: HashMap<Box<[u8]>, usize>,
    /// Each group's encoded key, in first-seen order.
    rows: Vec<Box<[u8]>>,
    acc: Vec<Acc>,
}

/// An input column cast for folding.
enum Values {
    None,
    Int(Int64Array),
    Float(Float64Array),
}

impl GroupBy {
    /// Adds a group for the encoded key `bytes` (`None`: the null key of a
    /// utf8 key column, which is not looked up by bytes); returns its index.
    fn new_group(&mut self, bytes: Option<&[u8]>) -> usize {
        if self.acc.is_empty() {
            self.acc = self
                .aggs
                .iter()
                .map(|a| match (a.op, a.float) {
                    (Op::Rows | Op::NonNull, _) => Acc::Count(Vec::new()),
                    (_, false) => Acc::Int(Vec::new()),
                    (_, true) => Acc::Float(Vec::new()),
                })
                .collect();
        }
        let g = self.rows.len();
        self.rows.push(bytes.unwrap_or_default().into());
        match bytes {
            Some(b) => {
                self.groups.insert(b.into(), g);
            }
            None => self.null_group = Some(g),
        }
        for acc in &mut self.acc {
            match acc {
                Acc::Count(v) => v.push(0),
                Acc::Int(v) => v.push(None),
                Acc::Float(v) => v.push(None),
            }
        }
        g
    }

    fn update(&mut self, batch: &RecordBatch) -> Result<(), FunctionError> {
        let key_cols: Vec<ArrayRef> = self.keys.iter().map(|&k| batch.column(k).clone()).collect();
        // Without key columns every row is in the one group (an empty key).
        let rows =
            (!key_cols.is_empty() && !self.utf8_key).then(|| self.converter.convert_columns(&key_cols)).transpose()?;
        let strings = self.utf8_key.then(|| key_cols[0].as_string::<i32>());
        let mut values = Vec::with_capacity(self.aggs.len());
        for a in &self.aggs {
            values.push(match a.input {
                None => Values::None,
                Some(i) if a.float => Values::Float(
                    arrow_cast::cast(batch.column(i), &DataType::Float64)?.as_primitive::<Float64Type>().clone(),
                ),
                Some(i) => Values::Int(
                    arrow_cast::cast(batch.column(i), &DataType::Int64)?.as_primitive::<Int64Type>().clone(),
                ),
            });
        }
        for r in 0..batch.num_rows() {
            let bytes = match (&rows, strings) {
                (Some(rows), _) => Some(rows.row(r).data()),
                (None, Some(s)) => s.is_valid(r).then(|| s.value(r).as_bytes()),
                (None, None) => Some(&[][..]),
            };
            let found = match bytes {
                Some(b) => self.groups.get(b).copied(),
                None => self.null_group,
            };
            let g = match found {
                Some(g) => g,
                None => self.new_group(bytes),
            };
            for ((a, acc), vals) in self.aggs.iter().zip(&mut self.acc).zip(&values) {
                fold(a, acc, vals, g, r)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>, FunctionError> {
        if self.keys.is_empty() && self.rows.is_empty() {
            // A global aggregate of nothing is one row, as in SQL.
            self.new_group(Some(&[]));
        }
        let keys: Vec<ArrayRef> = if self.keys.is_empty() {
            Vec::new()
        } else if self.utf8_key {
            let mut b = arrow_array::builder::StringBuilder::with_capacity(self.rows.len(), 0);
            for (g, bytes) in self.rows.iter().enumerate() {
                match self.null_group == Some(g) {
                    true => b.append_null(),
                    false => {
                        b.append_value(std::str::from_utf8(bytes).map_err(|e| FunctionError::permanent(e.to_string()))?)
                    }
                }
            }
            vec![Arc::new(b.finish())]
        } else {
            let parser = self.converter.parser();
            self.converter.convert_rows(self.rows.iter().map(|r| parser.parse(r)))?
        };
        let mut columns: Vec<ArrayRef> = keys;
        let n = self.rows.len();
        let mut aggs: Vec<ArrayRef> = Vec::new();
        for acc in self.acc.drain(..) {
            aggs.push(match acc {
                Acc::Count(v) => Arc::new(Int64Array::from(v)),
                Acc::Int(v) => Arc::new(Int64Array::from(v)),
                Acc::Float(v) => Arc::new(Float64Array::from(v)),
            });
        }
        if aggs.is_empty() {
            // No groups: empty columns of the right types.
            aggs = self.aggs.iter().map(|a| arrow_array::new_empty_array(a.field().data_type())).collect();
        }
        let base = self.keys.len();
        if self.means.is_empty() {
            columns.extend(aggs);
        } else {
            for (a, col) in self.aggs.iter().zip(&aggs) {
                if !a.name.starts_with("__mean_") {
                    columns.push(col.clone());
                }
            }
            for m in &self.means {
                let sum = aggs[m.sum - base].as_primitive::<Float64Type>();
                let cnt = aggs[m.n - base].as_primitive::<Int64Type>();
                let mut b = Float64Builder::with_capacity(n);
                for g in 0..n {
                    match (sum.is_valid(g), cnt.value(g)) {
                        (true, c) if c > 0 => b.append_value(sum.value(g) / c as f64),
                        _ => b.append_null(),
                    }
                }
                columns.push(Arc::new(b.finish()));
            }
        }
        self.groups.clear();
        self.rows.clear();
        self.null_group = None;
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(n));
        Ok(vec![RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?])
    }
}

fn fold(a: &Agg, acc: &mut Acc, vals: &Values, g: usize, r: usize) -> Result<(), FunctionError> {
    match (acc, vals) {
        (Acc::Count(v), Values::None) => v[g] += 1,
        (Acc::Count(v), Values::Int(x)) if a.op == Op::NonNull => v[g] += i64::from(x.is_valid(r)),
        (Acc::Count(v), Values::Float(x)) => v[g] += i64::from(x.is_valid(r)),
        (Acc::Count(v), Values::Int(x)) => v[g] += i64::from(x.is_valid(r)),
        (Acc::Int(v), Values::Int(x)) if x.is_valid(r) => {
            let x = x.value(r);
            v[g] = Some(match (v[g], a.op) {
                (None, _) => x,
                (Some(s), Op::Sum) => s
                    .checked_add(x)
                    .ok_or_else(|| FunctionError::permanent(format!("aggregate: {} overflows int64", a.name)))?,
                (Some(s), Op::Min) => s.min(x),
                (Some(s), _) => s.max(x),
            });
        }
        (Acc::Float(v), Values::Float(x)) if x.is_valid(r) => {
            let x = x.value(r);
            v[g] = Some(match (v[g], a.op) {
                (None, _) => x,
                (Some(s), Op::Sum) => s + x,
                (Some(s), Op::Min) => s.min(x),
                (Some(s), _) => s.max(x),
            });
        }
        _ => {}
    }
    Ok(())
}

impl MapInstance for GroupBy {
    fn call(&mut self, _: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        for b in &input {
            self.update(b)?;
        }
        self.finish()
    }
}

impl ReduceInstance for GroupBy {
    fn call(&mut self, _: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        for b in &input {
            self.update(b)?;
        }
        self.finish()
    }
}

/// `aggregate` in the catalog: what `fanout functions aggregate` says, and the
/// parameters validation checks.
pub(crate) const AGGREGATE: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "aggregate",
        shape: Shape::Keyed,
        summary: "group by the stage's key and aggregate (partial map-side, final reduce-side)",
        doc: "The stage's `key` names the group columns. Output: the key columns, then `count` (int64) if asked, \
              then `sum_<col>`, `min_<col>`, `max_<col>`, `mean_<col>` for each column named. Partial \
              aggregates are computed per split on the map side (a combiner) and merged per partition.",
        params: &[
            p("count", Bool, Some("false"), "count the rows of each group"),
            p("sum", StrList, Some("[]"), "columns to sum"),
            p("min", StrList, Some("[]"), "columns to take the minimum of"),
            p("max", StrList, Some("[]"), "columns to take the maximum of"),
            p("mean", StrList, Some("[]"), "columns to average"),
        ],
    }
};

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};

    /// key, count, sum, mean.
    type Row = (Option<String>, i64, Option<i64>, Option<f64>);

    fn run(keys: Vec<Option<&str>>, values: Vec<Option<i64>>) -> Vec<Row> {
        let batch = RecordBatch::try_from_iter([
            ("k", Arc::new(StringArray::from(keys)) as ArrayRef),
            ("v", Arc::new(Int64Array::from(values)) as ArrayRef),
        ])
        .unwrap();
        let params = serde_json::json!({"count": true, "sum": ["v"], "mean": ["v"]});
        let key = vec!["k".to_string()];
        let spec = StageSpec { params: params.as_object().unwrap(), input: &batch.schema(), key: Some(&key) };
        let plan = Aggregate.plan(&spec).unwrap();
        let inv = Invocation::plain("s", 0);
        // Two map-side partials, merged on the reduce side.
        let mut combine = plan.init().unwrap();
        let a = combine.call(&inv, vec![batch.slice(0, 2)]).unwrap();
        let b = combine.call(&inv, vec![batch.slice(2, batch.num_rows() - 2)]).unwrap();
        let mut reduce = plan.init_reduce().unwrap().unwrap();
        let out = reduce.call(&inv, [a, b].concat()).unwrap();
        let out = &out[0];
        let k = out.column(0).as_string::<i32>();
        let c = out.column(1).as_primitive::<Int64Type>();
        let s = out.column(2).as_primitive::<Int64Type>();
        let m = out.column(3).as_primitive::<Float64Type>();
        let mut rows: Vec<_> = (0..out.num_rows())
            .map(|i| {
                (
                    k.is_valid(i).then(|| k.value(i).to_string()),
                    c.value(i),
                    s.is_valid(i).then(|| s.value(i)),
                    m.is_valid(i).then(|| m.value(i)),
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    #[test]
    fn null_and_empty_keys_are_different_groups() {
        let rows = run(
            vec![Some("a"), None, Some(""), Some("a"), None, Some("b")],
            vec![Some(1), Some(2), Some(3), Some(4), None, None],
        );
        assert_eq!(
            rows,
            [
                (None, 2, Some(2), Some(2.0)),
                (Some(String::new()), 1, Some(3), Some(3.0)),
                (Some("a".into()), 2, Some(5), Some(2.5)),
                (Some("b".into()), 1, None, None),
            ]
        );
    }
}
