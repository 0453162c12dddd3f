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
