//! Job files for fanout: the TOML (or JSON) schema, parsing with located
//! errors, `--set` overrides, and validation into a [`Plan`].
//!
//! A job is read in two steps, as ripgrep reads its arguments: the file is
//! deserialized into a [`JobFile`] that mirrors it (unknown keys are errors),
//! then [`validate`]d into a [`Plan`] whose values are checked and resolved.
//! Every error names its place: `jobs/x.toml:7:1: unknown field ...`, or the
//! `--set KEY=VALUE` that caused it.
//!
//! Validation learns which functions exist from a [`FunctionCatalog`] (the
//! workers' registry: builtins by name, and the kinds of external function
//! a function table may name, each checking its own settings), and asks an
//! [`Environment`] whether inputs, programs and directories exist
//! ([`LocalEnvironment`] by default; [`validate_with`] takes another).
//!
//! ```
//! use fanout_jobs::{load_source, validate, FunctionCatalog, FunctionProblem, Source};
//! use std::path::Path;
//!
//! struct Any;
//! impl FunctionCatalog for Any {
//!     fn check(&self, _: &str, _: &serde_json::Map<String, serde_json::Value>, _: bool) -> Result<(), FunctionProblem> {
//!         Ok(())
//!     }
//! }
//!
//! let text = r#"
//! [input]
//! generate = { kind = "text", size = "1MiB" }
//! [[stage]]
//! function = "word_count"
//! [output]
//! path = "out/words.csv"
//! "#;
//! let job = load_source(Source::new(Path::new("job.toml"), text.into()), &["platform.concurrency=3".parse()?])?;
//! let plan = validate(&job, &Any)?;
//! assert_eq!(plan.platform.concurrency, 3);
//! assert_eq!(plan.stages[0].name, "word_count");
//!
//! let bad = load_source(Source::new(Path::new("job.toml"), "[input]\nchunk_sise = 1\n".into()), &[]);
//! assert!(bad.unwrap_err().to_string().starts_with("job.toml:2:1: unknown field `chunk_sise`"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod catalog;
mod column;
mod environment;
mod error;
mod external;
mod json_span;
mod load;
mod plan;
pub mod platform;
mod schema;
pub mod units;
mod validate;

pub use catalog::{FunctionCatalog, FunctionProblem, FunctionRef};
pub use column::{TYPE_NAMES, parse_column};
pub use environment::{Environment, LocalEnvironment};
pub use error::{JobError, JobErrors};
pub use external::{COMMON_KEYS, ExternalCheck, ExternalChecked, ExternalKind, ExternalRef, SettingProblem};
pub use load::{FieldPath, LoadedJob, Override, Seg, Source, Syntax, load, load_source};
pub use plan::{
    InputPlan, InputSource, OnFailure, OutputMode, OutputPlan, Plan, SortKey, StagePlan, StartAt, StreamPlan,
    StreamSource, WindowKind, WindowPlan, generated_name,
};
pub use platform::{ColdStart, ContainerModel, PlatformPlan, Preset, Pricing};
pub use schema::{
    FunctionSpec, FunctionTable, GenerateSpec, InputSpec, JobFile, OnFailureSpec, OutputSpec, Paths, PlatformSpec,
    Setting, StageSpec, StreamSourceSpec, StreamSpec, WindowSpec,
};
pub use validate::{DEFAULT_BATCH_SIZE, DEFAULT_CHECKPOINT_EVERY, validate, validate_with};
