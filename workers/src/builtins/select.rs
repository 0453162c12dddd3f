//! `select`: project and rename columns.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};

use crate::catalog::{FunctionInfo, Shape, p};
use crate::function::{Builtin, FunctionError, Invocation, PerBatch, Planned, ReadsOnly, StageSpec, per_batch};
use crate::params::{Params, column};

/// The registered `select`.
pub struct Select;

impl Builtin for Select {
    fn info(&self) -> &'static FunctionInfo {
        &SELECT
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let p = Params::new("select", self.info().params, spec.params)?;
        let mut indices = Vec::new();
        let mut fields = Vec::new();
        for entry in p.strings("columns") {
            let (name, alias) = match entry.split_once(" as ") {
                Some((n, a)) => (n.trim(), a.trim()),
                None => (entry.trim(), entry.trim()),
            };
            let i = column(spec.input, name)?;
            if fields.iter().any(|f: &Field| f.name() == alias) {
                return Err(FunctionError::permanent(format!("select: two columns are named `{alias}`")));
            }
            indices.push(i);
            fields.push(spec.input.field(i).clone().with_name(alias));
        }
        if indices.is_empty() {
            return Err(FunctionError::permanent("select: name at least one column"));
        }
        let schema = Arc::new(Schema::new(fields));
        let out = schema.clone();
        let columns = indices.iter().map(|&i| spec.input.field(i).name().clone()).collect();
        let inner = Arc::new(PerBatch {
            schema,
            make: move || {
                let (indices, out) = (indices.clone(), out.clone());
                Ok(per_batch(move |_: &Invocation<'_>, batch: &RecordBatch| {
                    let columns = indices.iter().map(|&i| batch.column(i).clone()).collect();
                    Ok(RecordBatch::try_new(out.clone(), columns)?)
                }))
            },
        });
        Ok(Arc::new(ReadsOnly { inner, columns }))
    }
}

/// `select` in the catalog: what `fanout functions select` says, and the
/// parameters validation checks.
pub(crate) const SELECT: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "select",
        shape: Shape::Map,
        summary: "project and rename columns",
        doc: "Each entry is a column name, or `name as new_name`. Output: those columns, in that order.",
        params: &[p("columns", StrList, None, "the columns to keep, e.g. [\"id\", \"user.id as user_id\"]")],
    }
};
