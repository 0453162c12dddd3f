//! Functions outside the process, as validation sees them: the kinds a
//! catalog describes, a function table handed to its kind's check, the
//! problems that check finds, and the resolved reference.
//!
//! A function table (`function = { exec = [...], cwd = "..." }`) names its
//! kind with one key. Which kinds exist, and which further keys each
//! accepts, is the [`FunctionCatalog`](crate::FunctionCatalog)'s to say
//! (the workers' registry holds one backend per kind), so this crate keeps
//! no list of them: validation (`validate/external.rs`) checks the table's
//! keys against the catalog's kinds, checks the settings every kind shares
//! ([`COMMON_KEYS`]), and hands the rest to the kind's own check, placing
//! each problem it reports at its field.

use std::fmt;
use std::path::{Path, PathBuf};

use arrow_schema::SchemaRef;
use serde_json::{Map, Value};

use crate::load::FieldPath;

/// The keys every kind of external function accepts besides its own.
pub const COMMON_KEYS: &[&str] = &["schema", "env", "cwd"];

/// A kind of external function, as a catalog describes it to validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalKind<'a> {
    /// The key that names the kind in a function table: `exec`, `lambda`.
    pub name: &'a str,
    /// The keys it accepts besides its own and [`COMMON_KEYS`].
    pub keys: &'a [&'a str],
}

/// A function table, as validation hands it to its kind's check.
#[derive(Debug, Clone, Copy)]
pub struct ExternalCheck<'a> {
    /// The kind.
    pub kind: &'a str,
    /// The kind's key and the other keys of the kind's own, as written.
    pub settings: &'a Map<String, Value>,
    /// The columns the function returns (`schema`), if given.
    pub schema: Option<&'a SchemaRef>,
    /// The working directory of the function's processes (`cwd`), if given.
    pub cwd: Option<&'a Path>,
    /// The stage's position in the job (0 is the stage that reads the
    /// input's splits).
    pub stage: usize,
}

/// What a kind's check makes of a function table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalChecked {
    /// The stage's name when the job gives none (exec: its program;
    /// lambda: its script's stem).
    pub name: String,
    /// What is wrong, each at its field.
    pub problems: Vec<SettingProblem>,
}

/// A problem with one field of a function table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    /// The field, from the function table down (`exec.0`, `io`); empty
    /// for the table itself.
    pub field: FieldPath,
    /// What is wrong.
    pub message: String,
}

impl SettingProblem {
    /// A problem at `field`.
    pub fn new(field: FieldPath, message: impl Into<String>) -> Self {
        SettingProblem { field, message: message.into() }
    }
}

/// An external function, validated: its kind, which the engine looks up
/// in the registry, and the settings the kind's backend plans from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalRef {
    /// The kind: `exec`, `lambda`.
    pub kind: String,
    /// The kind's key and its own other keys, as written (and checked by
    /// the kind).
    pub settings: Map<String, Value>,
    /// The columns the function returns (`None`: the kind's default).
    pub schema: Option<SchemaRef>,
    /// Extra environment variables for the function's processes.
    pub env: Vec<(String, String)>,
    /// The working directory of its processes (`None`: the current one).
    pub cwd: Option<PathBuf>,
}

impl fmt::Display for ExternalRef {
    /// The kind and the value of its key: `exec ["awk", "{print}"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.settings.get(&self.kind) {
            Some(Value::String(s)) => write!(f, "{} {s}", self.kind),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                let items: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                write!(f, "{} {items:?}", self.kind)
            }
            Some(v) => write!(f, "{} {v}", self.kind),
            None => f.write_str(&self.kind),
        }
    }
}
