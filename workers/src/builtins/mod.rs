//! The builtin functions, one family per file.

mod aggregate;
mod cpu;
mod filter;
mod grep;
mod rows;
mod select;
mod sort;
mod word_count;

pub use aggregate::Aggregate;
pub use cpu::{Pi, SplitMix64, Wait, pi_inside};
pub use filter::{Expr, Filter, eval as eval_predicate, parse as parse_predicate};
pub use grep::Grep;
pub use rows::{Hash, JsonExtract, Sample};
pub use select::Select;
pub use sort::{Sort, TopK, sort_batches, sort_keys};
pub use word_count::{WordCount, for_each_word};

use std::sync::Arc;

use crate::catalog::FunctionInfo;
use crate::function::Builtin;

/// Every builtin's catalog entry, in the order `fanout functions` lists
/// them (the order of [`all`]).
pub fn catalog() -> Vec<&'static FunctionInfo> {
    all().iter().map(|b| b.info()).collect()
}

/// A builtin's catalog entry, by name.
pub fn info(name: &str) -> Option<&'static FunctionInfo> {
    catalog().into_iter().find(|f| f.name == name)
}

/// Every builtin, in the order `fanout functions` lists them: the one list
/// a new builtin joins (with its file, which holds its code and its
/// catalog entry).
pub fn all() -> [Arc<dyn Builtin>; 13] {
    [
        Arc::new(WordCount),
        Arc::new(Grep),
        Arc::new(Filter),
        Arc::new(Select),
        Arc::new(Aggregate),
        Arc::new(Sort),
        Arc::new(TopK),
        Arc::new(Sample),
        Arc::new(Hash),
        Arc::new(JsonExtract),
        Arc::new(Pi),
        Arc::new(Wait { spin: true }),
        Arc::new(Wait { spin: false }),
    ]
}
