//! The builtin function catalog: every builtin's name, what it does, and
//! its documented parameters, as `fanout functions` lists them and as job
//! validation checks them.

use crate::params::{self, ParamSpec, ParamType::*};

/// Where a function may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Per split: a map stage.
    Map,
    /// Map side per split and reduce side per key partition: a keyed stage.
    Keyed,
    /// Either.
    Both,
}

/// A builtin function's documentation.
#[derive(Debug, Clone, Copy)]
pub struct FunctionInfo {
    /// Its name in job files.
    pub name: &'static str,
    /// Map, keyed or both.
    pub shape: Shape,
    /// One line on what it does.
    pub summary: &'static str,
    /// Input, output and behaviour in full.
    pub doc: &'static str,
    /// Its parameters.
    pub params: &'static [ParamSpec],
}

const fn p(name: &'static str, ty: params::ParamType, default: Option<&'static str>, doc: &'static str) -> ParamSpec {
    ParamSpec { name, ty, default, doc }
}

/// Every builtin function, in the order `fanout functions` lists them.
pub const BUILTINS: &[FunctionInfo] = &[
    FunctionInfo {
        name: "word_count",
        shape: Shape::Map,
        summary: "split a text column into words and count each word (map-side)",
        doc: "Tokens are maximal runs of bytes that are not ASCII whitespace (space, \\t, \\n, \\r, \\v, \\f); \
              punctuation stays part of a word. Output: word (utf8), count (int64), one row per distinct word \
              of the invocation's input. Follow it with a keyed `aggregate` stage (key = [\"word\"], sum = [\"count\"]) \
              for the total.",
        params: &[
            p("column", Str, Some("\"line\""), "the text column to tokenize"),
            p("lowercase", Bool, Some("false"), "fold ASCII letters to lower case before counting"),
        ],
    },
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
    },
    FunctionInfo {
        name: "filter",
        shape: Shape::Map,
        summary: "keep the rows for which a predicate holds",
        doc: "The predicate compares columns with literals: = != < <= > >=, `col in (a, b)`, `col is null`, \
              `col is not null`, combined with and, or, not and parentheses. Strings are quoted with ' or \". \
              A comparison with a null is false.",
        params: &[p("where", Str, None, "the predicate, e.g. \"amount > 10 and country in ('DE', 'FR')\"")],
    },
    FunctionInfo {
        name: "select",
        shape: Shape::Map,
        summary: "project and rename columns",
        doc: "Each entry is a column name, or `name as new_name`. Output: those columns, in that order.",
        params: &[p("columns", StrList, None, "the columns to keep, e.g. [\"id\", \"user.id as user_id\"]")],
    },
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
    },
    FunctionInfo {
        name: "sort",
        shape: Shape::Map,
        summary: "sort each invocation's rows",
        doc: "Sorts the rows of each invocation by the columns named; a leading \"-\" sorts descending. \
              For a total order of the output, use output.sort.",
        params: &[p("by", StrList, None, "sort columns, e.g. [\"-count\", \"word\"]")],
    },
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
    },
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
    },
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
    },
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
    },
    FunctionInfo {
        name: "pi",
        shape: Shape::Map,
        summary: "estimate pi by Monte Carlo (CPU-bound)",
        doc: "For each input row, draws `samples` points in the unit square from a SplitMix64 generator seeded \
              from `seed` and the row's integer `column`, and counts those inside the quarter circle. Output: \
              the column, inside (int64) and samples (int64) per row; pi = 4 * sum(inside) / sum(samples). \
              Feed it a range: `generate = { kind = \"range\", rows = 1000 }` gives a column i = 0..999.",
        params: &[
            p("samples", Int, None, "points drawn per input row"),
            p("column", Str, Some("\"i\""), "an integer column that seeds each row"),
            p("seed", Int, Some("0"), "the seed"),
        ],
    },
    FunctionInfo {
        name: "burn",
        shape: Shape::Map,
        summary: "spin the CPU for a fixed time, then pass the input through",
        doc: "A CPU-bound stand-in for real work: busy-loops for `ms` milliseconds per invocation.",
        params: &[p("ms", Int, None, "milliseconds to spin")],
    },
    FunctionInfo {
        name: "sleep",
        shape: Shape::Map,
        summary: "wait a fixed time, then pass the input through",
        doc: "An I/O-bound stand-in: sleeps `ms` milliseconds per invocation without using a core.",
        params: &[p("ms", Int, None, "milliseconds to wait")],
    },
];

/// Looks up a builtin by name.
pub fn info(name: &str) -> Option<&'static FunctionInfo> {
    BUILTINS.iter().find(|f| f.name == name)
}
