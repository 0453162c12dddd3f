//! Functions for fanout: the function model, the builtin catalog, the
//! registry that names them, and the backends that host functions outside
//! the process ([`external`]: exec, the Lambda Runtime API, http and
//! aws_lambda, one [`Backend`](external::Backend) per kind, registered in
//! the [`Registry`]), the event contract they speak (`wire.rs`), the
//! function host of `fanout serve` ([`host`]), and the small HTTP/1.1
//! server and client they are served on.
//!
//! A stage's function is [planned](function::Builtin::plan) once — its
//! parameters checked against the stage's input schema, so a wrong
//! parameter is an error at validate time — then initialised once per
//! container (its cold start) and called once per invocation with all the
//! record batches of one task. Every builtin is documented in
//! [`builtins::catalog`]; [`Registry::builtins`] holds them (and the
//! backends of [`external`]), and a program using this library can
//! [register](Registry::register) its own functions, and
//! [backends](Registry::register_backend) for other kinds of external
//! function.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{RecordBatch, StringArray};
//! use fanout_workers::{Invocation, Registry, StageSpec};
//!
//! let lines = RecordBatch::try_from_iter([("line", Arc::new(StringArray::from(vec!["a b a"])) as _)])?;
//! let params = serde_json::json!({}).as_object().unwrap().clone();
//! let spec = StageSpec { params: &params, input: &lines.schema(), key: None };
//! let planned = Registry::builtins().get("word_count").unwrap().plan(&spec)?;
//! let mut container = planned.init()?; // the cold start
//! let inv = Invocation::plain("count", 0);
//! let out = container.call(&inv, vec![lines])?;
//! assert_eq!(out[0].num_rows(), 2); // a: 2, b: 1
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod aws;
pub mod builtins;
pub mod catalog;
pub mod external;
pub mod function;
pub mod host;
mod http1;
pub mod ingest;
pub mod params;
mod registry;
pub mod shuffle;
mod wire;

pub use function::{Builtin, FunctionError, Invocation, MapInstance, Piece, Planned, ReduceInstance, StageSpec};
pub use registry::Registry;
