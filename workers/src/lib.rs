//! Functions for fanout: the builtin catalog and its parameter checking.
//!
//! Every builtin is documented in [`catalog::BUILTINS`] — its name, whether
//! it runs per split (map) or per key partition (keyed), and its parameters
//! with their types and defaults. [`catalog::Builtins`] checks a job's
//! stages against it at validate time, so a wrong parameter is an error
//! before anything runs.
//!
//! ```
//! use fanout_jobs::FunctionCatalog;
//! use fanout_workers::catalog::Builtins;
//!
//! let params = serde_json::json!({"pattern": "error", "invert": "yes"});
//! let err = Builtins.check("grep", params.as_object().unwrap(), false).unwrap_err();
//! assert_eq!(err.message, "grep: parameter `invert` must be a boolean, got \"yes\"");
//! ```

pub mod catalog;
pub mod params;
