//! `sort` and `top_k`: order each invocation's rows (and keep the first k).

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ord::sort::{SortColumn, SortOptions, lexsort_to_indices};
use arrow_schema::SchemaRef;

use crate::catalog::{FunctionInfo, Shape, p};
use crate::function::{Builtin, FunctionError, Invocation, MapInstance, Planned, StageSpec};
use crate::params::{Params, column};

/// Sort keys: column indexes and directions, from entries like "-count".
pub fn sort_keys(schema: &arrow_schema::Schema, by: &[String]) -> Result<Vec<(usize, SortOptions)>, FunctionError> {
    by.iter()
        .map(|s| {
            let (name, descending) = match s.strip_prefix('-') {
                Some(n) => (n, true),
                None => (s.strip_prefix('+').unwrap_or(s), false),
            };
            Ok((column(schema, name)?, SortOptions { descending, nulls_first: false }))
        })
        .collect()
}

/// Sorts the rows of `batches` (one schema) by `keys`, keeping the first
/// `limit`. Equal rows keep their input order (the sort is stable).
pub fn sort_batches(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    keys: &[(usize, SortOptions)],
    limit: Option<usize>,
) -> Result<RecordBatch, FunctionError> {
    let all = arrow_select::concat::concat_batches(schema, batches)?;
    if keys.is_empty() {
        let n = limit.unwrap_or(all.num_rows()).min(all.num_rows());
        return Ok(all.slice(0, n));
    }
    let columns: Vec<SortColumn> =
        keys.iter().map(|&(i, options)| SortColumn { values: all.column(i).clone(), options: Some(options) }).collect();
    // lexsort is not stable; a row-number key last makes it so.
    let rows = arrow_array::UInt64Array::from_iter_values(0..all.num_rows() as u64);
    let mut columns = columns;
    columns.push(SortColumn { values: Arc::new(rows), options: None });
    let indices = lexsort_to_indices(&columns, limit)?;
    Ok(arrow_select::take::take_record_batch(&all, &indices)?)
}

/// The registered `sort`.
pub struct Sort;
/// The registered `top_k`.
pub struct TopK;

fn plan(info: &FunctionInfo, spec: &StageSpec<'_>, with_k: bool) -> Result<Arc<dyn Planned>, FunctionError> {
    let name = info.name;
    let p = Params::new(name, info.params, spec.params)?;
    let keys = sort_keys(spec.input, &p.strings("by"))?;
    if keys.is_empty() {
        return Err(FunctionError::permanent(format!("{name}: `by` must name at least one column")));
    }
    let limit = if with_k {
        let k = p.int("k");
        if k < 0 {
            return Err(FunctionError::permanent("top_k: k must be at least 0"));
        }
        Some(k as usize)
    } else {
        None
    };
    Ok(Arc::new(SortPlan { schema: spec.input.clone(), keys, limit }))
}

impl Builtin for Sort {
    fn info(&self) -> &'static FunctionInfo {
        &SORT
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        plan(&SORT, spec, false)
    }
}

impl Builtin for TopK {
    fn info(&self) -> &'static FunctionInfo {
        &TOP_K
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        plan(&TOP_K, spec, true)
    }
}

#[derive(Clone)]
struct SortPlan {
    schema: SchemaRef,
    keys: Vec<(usize, SortOptions)>,
    limit: Option<usize>,
}

impl Planned for SortPlan {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn init(&self) -> Result<Box<dyn MapInstance>, FunctionError> {
        Ok(Box::new(self.clone()))
    }
}

impl MapInstance for SortPlan {
    fn call(&mut self, _: &Invocation<'_>, input: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, FunctionError> {
        Ok(vec![sort_batches(&self.schema, &input, &self.keys, self.limit)?])
    }
}

/// `sort` in the catalog: what `fanout functions sort` says, and the
/// parameters validation checks.
pub(crate) const SORT: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "sort",
        shape: Shape::Map,
        summary: "sort each invocation's rows",
        doc: "Sorts the rows of each invocation by the columns named; a leading \"-\" sorts descending. \
              For a total order of the output, use output.sort.",
        params: &[p("by", StrList, None, "sort columns, e.g. [\"-count\", \"word\"]")],
    }
};

/// `top_k` in the catalog: what `fanout functions top_k` says, and the
/// parameters validation checks.
pub(crate) const TOP_K: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "top_k",
        shape: Shape::Map,
        summary: "keep each invocation's first k rows in a sort order",
        doc: "Like sort followed by a limit of k. With output.sort and output.limit the same, the gathered \
              output is the global top k.",
        params: &[
            p("by", StrList, None, "sort columns; a leading \"-\" sorts descending"),
            p("k", Int, None, "rows to keep"),
        ],
    }
};
