//! `grep`: keep the rows whose text column matches a regular expression.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::DataType;
use regex::bytes::RegexBuilder;

use crate::catalog::{FunctionInfo, Shape, p};
use crate::function::{Builtin, FunctionError, Invocation, PerBatch, Planned, StageSpec, per_batch};
use crate::params::{Params, column};

/// The registered `grep`.
pub struct Grep;

impl Builtin for Grep {
    fn info(&self) -> &'static FunctionInfo {
        &GREP
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let p = Params::new("grep", self.info().params, spec.params)?;
        let name = p.string("column");
        let col = column(spec.input, &name)?;
        if spec.input.field(col).data_type() != &DataType::Utf8 {
            return Err(FunctionError::permanent(format!("grep: column `{name}` is not text (utf8)")));
        }
        let pattern = p.string("pattern");
        let (invert, ignore_case) = (p.boolean("invert"), p.boolean("ignore_case"));
        let compile = move || {
            RegexBuilder::new(&pattern)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| FunctionError::permanent(format!("grep: invalid pattern: {e}")))
        };
        compile()?;
        Ok(Arc::new(PerBatch {
            schema: spec.input.clone(),
            // The regex is compiled once per container, at init.
            make: move || {
                let re = compile()?;
                Ok(per_batch(move |_: &Invocation<'_>, batch: &RecordBatch| {
                    let text = batch.column(col).as_string::<i32>();
                    let keep: BooleanArray =
                        text.iter().map(|v| Some(v.is_some_and(|s| re.is_match(s.as_bytes()) != invert))).collect();
                    Ok(arrow_select::filter::filter_record_batch(batch, &keep)?)
                }))
            },
        }))
    }
}

/// `grep` in the catalog: what `fanout functions grep` says, and the
/// parameters validation checks.
pub(crate) const GREP: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "grep",
        shape: Shape::Map,
        summary: "keep the rows whose column matches a regular expression",
        doc: "Rust regex syntax (the regex crate); the pattern is compiled once per container, at init. \
              Output: the input rows that match (or, inverted, that do not). Null values never match.",
        params: &[
            p("pattern", Str, None, "the regular expression"),
            p("column", Str, Some("\"line\""), "the column to match"),
            p("invert", Bool, Some("false"), "keep the rows that do not match"),
            p("ignore_case", Bool, Some("false"), "match case-insensitively"),
        ],
    }
};
